"""The compose stack, for real: docker-compose.yml's `cpu` profile built and brought up by `docker compose`
on a Docker engine of the test's own, with CI's override (tests/compose/ci.yml: a local base image, Debian's
Prometheus, no Grafana, one fake GPU at the NVML boundary). vLLM's CPU build serves the tiny preset; a
replay starts through Locust's web API with the start form's fields and runs to its end; then every
Prometheus target is up, every panel of every dashboard has data, the J/token recording rule agrees with
the report's figure (the monitor's window energy over the records' tokens) within the scrape band, the
records are in the `runs` volume, and `compose down` leaves no container or network (the volumes only
until `down -v`). Each step's time is printed at the end.

Needs root (it starts dockerd) and what `make test` installs as root: docker.io, debootstrap, the compose
plugin, the wheelhouse (wheels/) and the traces (traces/)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from docker_engine import DockerEngine, base_image
from paths import ROOT
from stack_checks import (
    RULE_WINDOW_S,
    SCRAPE_S,
    check_every_panel,
    instant,
    loadgen_counts,
    rule_against_report,
    wait_http,
)

from loadgen.records import read_records

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it starts a Docker engine of its own (CI is root)"),
]

BASE = "joulebench-ci/bookworm-python:local"
PROJECT = "joulebench"  # docker-compose.yml's name
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "tests" / "compose" / "ci.yml")
ENV_FILE = ROOT / ".env.example"  # not a developer's .env; the environment below overrides it
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
# jb_first=0 (every request the duration holds), or the saturate run's 64 would carry over.
#: Before it, the stack's reference: a saturate run from the same form, the trace's first 64 requests kept
#: 8 in flight (closed loop), each sent as one ends.
SATURATE = {**FORM, "jb_process": "saturate", "jb_concurrency": 8, "jb_first": 64}


def missing_tools() -> list[str]:
    missing = [t for t in ("dockerd", "docker", "debootstrap") if shutil.which(t) is None]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode:
        missing.append("the docker CLI's compose plugin")
    missing += [f"{d}/ (make {d})" for d in ("wheels", "traces") if not any((ROOT / d).glob("*.*"))]
    return missing


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


class Stack:
    """`docker compose` on the users' file and CI's override, against ``engine``."""

    def __init__(self, engine: DockerEngine, locust_port: int, logs: Path) -> None:
        self.engine = engine
        self.logs = logs
        self.locust_port = locust_port
        self.env = engine.env | {
            "COMPOSE_PROFILES": "cpu", "GRAFANA_ADMIN_PASSWORD": "not-used-in-ci", "JB_CI_BASE": BASE,
            "LOCUST_PORT": str(locust_port), "PUBLISH_ADDRESS": "127.0.0.1", "LOCUST_PASSWORD": LOCUST_PASSWORD,
        }  # fmt: skip

    def compose(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
        files = [f for path in COMPOSE_FILES for f in ("-f", str(path))]
        command = ["docker", "compose", "--project-directory", str(ROOT), "--env-file", str(ENV_FILE), *files, *args]
        run = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout_s)
        assert run.returncode == 0, f"docker compose {' '.join(args)} failed:\n{run.stdout[-4000:]}{run.stderr[-4000:]}"
        return run

    def alive(self) -> None:
        """Raises, with the services' log tails, if a container of the stack has stopped or is restarting."""
        ps = self.engine.docker("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}",
                                "--format", "{{.Names}} {{.State}} {{.Status}}").stdout  # fmt: skip
        if bad := [line for line in ps.splitlines() if line.split()[1] != "running"]:
            raise AssertionError("; ".join(bad) + "\n" + self.tail())

    def tail(self) -> str:
        text = self.compose("logs", "--no-color", "--timestamps").stdout
        self.logs.write_text(text)
        lines = text.splitlines()
        return f"(all of it in {self.logs})\n" + "\n".join(lines[-60:])

    def address(self, service: str, port: int) -> str:
        """http://IP:PORT of the service's container on the stack's network (the host reaches it directly)."""
        (cid,) = self.compose("ps", "-q", service).stdout.split()
        ip = self.engine.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", cid)
        return f"http://{ip.stdout.strip()}:{port}"

    def project_objects(self) -> dict[str, set[str]]:
        label = f"label=com.docker.compose.project={PROJECT}"
        return {
            kind: set(self.engine.docker(*cmd, "--filter", label).stdout.split())
            for kind, cmd in (("containers", ("ps", "-aq")), ("networks", ("network", "ls", "-q")),
                              ("volumes", ("volume", "ls", "-q")))
        }  # fmt: skip


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[DockerEngine]:
    if missing := missing_tools():
        pytest.fail(f"the compose test needs {', '.join(missing)}: run `make test` as root")
    root = Path(f"/tmp/jb-docker-{os.getpid()}")  # short: containerd's sockets live under it
    engine = DockerEngine(root)
    try:
        yield engine.start()
    finally:
        engine.stop()
        shutil.rmtree(root)


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


