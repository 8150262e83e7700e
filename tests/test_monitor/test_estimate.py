"""The estimate source on a /proc/stat written under tmp_path, with an injected clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.errors import SourceUnavailable
from monitor.sources import EstimateSource


class Proc:
    """A /proc/stat with 4 CPUs whose busy and idle jiffies the test advances."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.busy = 1000
        self.idle = 9000
        self.write()

    def write(self) -> None:
        # user nice system idle iowait irq softirq steal guest guest_nice
        agg = f"cpu  {self.busy} 0 0 {self.idle} 0 0 0 0 0 0"
        cpus = "\n".join(f"cpu{i} 1 0 0 1 0 0 0 0 0 0" for i in range(4))
        (self.root / "stat").write_text(f"{agg}\n{cpus}\nintr 0\nctxt 0\n")

    def run(self, busy: int, idle: int) -> None:
        self.busy += busy
        self.idle += idle
        self.write()


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_power_model_and_integrated_energy(tmp_path: Path):
    proc, clock = Proc(tmp_path), Clock()
    src = EstimateSource(proc_root=tmp_path, idle_w_per_cpu=1.0, max_w_per_cpu=5.0, clock=clock)
    (dev,) = src.open()
    assert dev.source == "estimate" and dev.key == "host"
    assert "not measured" in src.describe()
    assert src.read(dev).energy_j == 0.0

    clock.t += 0.05  # inside the update period: the counter holds, like NVML's between updates
    proc.run(busy=10, idle=10)
    assert src.read(dev).energy_j == 0.0

    clock.t += 0.05
    r = src.read(dev)  # 50 % busy over 0.1 s: 4 × (1 + 0.5 × 4) W = 12 W
    assert r.power_w == pytest.approx(12.0)
    assert r.energy_j == pytest.approx(1.2)
    assert src.status(dev).utilization_ratio == pytest.approx(0.5)

    clock.t += 1.0
    proc.run(busy=400, idle=0)
    r = src.read(dev)  # fully busy for 1 s: 20 W
    assert r.power_w == pytest.approx(20.0)
    assert r.energy_j == pytest.approx(21.2)


def test_bad_model_and_missing_proc(tmp_path: Path):
    with pytest.raises(SourceUnavailable, match="idle ≤ max"):
        EstimateSource(proc_root=tmp_path, idle_w_per_cpu=3.0, max_w_per_cpu=1.0)
    with pytest.raises(SourceUnavailable, match="unreadable"):
        EstimateSource(proc_root=tmp_path).open()


def test_reads_the_real_proc_stat():
    src = EstimateSource()
    (dev,) = src.open()
    r = src.read(dev)
    assert r.energy_j >= 0.0 and r.power_w > 0.0
