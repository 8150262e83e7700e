"""Errors of the server side (vLLM launch, model kit, offline runs)."""

from joulebench.errors import JoulebenchError


class ServerError(JoulebenchError):
    """Base of the server side's errors."""
