"""The server's share of the host's CPU energy: its CPU time over the host's busy CPU time (Kepler's method).

At every update (with the host counter's steps, about every ``update_period_s``, 100 ms)::

    share      = min(1, (ΔCPU_server + carry) / ΔCPU_host_busy)
    E_server  += share × max(ΔE_host − P_idle × Δt, 0)

ΔE_host is the host source's energy since the last update (RAPL's package and DRAM zones summed, or the
utilization model), ΔCPU_host_busy the host's busy CPU seconds from ``/proc/stat`` (the estimate's own
definition of busy), ΔCPU_server the named processes' CPU seconds (``monitor.processes``). CPU times
are counted in clock ticks; what one update cannot take (the processes' ticks above the host's, from
rounding) is carried to the next, so no CPU second is lost to it.

Only the host's power above idle is shared: idle power is the machine's, not any process's. So load
beside the server cannot move its figure through the idle power, and the server's loaded-idle draw is
its own (the CPU its idle loop uses). On the utilization model this is exact: the server gets
(W_max − W_idle) per CPU second it ran, whatever else runs. On RAPL it holds as far as power is linear
in busy CPU time (frequency, SMT and uncore make it less so). The idle power is the model's own
(``n_cpus × W_idle``), a given figure, or for RAPL the lowest 1 s mean power seen since the monitor
started (Kepler's earlier choice): too high, and the share too low, when the host was never idle under
the monitor; give ``--attribute-idle-w`` then.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from monitor.errors import DeviceReadError, MonitorError
from monitor.processes import CLOCK_TICKS_PER_S, CpuTime
from monitor.sources.base import Device, DeviceStatus, EnergyReading, PowerSource
from monitor.sources.estimate import EstimateSource, read_cpu_times

METHOD = "cpu_time_share"
IDLE_BLOCK_S = 1.0
#: The most CPU time carried from one update to the next: rounding needs a few ticks, not more.
MAX_CARRY_S = 1.0


def share_energy(
    host_j: float, dt_s: float, idle_w: float, server_s: float, busy_s: float, carry_s: float
) -> tuple[float, float, float]:
    """One update: (energy attributed, CPU seconds of the server taken, CPU seconds carried to the next)."""
    want = max(server_s, 0.0) + carry_s
    taken = min(want, busy_s) if busy_s > 0 else 0.0
    share = taken / busy_s if busy_s > 0 else 0.0
    active_j = max(host_j - idle_w * dt_s, 0.0)
    return share * active_j, taken, min(want - taken, MAX_CARRY_S)


class HostTap:
    """The host source, unchanged, keeping its newest energy for the share (polled before the share is)."""

    def __init__(self, host: PowerSource) -> None:
        self.host = host
        self.name = host.name
        self.costly_counter = host.costly_counter
        self.independent_counter = host.independent_counter
        self._energy_j: dict[str, float] = {}
        self._devices = 0

    def energy_j(self) -> float | None:
        """The host's energy over its devices as last read; None until every device has been read."""
        if len(self._energy_j) < self._devices:
            return None
        return sum(self._energy_j.values())

    def open(self) -> list[Device]:
        devices = self.host.open()
        self._devices = len(devices)
        return devices

    def read(self, device: Device) -> EnergyReading:
        reading = self.host.read(device)
        self._energy_j[device.key] = reading.energy_j
        return reading

    def read_power(self, device: Device) -> float:
        return self.host.read_power(device)

    def status(self, device: Device) -> DeviceStatus:
        return self.host.status(device)

    def describe(self) -> str:
        return self.host.describe()

    def close(self) -> None:
        self.host.close()


