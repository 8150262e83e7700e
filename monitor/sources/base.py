"""The one interface every power source implements, and the records it returns."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

#: ``attributed``: a share of a host device's energy given to named processes (``monitor.sources.attributed``).
DeviceKind = Literal["gpu", "cpu", "host", "attributed"]

#: Names of the clock-event ("throttle") reasons NVML reports, in bit order. Exported as a fixed set of
#: labels so the metric's cardinality does not depend on what is active.
THROTTLE_REASONS = (
    "gpu_idle",
    "applications_clocks",
    "sw_power_cap",
    "hw_slowdown",
    "sync_boost",
    "sw_thermal",
    "hw_thermal",
    "hw_power_brake",
    "display_clock",
)


@dataclass(frozen=True, slots=True)
class Device:
    """One thing whose energy is measured: a GPU, a RAPL zone, the whole host (estimated), or the share of
    the host's energy attributed to named processes."""

    key: str  # unique across sources: "gpu0", "package-0", "dram-0", "host", "attributed"
    kind: DeviceKind
    source: str  # "nvml" | "rapl" | "estimate": for an attributed device, the source of the host energy shared
    index: int  # NVML index for GPUs (nvidia-smi's numbering), socket for RAPL zones, 0 for the host
    name: str
    uuid: str = ""
    method: str = ""  # how an attributed device's share is taken ("cpu_time_share"); "" for a device read directly
    # what simulates the device, as its library says (the tests' fake NVML, the CI stack's GPU): its energy is
    # no measurement; "" for hardware
    simulated: str = ""


class EnergyReading(NamedTuple):
    """A fast read: the cumulative energy counter and, where the source has one, instantaneous power.

    A NamedTuple rather than a dataclass: one is built per device every 10 ms.

    ``energy_j`` is monotone except when the underlying counter is reset (driver reload); sources
    unwrap wraparound themselves. ``power_w`` is NaN when the source has no instantaneous power.
    """

    energy_j: float
    power_w: float = math.nan


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A slow read (about once a second): everything besides energy. ``None`` where not supported."""

    power_average_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_hz: float | None = None
    memory_clock_hz: float | None = None
    temperature_c: float | None = None
    utilization_ratio: float | None = None
    memory_utilization_ratio: float | None = None
    memory_used_bytes: float | None = None
    throttle_reasons: frozenset[str] | None = None
    # an attributed device: its processes' share of the host's busy CPU time over the last status interval,
    # how many processes it follows, and the host idle power left out of the share
    share_ratio: float | None = None
    processes: int | None = None
    host_idle_power_w: float | None = None


class PowerSource(Protocol):
    """A power source. Constructing one does no I/O; ``open`` does.

    ``read`` and ``status`` raise ``DeviceReadError`` for a failed device; the sampler marks the
    device stale and keeps calling ``read`` (at a slower pace) until it answers again, so a source
    re-acquires lost handles inside ``read``.
    """

    name: str
    #: True when reading the counter is costly (NVML: ~3.8 ms of CPU on an H100): the sampler then
    #: reads it only around its predicted updates and reads ``read_power`` on the other polls.
    costly_counter: bool
    #: True when the counter is measured independently of the instantaneous power (NVML, RAPL),
    #: False when it is integrated from the same power (estimate): only then is their ratio a check.
    independent_counter: bool

    def open(self) -> list[Device]: ...

    def read(self, device: Device) -> EnergyReading: ...

    def read_power(self, device: Device) -> float: ...

    def status(self, device: Device) -> DeviceStatus: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...
