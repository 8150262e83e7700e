"""The compose stack, for real: docker-compose.yml's `cpu` profile brought up by `python tests/stack.py up`
(`make stack-cpu`, the by-hand path: a Docker engine of its own and CI's override, tests/compose/ci.yml: a
local base image, Debian's Prometheus, no Grafana, one simulated GPU at the NVML boundary) and taken down by
`tests/stack.py down`. vLLM's CPU build serves the tiny preset; a replay starts through Locust's web API with
the start form's fields and runs to its end; then every Prometheus target is up, every panel of every
dashboard has data, the J/token recording rule agrees with the report's figure (the monitor's window energy
over the records' tokens) within the scrape band, the Energy tab says its GPU is simulated, the records are
in the `runs` volume, and `compose down` leaves no container or network (the volumes only until `down -v`).
Each step's time is printed at the end.

Needs root (it starts dockerd) and what `make test` installs as root: docker.io, debootstrap, the compose
plugin, the wheelhouse (wheels/) and the traces (traces/)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx2
import pytest
from docker_engine import DockerEngine
from paths import ROOT
from stack import PROJECT, Stack, missing_tools
from stack_checks import (
    RULE_WINDOW_S,
    SCRAPE_S,
    check_every_panel,
    loadgen_counts,
    premium_against_report,
    rule_against_report,
)

from loadgen.records import read_records

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it starts a Docker engine of its own (CI is root)"),
]

STACK_PY = ROOT / "tests" / "stack.py"
SECONDS, RATE = 75.0, 2.0
LOCUST_PASSWORD = "not-used-in-ci-either"
#: The web UI's start form, as a user fills it in: two users (one dispatcher per worker), the baked-in
#: conversation trace at 2 Poisson arrivals a second, clipped to 256 tokens so two cores keep up.
FORM = {
    "user_count": 2, "spawn_rate": 2, "host": "http://vllm:8000", "jb_trace": "azure-conv",
    "jb_process": "poisson", "jb_rate": RATE, "jb_duration": SECONDS, "jb_max_model_len": 256,
    "jb_monitor": "http://monitor:9400", "jb_runs_dir": "/data", "jb_first": 0,
}  # fmt: skip
# Locust's form keeps a swarm's values for the next (the UI shows them filled in): the replay's form states
# jb_first=0 (every request the duration holds), or the saturate run's 192 would carry over.
#: Before it, the stack's reference: a saturate run from the same form, the trace's first 192 requests kept
#: 8 in flight (closed loop), each sent as one ends: 24 batches, so that its steady part (from the start
#: cohort's last end to the last send) holds enough requests for its mix and halves to be checked.
SATURATE = {**FORM, "jb_process": "saturate", "jb_concurrency": 8, "jb_first": 192}


def counted(ui: str, want: float, timeout_s: float = 30.0) -> float:
    """Locust's finished count once it reaches ``want`` (or what it is after ``timeout_s``): the master sums
    the workers' counts from their periodic reports, so it may lag the records already written."""
    deadline = time.monotonic() + timeout_s
    while (n := loadgen_counts(ui).get("finished_total", 0)) != want and time.monotonic() < deadline:
        time.sleep(1.0)
    return n


def free_low_port() -> int:
    """A free port below the ephemeral range (which is busy on CI's machines), for Locust's published UI."""
    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 20000-32000")


