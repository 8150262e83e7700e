"""Every listener binds 127.0.0.1 unless told otherwise: the monitor, the mock server, Locust's web UI and
its master; checked on the sockets the real processes open."""

from __future__ import annotations

import sys
import time

import psutil
import pytest

from joulebench.processes import Child, free_port
from loadgen.cli import loopback_by_default

pytestmark = pytest.mark.integration


def listening(pid: int, timeout_s: float = 60) -> set[str]:
    """The addresses the process tree of ``pid`` listens on, once it listens on anything."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        pids = {p.pid for p in procs}
        got = {c.laddr.ip for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.pid in pids}
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"pid {pid} listens on nothing")


@pytest.mark.parametrize(
    "args",
    [
        ["monitor", "--port", "0", "--source", "estimate", "--quiet"],
        ["mock-server", "--port", "0"],
        ["locust", "--web-port", "{port}"],
        ["locust", "--master", "--web-port", "{port}", "--master-bind-port", "{port2}"],
    ],
    ids=["monitor", "mock-server", "locust-ui", "locust-master"],
)
def test_listeners_bind_loopback_by_default(tmp_path, args):
    args = [a.format(port=free_port(), port2=free_port()) for a in args]
    with Child(args[0], [sys.executable, "-m", "joulebench", *args], tmp_path / "log") as child:
        assert child.pid is not None
        assert listening(child.pid) == {"127.0.0.1"}, (tmp_path / "log").read_text()[-2000:]


def test_told_otherwise_they_bind_where_told():
    assert loopback_by_default(["--web-host", "0.0.0.0"]) == ["--web-host", "0.0.0.0"]
    assert loopback_by_default(["--master", "--master-bind-host=0.0.0.0"])[-2:] == ["--web-host", "127.0.0.1"]
    assert loopback_by_default(["--worker"]) == ["--worker"]
