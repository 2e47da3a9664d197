"""Errors that mean "bad input": the CLI prints their message alone and exits with status 2."""


class InputError(ValueError):
    """Configuration, arguments or files that cannot be used as given."""


class TrainingDiverged(RuntimeError):
    """A training loss that is not finite: the run stops before the step touches the weights (the CLI prints the
    message alone and exits with status 1)."""
