"""The prediction's user-facing error."""

from joulebench.errors import JoulebenchError


class PredictError(JoulebenchError):
    """Bad input to ``joulebench predict`` or ``profile``: one line naming the file or option."""