def test_compose_up_replay_checks_and_down(engine, tmp_path, capsys):
    timings: dict[str, float] = {}
    with timed(timings, "base image (debootstrap + import)"):
        base_image(engine, BASE, tmp_path)
    stack = Stack(engine, free_low_port(), tmp_path / "compose.log")
    with timed(timings, "images (compose build)"):
        stack.compose("build", timeout_s=2400)
    ui = f"http://127.0.0.1:{stack.locust_port}"
    operator = httpx2.Client(base_url=ui, timeout=30)  # Locust's UI asks for the login .env sets
    try:
        with timed(timings, "stack up (compose up to vLLM ready)"):
            stack.compose("up", "--detach", "--no-build")
            vllm, monitor = stack.address("vllm-cpu", 8000), stack.address("monitor-cpu", 9400)
            prom = stack.address("prometheus", 9090)
            for url in (f"{prom}/-/ready", f"{monitor}/healthz", f"{ui}/login", f"{vllm}/health"):
                wait_http(url, 1200, stack.alive)
            assert operator.get("/joulebench/live").status_code == 302
            operator.post("/joulebench/login", data={"username": "admin", "password": LOCUST_PASSWORD})
            deadline = time.monotonic() + 120
            while len(operator.get("/stats/requests").json().get("workers", [])) < 2:
                assert time.monotonic() < deadline, f"Locust's workers did not connect\n{stack.tail()}"
                time.sleep(1.0)

        with timed(timings, "saturate run (the stack's reference)"):
            r = operator.post("/swarm", data=SATURATE)
            assert r.status_code == 200 and r.json()["success"], r.text
            saturated = final_figures(operator, time.monotonic() + 900, stack)
            ref = saturated["run_reference"]
            assert ref and ref["valid"], ref
            assert ref["concurrency"] == 8 and ref["workload"]["requests"] == 64
            before = counted(ui, 64)  # the workers' counts reach the master with their next report

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

            targets = httpx2.get(f"{prom}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
            assert {t["labels"]["job"]: t["health"] for t in targets} == {"monitor": "up", "vllm": "up", "locust": "up"}

            at = min(r["scheduled_s"] for r in records) + RULE_WINDOW_S + 8.0  # a full minute of traffic behind
            while time.time() < at + 3 * SCRAPE_S:
                time.sleep(0.5)
            queries = check_every_panel(prom, at, reference=True)
            rule = rule_against_report(prom, monitor, records, at)
            assert rule.low_j <= rule.rule_j <= rule.high_j, str(rule)
            # The premium panel's query: the rule's J/token over the published reference, evaluated with it;
            # against the report's ratio (records + monitor ÷ the saturate run's reference) within the band.
            (premium,) = instant(prom, "joulebench:premium_per_token:rate1m", rule.t1)
            p, ref_j = float(premium["value"][1]), stored["j_per_token"]
            assert p == pytest.approx(rule.rule_j / ref_j, rel=1e-9)
            assert rule.low_j / ref_j <= p <= rule.high_j / ref_j, (p, rule.report_j / ref_j, str(rule))
            premium_line = (
                f"premium per token {p:.3f} (report {rule.report_j / ref_j:.3f}; reference {ref_j:.5f} J/token)"
            )
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