class AttributedSource:
    """One device, ``attributed``: the share of the tapped host's energy that the processes' CPU time earns."""

    name = "attributed"
    costly_counter = False
    independent_counter = False  # its power is its counter's own steps: no check

    def __init__(
        self,
        tap: HostTap,
        cpu: CpuTime,
        idle_w: float | None = None,
        proc_root: Path = Path("/proc"),
        update_period_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tap = tap
        self._cpu = cpu
        self._given_idle_w = idle_w
        self._proc = Path(proc_root)
        self._period_s = update_period_s
        self._clock = clock
        self._idle_w: float | None = idle_w
        self._block = (0.0, 0.0)  # host joules and seconds towards the next idle block (idle learnt)
        self._learn_idle = False
        self._opened = False
        self._last: tuple[float, float, float, float] | None = None  # t, host J, busy s, server s
        self._carry_s = 0.0
        self._energy_j = 0.0
        self._power_w = 0.0
        self._interval = (0.0, 0.0)  # server s taken and busy s since the last status
        self._share: float | None = None  # the newest share_ratio (an interval with no update keeps it)
        self._device = Device(
            key="attributed", kind="attributed", source=tap.name, index=0, name=cpu.describe(), method=METHOD
        )

    def open(self) -> list[Device]:
        self._cpu.open()
        if self._idle_w is None and isinstance(self._tap.host, EstimateSource):
            self._idle_w = self._tap.host.idle_power_w
        self._learn_idle = self._idle_w is None
        self._opened = True
        return [self._device]

    def describe(self) -> str:
        if self._given_idle_w is not None:
            idle = f"{self._given_idle_w:g} W given"
        elif isinstance(self._tap.host, EstimateSource):
            idle = f"the model's {self._idle_w:g} W"
        else:
            idle = "the lowest 1 s power seen"
        return (
            f"attributed: {self._cpu.describe()} gets its CPU time's share of the host's busy CPU time × "
            f"{self._tap.name} power above idle ({idle}), beside the host total"
        )

    def _busy_s(self) -> float:
        try:
            return read_cpu_times(self._proc)[1] / CLOCK_TICKS_PER_S
        except (OSError, ValueError) as err:
            raise DeviceReadError("error", f"reading {self._proc / 'stat'} failed: {err}") from err

    def read(self, device: Device) -> EnergyReading:
        assert self._opened, "open() first"
        now = self._clock()
        host = self._tap.energy_j()
        if host is None:  # the host not read yet: nothing to share
            return EnergyReading(self._energy_j, self._power_w)
        if self._last is None:  # the first host reading: everything counts from here
            self._last = (now, host, self._busy_s(), self._server_s())
            return EnergyReading(self._energy_j, self._power_w)
        t0, host0, busy0, server0 = self._last
        waited = now - t0
        # In step with the host's counter steps (the estimate's, every update period), at most one update per
        # half period (RAPL's counter moves at every poll), and never stalled by a counter that holds.
        if not ((host != host0 and waited >= 0.5 * self._period_s) or waited >= 2 * self._period_s):
            return EnergyReading(self._energy_j, self._power_w)
        busy, server = self._busy_s(), self._server_s()
        d_host = max(host - host0, 0.0)  # a host counter reset (driver reload) gives this update nothing
        d_busy = max(busy - busy0, 0.0)
        idle_w = self._idle_for(d_host, waited)
        energy, taken, self._carry_s = share_energy(d_host, waited, idle_w, server - server0, d_busy, self._carry_s)
        self._energy_j += energy
        self._power_w = energy / waited
        self._interval = (self._interval[0] + taken, self._interval[1] + d_busy)
        self._last = (now, host, busy, server)
        return EnergyReading(self._energy_j, self._power_w)

    def _server_s(self) -> float:
        try:
            return self._cpu.cpu_s()
        except (OSError, ValueError) as err:
            raise DeviceReadError("error", f"reading the CPU time of {self._cpu.describe()} failed: {err}") from err

    def _idle_for(self, d_host_j: float, dt_s: float) -> float:
        """The idle power for this update: given, modelled, or the lowest 1 s mean power so far (learnt)."""
        if not self._learn_idle:
            return self._idle_w or 0.0
        e, t = self._block[0] + d_host_j, self._block[1] + dt_s
        self._block = (e, t)
        if t >= IDLE_BLOCK_S:
            self._idle_w = e / t if self._idle_w is None else min(self._idle_w, e / t)
            self._block = (0.0, 0.0)
        # before the first block, all of it counts as idle: nothing is shared yet
        return self._idle_w if self._idle_w is not None else d_host_j / dt_s

    def read_power(self, device: Device) -> float:
        return self._power_w

    def status(self, device: Device) -> DeviceStatus:
        taken, busy = self._interval
        if busy > 0:  # an update since the last status: a new share; else the last one holds (no flicker)
            self._interval = (0.0, 0.0)
            self._share = taken / busy
        return DeviceStatus(
            share_ratio=self._share,
            processes=self._cpu.processes(),
            host_idle_power_w=self._idle_w,
        )

    def close(self) -> None:
        self._opened = False
        self._last = None


OpenedSource = tuple[PowerSource, list[Device]]


def attribute(opened: list[OpenedSource], cpu: CpuTime, idle_w: float | None = None) -> tuple[list[OpenedSource], str]:
    """The opened sources with the share of the host CPU's energy attributed to ``cpu``'s processes added.

    The host is RAPL where it is open, else the estimate; NVML is left as it is (it measures each GPU
    already). Returns the sources (the host tapped, the share polled after it) and a line saying how. On
    an error (no CPU source, processes that cannot be named) the opened sources are closed.
    """
    try:
        host = next((s for name in ("rapl", "estimate") for s, _ in opened if s.name == name), None)
        if host is None:
            names = ", ".join(s.name for s, _ in opened) or "none"
            raise MonitorError(
                f"attributing energy to processes needs a CPU power source (rapl or estimate); opened: {names}"
            )
        tap = HostTap(host)
        share = AttributedSource(tap, cpu, idle_w)
        out: list[OpenedSource] = [(tap, devices) if s is host else (s, devices) for s, devices in opened]
        out.append((share, share.open()))
    except MonitorError:
        for s, _ in opened:
            s.close()
        raise
    return out, share.describe()
