"""The share of the host's CPU energy attributed to named processes: the arithmetic, over the estimate and RAPL
on files written under tmp_path, through the sampler and meter on this machine's /proc."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fake_proc import Clock, FakeProc

from monitor.errors import MonitorError, SourceUnavailable
from monitor.meter import LocalMeter
from monitor.processes import CLOCK_TICKS_PER_S, PidRoots, ProcessTree
from monitor.sources import EstimateSource, RaplSource
from monitor.sources.attributed import MAX_CARRY_S, AttributedSource, HostTap, attribute, share_energy

TICK = 1 / CLOCK_TICKS_PER_S


def test_share_energy_takes_the_share_of_the_power_above_idle():
    energy, taken, carry = share_energy(host_j=3.0, dt_s=0.1, idle_w=10.0, server_s=0.05, busy_s=0.2, carry_s=0.0)
    assert energy == pytest.approx(0.25 * (3.0 - 1.0)) and taken == 0.05 and carry == 0.0


def test_share_energy_carries_what_rounding_put_above_the_host():
    energy, taken, carry = share_energy(host_j=2.0, dt_s=0.1, idle_w=0.0, server_s=0.3, busy_s=0.2, carry_s=0.0)
    assert energy == pytest.approx(2.0) and taken == 0.2 and carry == pytest.approx(0.1)
    energy, taken, carry = share_energy(host_j=2.0, dt_s=0.1, idle_w=0.0, server_s=0.0, busy_s=0.2, carry_s=carry)
    assert energy == pytest.approx(1.0) and carry == 0.0
    assert share_energy(1.0, 0.1, 0.0, 50.0, 0.2, 0.0)[2] == MAX_CARRY_S  # bounded
    assert share_energy(1.0, 0.1, 0.0, 0.1, 0.0, 0.0) == (0.0, 0.0, pytest.approx(0.1))  # no busy time: kept
    assert share_energy(0.5, 0.1, 10.0, 0.1, 0.1, 0.0)[0] == 0.0  # below idle: nothing to share


class Host:
    """A host of 2 CPUs on a fake /proc: a server tree (pid 100, engine core 101) and a burner (pid 200)."""

    def __init__(self, root: Path, clock: Clock) -> None:
        self.proc = FakeProc(root, n_cpus=2)
        self.clock = clock
        self.proc.spawn(1, 0)
        self.proc.spawn(100, 1)
        self.proc.spawn(101, 100)
        self.proc.spawn(200, 1)

    def step(self, server_ticks: int, burner_ticks: int, other_ticks: int = 0) -> None:
        """0.1 s: 20 jiffies over the 2 CPUs."""
        self.proc.run(101, server_ticks)
        self.proc.run(200, burner_ticks)
        busy = server_ticks + burner_ticks + other_ticks
        self.proc.host(busy=busy, idle=20 - busy)
        self.clock.t += 0.1


def poll(sources) -> None:
    """One sampler poll: every device in source order, the share last."""
    for s, devices in sources:
        for d in devices:
            s.read(d)


def test_over_the_estimate_the_share_is_the_model_power_of_the_server_cpu_time_whatever_else_runs(tmp_path):
    clock = Clock(100.0)
    host = Host(tmp_path, clock)
    est = EstimateSource(proc_root=tmp_path, idle_w_per_cpu=1.0, max_w_per_cpu=5.0, clock=clock)
    tree = ProcessTree(PidRoots(100, tmp_path), tmp_path, clock=clock)
    tap = HostTap(est)
    share = AttributedSource(tap, tree, proc_root=tmp_path, clock=clock)
    sources = [(tap, tap.open()), (share, share.open())]
    (host_dev,), (att,) = sources[0][1], sources[1][1]
    assert (att.key, att.kind, att.source, att.method) == ("attributed", "attributed", "estimate", "cpu_time_share")
    assert "the model's 2 W" in share.describe()
    poll(sources)

    def run(steps: int, server: int, burner: int) -> tuple[float, float]:
        e_host, e_att = est.read(host_dev).energy_j, share.read(att).energy_j
        for _ in range(steps):
            host.step(server, burner)
            poll(sources)
        return est.read(host_dev).energy_j - e_host, share.read(att).energy_j - e_att

    alone = run(50, server=6, burner=0)  # 5 s, the server at 0.6 CPU
    assert share.status(att).share_ratio == pytest.approx(1.0)
    beside = run(50, server=6, burner=10)  # the same, beside a burner of a whole CPU
    server_cpu_s = 50 * 6 * TICK
    assert alone[1] == pytest.approx(4.0 * server_cpu_s, rel=1e-6)  # (5 − 1) W per CPU second
    assert beside[1] == pytest.approx(alone[1], rel=1e-6)
    assert beside[0] - alone[0] == pytest.approx(4.0 * 50 * 10 * TICK, rel=1e-6)  # the host total has the burner
    assert share.status(att).share_ratio == pytest.approx(6 / 16)
    assert share.status(att).processes == 2 and share.status(att).host_idle_power_w == 2.0

    idle = run(20, server=0, burner=10)  # the server idle beside the burner: nothing
    assert idle[1] == 0.0 and idle[0] > 0


def write_rapl(root: Path, energy_uj: int) -> None:
    d = root / "intel-rapl:0"
    d.mkdir(parents=True, exist_ok=True)
    (d / "name").write_text("package-0\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text("262143328850\n")


@pytest.mark.parametrize("given_idle_w", [None, 10.0])
def test_over_rapl_the_idle_power_is_learnt_or_given(tmp_path, given_idle_w):
    """RAPL on a host whose power is linear in busy CPUs: 10 W idle, 5 W per busy CPU."""
    proc_root, powercap = tmp_path / "proc", tmp_path / "powercap"
    proc_root.mkdir()
    clock = Clock(100.0)
    host = Host(proc_root, clock)
    energy_uj = 5_000_000
    write_rapl(powercap, energy_uj)
    rapl = RaplSource(root=powercap)
    tap = HostTap(rapl)
    share = AttributedSource(tap, ProcessTree(PidRoots(100, proc_root), proc_root, clock=clock), given_idle_w,
                             proc_root=proc_root, clock=clock)  # fmt: skip
    sources = [(tap, tap.open()), (share, share.open())]
    (att,) = sources[1][1]
    assert ("lowest 1 s power" in share.describe()) == (given_idle_w is None)

    def run(steps: int, server: int, burner: int) -> float:
        nonlocal energy_uj
        e0 = share.read(att).energy_j
        for _ in range(steps):
            busy_cpus = (server + burner) / 10
            energy_uj += round((10.0 + 5.0 * busy_cpus) * 0.1 * 1e6)
            write_rapl(powercap, energy_uj)
            host.step(server, burner)
            poll(sources)
        return share.read(att).energy_j - e0

    poll(sources)
    run(20, server=0, burner=0)  # 2 s idle: the lowest 1 s power is the idle power
    assert share.status(att).host_idle_power_w == pytest.approx(10.0)
    alone, beside = run(50, server=6, burner=0), run(50, server=6, burner=10)
    assert alone == pytest.approx(5.0 * 50 * 6 * TICK, rel=1e-3)
    assert beside == pytest.approx(alone, rel=1e-3)


def test_attribution_needs_a_cpu_source_and_prefers_rapl(tmp_path):
    class Gpu:
        name = "nvml"

        def __init__(self) -> None:
            self.closed = False

        def close(self) -> None:
            self.closed = True

    gpu = Gpu()
    tree = ProcessTree(PidRoots(os.getpid()))
    with pytest.raises(MonitorError, match=r"needs a CPU power source .*opened: nvml"):
        attribute([(gpu, [])], tree)  # type: ignore[list-item]
    assert gpu.closed

    write_rapl(tmp_path, 1)
    rapl, est = RaplSource(root=tmp_path), EstimateSource()
    opened, how = attribute([(rapl, rapl.open()), (est, est.open())], tree, idle_w=12.5)
    assert isinstance(opened[0][0], HostTap) and opened[0][0].host is rapl and opened[1][0] is est
    assert "rapl power above idle (12.5 W given)" in how and opened[-1][1][0].source == "rapl"

    with pytest.raises(SourceUnavailable, match="no such process"):
        est = EstimateSource()
        attribute([(est, est.open())], ProcessTree(PidRoots(2**22 + 1)))


def test_the_meter_reads_the_share_beside_the_host_total_on_this_machine():
    """This process burns CPU under an in-process sampler on the real /proc: its share is its CPU time's."""
    meter = LocalMeter("estimate", settle_s=0.3, attribute_to=ProcessTree(PidRoots(os.getpid())))
    try:
        time.sleep(0.3)
        t0, cpu0 = meter.now(), time.process_time()
        while time.process_time() - cpu0 < 1.0:
            pass
        t1, cpu = meter.now(), time.process_time() - cpu0
        reading = meter.energy(t0, t1)
    finally:
        meter.close()
    assert reading.kind == "attributed" and reading.attributed and reading.method == "cpu_time_share"
    assert reading.estimated and "attributed: the process tree of pid" in meter.description
    by_kind = reading.energy_by_kind_j()
    assert by_kind["attributed"] == reading.energy_j < by_kind["host"]
    # (3.5 − 0.74) W per CPU second, give or take the window's edges and the update period
    assert reading.energy_j == pytest.approx(2.76 * cpu, rel=0.25)
