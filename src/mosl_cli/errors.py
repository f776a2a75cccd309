"""The one exception type the CLI turns into a one-line message and exit code 1."""


class MoslError(Exception):
    """A user error: bad input, a missing file, an option out of range.

    The message is one line that names the file or option and says what to do.
    """
