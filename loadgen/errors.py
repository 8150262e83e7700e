"""Errors of the load generator."""

from joulebench.errors import JoulebenchError


class LoadgenError(JoulebenchError):
    """Base of the load generator's errors."""


class TraceError(LoadgenError):
    """A trace that cannot be read: the message names the file and line."""
