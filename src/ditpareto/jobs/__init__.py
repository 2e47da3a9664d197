"""One pure function per pipeline job (the rules call them through ``python -m ditpareto <command>``)."""
