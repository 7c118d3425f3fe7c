"""The one error type a user sees: a single line naming what is wrong and where."""


class MemsimError(Exception):
    """A problem in the user's input or environment; the CLI prints it as one line, exit 2."""
