"""The root of the project's own errors. Standard library only (``ptycho`` imports it too)."""


class CosmicError(Exception):
    """An error this project raises on purpose, with a message meant for an operator.

    The command line reports these as one line and exit status 2; anything else is a bug and
    keeps its traceback.
    """
