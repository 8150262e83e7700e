"""The one root of every error a user can cause or fix."""


class JoulebenchError(Exception):
    """A user-facing error: one line that says what went wrong and what to do.

    The CLI prints it without a traceback and exits 2. Any other exception is a bug.
    """
