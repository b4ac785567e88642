"""Errors that the user can cause, reported as one clear line by the CLI."""


class UserError(Exception):
    """An error the user caused (bad spec, missing file, bad value); the CLI prints its message as one line
    and exits with code 2."""