class Up(NamedTuple):
    stack: Stack
    printed: str  # what `up` told the user
    state: dict  # its stack.json: the services' addresses, the steps' times


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    """The stack as `tests/stack.py up` leaves it (its engine's root short: containerd's sockets live under
    it); `tests/stack.py down --purge` after the test, whatever happened."""
    if missing := missing_tools():
        pytest.fail(f"the compose test needs {', '.join(missing)}: run `make test` as root")
    root = Path(f"/tmp/jb-docker-{os.getpid()}")
    port = free_low_port()
    try:
        run = subprocess.run([sys.executable, str(STACK_PY), "--root", str(root), "up", "--locust-port", str(port)],
                             capture_output=True, text=True, timeout=3600,
                             env={**os.environ, "LOCUST_PASSWORD": LOCUST_PASSWORD})  # fmt: skip
        assert run.returncode == 0, f"tests/stack.py up failed:\n{run.stdout[-4000:]}{run.stderr[-6000:]}"
        stack = Stack(DockerEngine(root), port, tmp_path / "compose.log", LOCUST_PASSWORD)
        yield Up(stack, run.stdout, json.loads((root / "stack.json").read_text()))
    finally:
        down = subprocess.run([sys.executable, str(STACK_PY), "--root", str(root), "down", "--purge"],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert down.returncode == 0, f"tests/stack.py down failed:\n{down.stdout}{down.stderr}"
        assert not root.exists()


def final_figures(operator: httpx2.Client, deadline: float, stack: Stack) -> dict:
    """The run's Energy tab once it has stopped by itself with its figures (and reference) stored."""
    while (live := operator.get("/joulebench/live").json())["phase"] != "final":
        assert time.monotonic() < deadline, f"the run never stored its final figures\n{stack.tail()}"
        stack.alive()
        time.sleep(1.0)
    return live


@contextlib.contextmanager
def timed(timings: dict[str, float], step: str) -> Iterator[None]:
    t0 = time.monotonic()
    try:
        yield
    finally:
        timings[step] = time.monotonic() - t0


def test_compose_up_replay_checks_and_down(up, tmp_path, capsys):
    stack, timings = up.stack, dict(up.state["timings"])
    monitor, prom, ui = (up.state["urls"][k] for k in ("monitor", "prometheus", "locust"))
    assert ui == f"http://127.0.0.1:{stack.locust_port}" and ui in up.printed
    assert "the GPU is simulated" in up.printed, up.printed
    started = stack.compose("logs", "vllm-cpu").stdout  # vLLM's minute of starting is not a silent one
    assert "starting vLLM" in started and "not ready after 10 s; its log ends: " in started, started[-3000:]
    assert httpx2.get(f"{ui}/joulebench/live", timeout=30).status_code == 302  # Locust's UI asks for the login
    operator = stack.operator()
    try:
        with timed(timings, "saturate run (the stack's reference)"):
            r = operator.post("/swarm", data=SATURATE)
            assert r.status_code == 200 and r.json()["success"], r.text
            saturated = final_figures(operator, time.monotonic() + 900, stack)
            ref = saturated["run_reference"]
            assert ref and ref["valid"], (ref or {}).get("reasons")
            assert ref["concurrency"] == 8 and ref["workload"]["requests"] == 192
            before = counted(ui, 192)  # the workers' counts reach the master with their next report

        with timed(timings, "replay (Locust's web API, to the last response)"):
            r = operator.post("/swarm", data=FORM)
            assert r.status_code == 200 and r.json()["success"], r.text
            started = time.time()
            deadline = time.monotonic() + SECONDS + 600
            while True:
                c = loadgen_counts(ui)
                done = time.time() > started + SECONDS + 2 and c.get("sent_total", 0) == c.get("scheduled_total")
                if done and c["in_flight"] == 0 and c.get("finished_total") == c["sent_total"]:
                    break
                assert time.monotonic() < deadline, f"the replay did not finish: {c}\n{stack.tail()}"
                stack.alive()
                time.sleep(2.0)
            replayed = final_figures(operator, deadline, stack)

        with timed(timings, "checks"):
            runs = tmp_path / "runs"
            stack.compose("cp", "locust-master:/data/.", str(runs))
            files = sorted((runs / replayed["run_id"]).glob("requests.worker*.jsonl"))  # the run's directory
            records = [r for f in files for r in read_records(f)]
            assert [f.name for f in files] == ["requests.worker0.jsonl", "requests.worker1.jsonl"]
            assert (runs / replayed["run_id"] / "summary.json").exists()
            assert len(records) == counted(ui, before + len(records)) - before > RATE * SECONDS / 2
            stored = json.loads((runs / "reference.json").read_text())  # the stack's reference, in the runs volume
            assert stored["run_id"] == saturated["run_id"]
            assert stored["j_per_token"] == pytest.approx(ref["j_per_token"])
            assert {r["status"] for r in records} == {"ok"}, {r["status"] for r in records}
            assert list(runs.glob("runs/serve-*/vllm.log")), "vLLM's log is not in the runs volume"
            tab = operator.get("/stats/requests").json()["extended_stats"][0]["data"]
            source = next(r for r in tab if r["figure"] == "Source")  # the Energy tab: the GPU is no measurement
            assert source["value"] == "gpu (nvml, simulated)", source
            assert source["note"].startswith("Simulated, not measured: a fake GPU (tests/fake_gpu_"), source

            targets = httpx2.get(f"{prom}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
            assert {t["labels"]["job"]: t["health"] for t in targets} == {"monitor": "up", "vllm": "up", "locust": "up"}

            at = min(r["scheduled_s"] for r in records) + RULE_WINDOW_S + 8.0  # a full minute of traffic behind
            while time.time() < at + 3 * SCRAPE_S:
                time.sleep(0.5)
            queries = check_every_panel(prom, at, reference=True)
            rule = rule_against_report(prom, monitor, records, at)
            assert rule.low_j <= rule.rule_j <= rule.high_j, str(rule)
            # The premium panel's query: the power over the live tokens priced at the published reference's
            # prices; against the report's premium (records + monitor at the saturate run's prices) within the band.
            assert stored["prices"], "the saturate run's steady part: its saturated prices are fitted"
            premium_line = premium_against_report(prom, monitor, records, stored, rule.t1)
    finally:
        operator.close()
        stack.tail()
        with timed(timings, "down (compose down, then down -v)"):
            kept = stack.project_objects()
            stack.compose("down", timeout_s=120)
            after_down = stack.project_objects()
            stack.compose("down", "--volumes", timeout_s=120)
            after_volumes = stack.project_objects()
    assert kept["containers"] and kept["networks"], kept
    assert not after_down["containers"] and not after_down["networks"], after_down
    assert after_down["volumes"] == kept["volumes"] and f"{PROJECT}_runs" in kept["volumes"], after_down
    assert after_volumes == {"containers": set(), "networks": set(), "volumes": set()}, after_volumes

    with capsys.disabled():
        tokens = sum(r["usage_output_tokens"] or 0 for r in records)
        print(f"\ncompose test: {len(records)} requests ({tokens} output tokens), {queries} panel queries with data;")
        print(f"  {rule}")
        print(f"  {premium_line}")
        for step, seconds in timings.items():
            print(f"  {step}: {seconds:.0f} s")
