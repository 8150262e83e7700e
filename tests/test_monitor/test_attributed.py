"""The share of the host's CPU energy attributed to named processes: the arithmetic, over the estimate and RAPL
on files written under tmp_path, through the sampler and meter on this machine's /proc."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from fake_proc import Clock, FakeProc
from servers import running

from joulebench.processes import free_port
from loadgen.records import read_records
from monitor.errors import MonitorError, SourceUnavailable
from monitor.meter import LocalMeter, MonitorClient
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


# -- the real thing: vLLM's CPU build serving a replay, with and without a CPU burner beside it ------------------

BURNER = "while True: pass"
MODEL_W_PER_CPU = 3.5 - 0.74  # the estimate's defaults: what a CPU second costs above idle
#: How far a burner beside the server may move its attributed J/token, against the runs without it before and
#: after: at most 30 % above the higher (the burner's energy charged to the server, as the host total charges it,
#: would double it), at most 50 % below the lower. vLLM's own CPU time per token moves that much here: its engine
#: busy-polls (sched_yield) for a second after every step, and the poll yields to whatever else runs. Measured on
#: this 2-core VM, other engineers' vLLM tests keeping the host at the model's maximum, in five runs: beside was
#: 4.5 % and 30 % below the lower of the two runs without, twice between them, once 9 % above the higher; the
#: runs without the burner differed from each other by −0.4 %, +56 %, +33 %, −35 %, −2.7 %.
BURNER_UP, BURNER_DOWN = 0.3, 0.5


def tree_cpu_s(pid: int) -> float:
    """The CPU seconds of a process and its children, from psutil: the test's own count."""
    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def replay(url: str, trace: Path, out: Path, seed: int) -> tuple[float, float, int]:
    """A replay of the same 30 requests (fresh prompts): its first send, last token, output tokens."""
    records = out / f"requests-{seed}.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "joulebench", "replay", "--target", url, "--trace", str(trace), "--process",
         "constant", "--rate", "2", "--duration", "15", "--prompt-seed", str(seed), "--records", str(records)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    rows = read_records(records)
    assert len(rows) == 30 and {r["status"] for r in rows} == {"ok"}
    return (
        min(r["sent_s"] for r in rows),
        max(r["last_token_s"] for r in rows),
        sum(r["usage_output_tokens"] for r in rows),
    )


def measure(url: str, trace: Path, out: Path, seed: int, followed: list[tuple[int, MonitorClient]]) -> dict:
    """One replay: the server's attributed energy and the host total over it, then 4 s of loaded idle; for each
    followed process tree (the server first), its attributed energy over the replay's process against psutil's
    count of its CPU seconds at the model's price."""
    ta, cpu_a = time.time(), [tree_cpu_s(pid) for pid, _ in followed]
    t0, t1, tokens = replay(url, trace, out, seed)
    tb, cpu_b = time.time(), [tree_cpu_s(pid) for pid, _ in followed]
    meter = followed[0][1]
    reading = meter.energy(t0, t1)
    assert reading.kind == "attributed" and reading.method == "cpu_time_share" and reading.estimated
    by_kind = reading.energy_by_kind_j()
    over_cpu = [
        m.energy(ta, tb).energy_j / (MODEL_W_PER_CPU * (b - a))
        for (_, m), a, b in zip(followed, cpu_a, cpu_b, strict=True)
    ]
    idle_t0 = meter.now()
    time.sleep(4)
    idle = meter.energy(idle_t0, idle_t0 + 4).energy_by_kind_j()
    run = {
        "seconds": t1 - t0,
        "output_tokens": tokens,
        "attributed_j": by_kind["attributed"],
        "host_j": by_kind["host"],
        "attributed_j_per_token": by_kind["attributed"] / tokens,
        "host_j_per_token": by_kind["host"] / tokens,
        "host_w": by_kind["host"] / (t1 - t0),
        "attributed_over_own_cpu": over_cpu[0],
        "loaded_idle_attributed_w": idle["attributed"] / 4,
        "loaded_idle_host_w": idle["host"] / 4,
    }
    if len(followed) > 1:  # the burner
        run["burner_over_own_cpu"] = over_cpu[1]
        run["burner_cpus"] = (cpu_b[1] - cpu_a[1]) / (tb - ta)
        run["burner_attributed_j"] = followed[1][1].energy(t0, t1).energy_j
    return run


