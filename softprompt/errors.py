"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class SoftpromptError(Exception):
    """A problem with the user's input (file, row, field, folder) that they can fix."""
