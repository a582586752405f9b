"""Error types every layer may raise; a leaf module, so that no package needs to import the CLI."""


class CLIError(Exception):
    """An error with a one-line message for the user; the CLI prints it and exits non-zero."""
