"""Errors of the energy monitor; vendor errors are mapped to these at the source boundary."""

from joulebench.errors import JoulebenchError


class MonitorError(JoulebenchError):
    """Base of the monitor's errors."""


class SourceUnavailable(MonitorError):
    """A power source cannot be opened on this host (no driver, no files, no permission)."""


class DeviceReadError(MonitorError):
    """One read of one device failed. The sampler marks the device stale and retries it.

    ``reason`` is one of ``lost``, ``timeout``, ``not_supported``, ``uninitialized``, ``error``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class WindowError(MonitorError):
    """An energy window that cannot be answered (empty, inverted, or outside the recorded data)."""


class SampleLogError(MonitorError):
    """The ``--sample-log`` could not be written (a full disk): the sampler stops, and the monitor exits."""
