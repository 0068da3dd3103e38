"""The ``cryospin`` command line: one module per command, each docstring is its ``--help``."""


def command_help(doc: str | None) -> str:
    r"""Return a command module's docstring as click help text.

    Raw docstrings (``r'''...'''``, used where examples contain backslashes) spell click's
    no-rewrap marker as the two characters ``\b``; click expects the backspace character alone on
    a line, so this turns the former into the latter and keeps example lines unwrapped.
    """
    return (doc or "").replace("\\b\n", "\b\n")
