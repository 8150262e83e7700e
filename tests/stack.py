"""The `cpu` stack on a machine with no image registry, by hand or under test: docker-compose.yml's `cpu`
profile with CI's override (tests/compose/ci.yml), built and brought up on a Docker engine of its own.

    make stack-cpu                                  # python tests/stack.py up
    python tests/stack.py compose logs vllm-cpu     # any docker compose command, on this stack
    make stack-down                                 # python tests/stack.py down

``up`` starts Debian's dockerd with its own roots under ``--root`` (detached: it runs on until ``down``),
makes the images' base by debootstrap and imports it (once: it stays in the engine), builds the images
from wheels/ alone, brings the stack up, waits until vLLM, the monitor, Prometheus and Locust's workers
answer, and writes where each is to ROOT/stack.json. The override's monitor reads one **simulated GPU**
(tests/fake_gpu_joulebench.py: a fake NVML library whose power follows the CPU load, 80-280 W) beside the
CPU estimate, so that every dashboard panel has data: its figures are no measurement, and Locust's Energy
tab says so. No Grafana (its image cannot be had without a registry). ``down`` takes the stack down
(``--volumes``: its volumes too, the runs with them), stops the engine and unmounts what it left
(``--purge``: removes ROOT, images included). tests/test_compose.py runs ``up`` and ``down`` as they are.

Needs root (dockerd, debootstrap) and what ``make test-tools`` installs as root: docker.io, debootstrap,
the compose plugin, wheels/ and traces/.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).parent))
from docker_engine import DockerEngine, base_image
from paths import ROOT
from stack_checks import wait_http

BASE = "joulebench-ci/bookworm-python:local"
PROJECT = "joulebench"  # docker-compose.yml's name
COMPOSE_FILES = (ROOT / "docker-compose.yml", ROOT / "tests" / "compose" / "ci.yml")
ENV_FILE = ROOT / ".env.example"  # not a developer's .env: the environment below overrides it
DEFAULT_ROOT = Path("/var/tmp/jb-stack")  # short: containerd's sockets live under it
SIMULATED = ("the GPU is simulated: tests/fake_gpu_joulebench.py, a fake NVML library whose power follows "
             "the CPU load (80-280 W), beside the CPU estimate; its figures are no measurement")  # fmt: skip


class StackError(Exception):
    """What stops the stack from coming up, in one line for the user."""


def missing_tools() -> list[str]:
    missing = [t for t in ("dockerd", "docker", "debootstrap") if shutil.which(t) is None]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode:
        missing.append("the docker CLI's compose plugin")
    missing += [f"{d}/ (make {d})" for d in ("wheels", "traces") if not any((ROOT / d).glob("*.*"))]
    return missing


class Stack:
    """`docker compose` on the users' file and CI's override, against ``engine``."""

    def __init__(self, engine: DockerEngine, locust_port: int, logs: Path, locust_password: str) -> None:
        self.engine = engine
        self.logs = logs
        self.locust_port = locust_port
        self.locust_password = locust_password
        self.env = engine.env | {
            "COMPOSE_PROFILES": "cpu", "GRAFANA_ADMIN_PASSWORD": "not-used-in-ci", "JB_CI_BASE": BASE,
            "LOCUST_PORT": str(locust_port), "PUBLISH_ADDRESS": "127.0.0.1", "LOCUST_PASSWORD": locust_password,
        }  # fmt: skip

    def operator(self) -> httpx2.Client:
        """A client of Locust's UI, logged in (user admin, the stack's LOCUST_PASSWORD)."""
        client = httpx2.Client(base_url=f"http://127.0.0.1:{self.locust_port}", timeout=30)
        client.post("/joulebench/login", data={"username": "admin", "password": self.locust_password})
        return client

    def command(self, *args: str) -> list[str]:
        files = [f for path in COMPOSE_FILES for f in ("-f", str(path))]
        return ["docker", "compose", "--project-directory", str(ROOT), "--env-file", str(ENV_FILE), *files, *args]

    def compose(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
        run = subprocess.run(self.command(*args), env=self.env, capture_output=True, text=True, timeout=timeout_s)
        if run.returncode != 0:
            raise StackError(f"docker compose {' '.join(args)} failed:\n{run.stdout[-4000:]}{run.stderr[-4000:]}")
        return run

    def alive(self) -> None:
        """Raises, with the services' log tails, if a container of the stack has stopped or is restarting."""
        ps = self.engine.docker("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}",
                                "--format", "{{.Names}} {{.State}} {{.Status}}").stdout  # fmt: skip
        if bad := [line for line in ps.splitlines() if line.split()[1] != "running"]:
            raise StackError("; ".join(bad) + "\n" + self.tail())

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

    def up(self, work: Path, timings: dict[str, float]) -> dict[str, str]:
        """Base image (unless the engine has it), images, `compose up`; every service's address once all answer
        and Locust's workers have connected."""
        t0 = time.monotonic()
        if self.engine.docker("image", "inspect", BASE, check=False).returncode != 0:
            base_image(self.engine, BASE, work)
            timings["base image (debootstrap + import)"] = time.monotonic() - t0
        t0 = time.monotonic()
        self.compose("build", timeout_s=2400)
        timings["images (compose build)"] = time.monotonic() - t0
        t0 = time.monotonic()
        self.compose("up", "--detach", "--no-build")
        urls = {
            "vllm": self.address("vllm-cpu", 8000), "monitor": self.address("monitor-cpu", 9400),
            "prometheus": self.address("prometheus", 9090), "locust": f"http://127.0.0.1:{self.locust_port}",
        }  # fmt: skip
        for url in (f"{urls['prometheus']}/-/ready", f"{urls['monitor']}/healthz", f"{urls['locust']}/login",
                    f"{urls['vllm']}/health"):  # fmt: skip
            wait_http(url, 1200, self.alive)
        deadline = time.monotonic() + 120
        operator = self.operator()
        while len(operator.get("/stats/requests").json().get("workers", [])) < 2:
            if time.monotonic() > deadline:
                raise StackError(f"Locust's workers did not connect\n{self.tail()}")
            time.sleep(1.0)
        timings["stack up (compose up to vLLM ready)"] = time.monotonic() - t0
        return urls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests/stack.py", description=__doc__.split("\n\n")[0])
    where = "the engine's folder: images, volumes, logs, stack.json (default: %(default)s)"
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=where)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring the stack up (and its engine, and the images' base when missing)")
    up.add_argument("--locust-port", type=int, default=8089, help="Locust's UI on 127.0.0.1 (default: %(default)s)")
    down = sub.add_parser("down", help="take the stack down and stop its engine")
    down.add_argument("--volumes", action="store_true", help="remove the stack's volumes (the runs with them)")
    down.add_argument("--purge", action="store_true", help="remove ROOT too: images, volumes, logs")
    compose = sub.add_parser("compose", help="any `docker compose` command on this stack, e.g. logs vllm-cpu")
    compose.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    engine = DockerEngine(root)
    state = root / "stack.json"
    try:
        if args.command == "up":
            return _up(engine, args.locust_port, state)
        known = json.loads(state.read_text()) if state.is_file() else {}
        # compose refuses the file without a password; `down` and `logs` never log in
        stack = Stack(engine, known.get("locust_port", 8089), root / "compose.log",
                      known.get("locust_password") or os.environ.get("LOCUST_PASSWORD") or "unset")  # fmt: skip
        if args.command == "compose":
            if not engine.answers():
                raise StackError(f"no engine answers on {engine.socket}: `make stack-cpu` first")
            return subprocess.run(stack.command(*args.args), env=stack.env).returncode
        if engine.answers():
            stack.compose("down", *(["--volumes"] if args.volumes else []), timeout_s=120)
        engine.stop()
        state.unlink(missing_ok=True)
        if args.purge:
            shutil.rmtree(root, ignore_errors=True)
        print(f"stack down; engine stopped{'; ' + str(root) + ' removed' if args.purge else ''}")
        return 0
    except StackError as err:
        print(f"tests/stack.py {args.command}: {err}", file=sys.stderr)
        return 1


def _up(engine: DockerEngine, locust_port: int, state: Path) -> int:
    if os.geteuid() != 0:
        raise StackError("needs root: it starts a Docker engine of its own (dockerd) and runs debootstrap")
    if missing := missing_tools():
        raise StackError(f"needs {', '.join(missing)}: `make test-tools` as root installs them")
    if not engine.answers():
        engine.start(detached=True)
    # Locust's UI asks for a login (user admin): the caller's LOCUST_PASSWORD, else one made here and printed
    password = os.environ.get("LOCUST_PASSWORD") or secrets.token_urlsafe(12)
    stack = Stack(engine, locust_port, engine.root / "compose.log", password)
    timings: dict[str, float] = {}
    try:
        urls = stack.up(engine.root, timings)
    except StackError:
        print(f"the engine runs on ({engine.socket}): `make stack-down` stops it", file=sys.stderr)
        raise
    state.write_text(json.dumps({"docker_host": f"unix://{engine.socket}", "locust_port": locust_port,
                                 "locust_password": password, "urls": urls, "timings": timings}, indent=1))  # fmt: skip
    state.chmod(0o600)
    print(
        f"Locust (start runs, Energy tab): {urls['locust']} (user admin, password: LOCUST_PASSWORD"
        + ("" if os.environ.get("LOCUST_PASSWORD") else f", made for this stack: {password}")
        + ")"
    )
    print(f"Prometheus: {urls['prometheus']} · monitor: {urls['monitor']} · vLLM: {urls['vllm']} (no Grafana)")
    print(f"Note: {SIMULATED}.")
    print("docker compose on this stack: python tests/stack.py compose ARGS (e.g. logs vllm-cpu)")
    print("; ".join(f"{step} {seconds:.0f} s" for step, seconds in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
