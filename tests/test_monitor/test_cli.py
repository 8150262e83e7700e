"""The monitor as users run it: a real process, a real HTTP server, signals and bad arguments."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx2
import pytest
from servers import running

pytestmark = pytest.mark.integration


def running_monitor(*args: str):
    return running("monitor", *args)


def test_monitor_serves_estimated_energy_that_grows_with_the_window():
    with running_monitor("--source", "estimate", "--quiet") as (proc, url):
        time.sleep(1.5)
        with httpx2.Client(base_url=url, timeout=5) as client:
            metrics = client.get("/metrics").text
            assert 'joulebench_host_power_watts{source="estimate"}' in metrics
            assert "joulebench_host_energy_joules_total" in metrics
            now = client.get("/v1/devices").json()["now_s"]
            energies = []
            for span in (0.3, 0.6, 1.2):
                body = client.get("/v1/energy", params={"start": now - span, "end": now}).json()
                (dev,) = body["devices"]
                assert dev["source"] == "estimate"
                energies.append(dev["energy_j"])
            assert 0 <= energies[0] < energies[1] < energies[2]
            assert client.get("/healthz").json()["status"] == "ok"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_the_console_script_has_help():
    out = subprocess.run([sys.executable, "-m", "joulebench", "monitor", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--source", "--host", "--port", "--interval-ms", "--sample-log"):
        assert flag in out.stdout


def test_sigterm_stops_it_cleanly():
    with running_monitor("--source", "estimate", "--quiet") as (proc, _):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def one_line_error(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "joulebench", "monitor", *args], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr  # one line, no traceback
    return lines[0]


def test_a_port_in_use_is_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error("--source", "estimate", "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}" in line and "--port" in line


def test_an_unknown_source_is_one_line():
    assert "unknown power source 'magic'" in one_line_error("--source", "magic")


def test_a_missing_source_is_one_line():
    assert "NVML could not start" in one_line_error("--source", "nvml")
