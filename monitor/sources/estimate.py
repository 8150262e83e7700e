"""Host CPU power estimated from utilization, where no energy counter exists.

Model (Cloud Carbon Footprint's compute model, coefficients averaged over SPECpower results):

    P = n_cpus × (W_idle + u × (W_max − W_idle))

with ``u`` the host's CPU utilization from ``/proc/stat`` over the last update period, ``n_cpus`` the
logical CPUs listed there, W_idle = 0.74 W and W_max = 3.5 W per logical CPU by default. It is a model,
not a measurement: every metric, API answer and report labels it ``estimate``. Its energy counter is
the model power integrated over time, updated every ``update_period_s`` (100 ms, like NVML), so the
rest of the monitor treats it like any counter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from monitor.errors import DeviceReadError, SourceUnavailable
from monitor.sources.base import Device, DeviceStatus, EnergyReading

IDLE_W_PER_CPU = 0.74
MAX_W_PER_CPU = 3.5


def read_cpu_times(proc_root: Path) -> tuple[int, float, float]:
    """(logical CPUs, busy jiffies, total jiffies) from ``/proc/stat``."""
    text = (proc_root / "stat").read_text()
    n_cpus = 0
    busy = total = 0.0
    for line in text.splitlines():
        if line.startswith("cpu ") or line.startswith("cpu\t"):
            fields = [float(x) for x in line.split()[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
            total = sum(fields[:8])
            busy = total - fields[3] - (fields[4] if len(fields) > 4 else 0.0)
        elif line.startswith("cpu"):
            n_cpus += 1
    if total <= 0:
        raise ValueError("no aggregate 'cpu' line")
    return max(n_cpus, 1), busy, total


class EstimateSource:
    """One device, ``host``: the host CPU's modelled power and its integrated energy."""

    name = "estimate"
    costly_counter = False
    independent_counter = False

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        idle_w_per_cpu: float = IDLE_W_PER_CPU,
        max_w_per_cpu: float = MAX_W_PER_CPU,
        update_period_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= idle_w_per_cpu <= max_w_per_cpu:
            raise SourceUnavailable(
                f"estimate model needs 0 ≤ idle ≤ max watts per CPU, got {idle_w_per_cpu}, {max_w_per_cpu}"
            )
        self._proc = Path(proc_root)
        self._idle_w = idle_w_per_cpu
        self._max_w = max_w_per_cpu
        self._period_s = update_period_s
        self._clock = clock
        self._n_cpus = 0
        self._last: tuple[float, float, float] | None = None  # (t, busy, total)
        self._energy_j = 0.0
        self._power_w = 0.0
        self._utilization = 0.0
        self._device = Device(key="host", kind="host", source="estimate", index=0, name="host CPU (estimated)")

    def open(self) -> list[Device]:
        try:
            n, busy, total = read_cpu_times(self._proc)
        except (OSError, ValueError) as err:
            raise SourceUnavailable(f"cannot estimate CPU power: {self._proc / 'stat'} unreadable ({err})") from err
        self._n_cpus = n
        self._last = (self._clock(), busy, total)
        self._power_w = n * self._idle_w
        return [self._device]

    @property
    def idle_power_w(self) -> float:
        """The model's power with every CPU idle (after ``open``): what attribution leaves out of the share."""
        return self._n_cpus * self._idle_w

    def describe(self) -> str:
        return (
            f"estimate: host CPU modelled from utilization ({self._n_cpus} CPUs × "
            f"{self._idle_w}–{self._max_w} W), not measured"
        )

    def read(self, device: Device) -> EnergyReading:
        assert self._last is not None, "open() first"
        now = self._clock()
        t_last, busy_last, total_last = self._last
        if now - t_last >= self._period_s * (1 - 1e-6):
            try:
                _, busy, total = read_cpu_times(self._proc)
            except (OSError, ValueError) as err:
                raise DeviceReadError("error", f"reading {self._proc / 'stat'} failed: {err}") from err
            d_total = total - total_last
            if d_total > 0:
                self._utilization = min(max((busy - busy_last) / d_total, 0.0), 1.0)
            # The power of the period just ended is integrated at its end: a counter step like NVML's.
            self._power_w = self._n_cpus * (self._idle_w + self._utilization * (self._max_w - self._idle_w))
            self._energy_j += self._power_w * (now - t_last)
            self._last = (now, busy, total)
        return EnergyReading(energy_j=self._energy_j, power_w=self._power_w)

    def read_power(self, device: Device) -> float:
        return self._power_w

    def status(self, device: Device) -> DeviceStatus:
        return DeviceStatus(utilization_ratio=self._utilization)

    def close(self) -> None:
        self._last = None
