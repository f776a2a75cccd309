"""The exception types the CLI turns into one line on stderr: exit code 1, or 2 for a usage error."""


class MoslError(Exception):
    """A user error: bad input, a missing file, an output that cannot be written.

    The message is one line that names the file or option and says what to do.
    """


class UsageError(MoslError):
    """An option value out of range or unknown (exit code 2, like the parser's own usage errors)."""