def alone_beside_again(url: str, trace: Path, out: Path, vllm_pid: int, meter: MonitorClient) -> list[dict]:
    """The replay alone, beside a burner (followed by a monitor of its own), and alone again."""
    replay(url, trace, out, seed=100)  # a warm-up: the first requests of a fresh engine run slow
    alone = measure(url, trace, out, 1, [(vllm_pid, meter)])
    burner = subprocess.Popen([sys.executable, "-c", BURNER])
    try:
        with running("monitor", "--source", "estimate", "--quiet", "--attribute-pid", str(burner.pid)) as (bmon, burl):
            beside = measure(url, trace, out, 2, [(vllm_pid, meter), (burner.pid, MonitorClient(burl))])
            bmon.terminate()
    finally:
        burner.kill()
        burner.wait()
    return [alone, beside, measure(url, trace, out, 3, [(vllm_pid, meter)])]


@pytest.mark.integration
def test_a_cpu_burner_beside_the_server_moves_the_host_total_not_the_servers_share(tmp_path):
    """vLLM's CPU build (``joulebench serve --pidfile``) serves the same replay alone, beside a process burning a
    CPU, and alone again; the monitor (started first, as ``joulebench compare`` starts it) follows the pidfile.
    A second monitor follows the burner, to show that its share is its own CPU time's, in the host total."""
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i},{64 + 8 * i},16\n" for i in range(30)))
    pidfile = tmp_path / "vllm.pid"
    serve = [sys.executable, "-m", "joulebench", "serve", "--model", "tiny", "--model-cache", str(tmp_path / "models"),
             "--max-model-len", "2048", "--port", str(free_port()), "--log-dir", str(tmp_path / "runs"),
             "--pidfile", str(pidfile)]  # fmt: skip
    with (
        running("monitor", "--source", "estimate", "--quiet", "--attribute-pidfile", str(pidfile)) as (mon, murl),
        subprocess.Popen(serve, stdout=subprocess.PIPE, text=True, start_new_session=True) as vllm,
    ):
        try:
            assert vllm.stdout is not None
            line = vllm.stdout.readline()  # "vLLM ready in … s at URL …", or nothing when it failed
            assert "vLLM ready" in line, line
            vllm_pid = int(pidfile.read_text())
            assert vllm_pid == psutil.Process(vllm.pid).children()[0].pid
            url = re.search(r"at (http://\S+)", line).group(1)
            alone, beside, again = alone_beside_again(url, trace, tmp_path, vllm_pid, MonitorClient(murl))
        finally:
            vllm.send_signal(signal.SIGINT)
            vllm.wait(timeout=120)
        assert pidfile.read_text() == ""  # emptied when vLLM stopped
        mon.send_signal(signal.SIGINT)
        assert mon.wait(timeout=10) == 0
    print(json.dumps({"alone": alone, "beside": beside, "again": again}, indent=1))

    for run in (alone, beside, again):
        # the share is the server's own CPU time at the model's price, whatever else runs
        assert 0.9 < run["attributed_over_own_cpu"] < 1.1, run
        # its loaded-idle draw is its own (small): the dynamic figures stay positive
        assert 0 <= run["loaded_idle_attributed_w"] * run["seconds"] < 0.5 * run["attributed_j"]
    without = [alone["attributed_j_per_token"], again["attributed_j_per_token"]]
    assert (1 - BURNER_DOWN) * min(without) < beside["attributed_j_per_token"] < (1 + BURNER_UP) * max(without)
    # The burner's own share is its CPU time's, in the host total beside the server's; where the host had headroom
    # (it was not at the model's maximum already, from other work) the total rises by it.
    assert 0.9 < beside["burner_over_own_cpu"] < 1.1, beside
    assert beside["host_j"] > beside["attributed_j"] + 0.9 * beside["burner_attributed_j"]
    before_w = min(alone["host_w"], again["host_w"])
    rise_w = min(MODEL_W_PER_CPU * beside["burner_cpus"], 2 * 3.5 - max(alone["host_w"], again["host_w"]))
    assert beside["host_w"] - before_w >= 0.5 * rise_w - 0.1
