"""Errors that mean "bad input": the CLI prints their message alone and exits with status 2."""


class InputError(ValueError):
    """Configuration, arguments or files that cannot be used as given."""
