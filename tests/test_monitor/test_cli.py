"""The monitor as users run it: a real process, a real HTTP server, signals and bad arguments."""

from __future__ import annotations

import os
import resource
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
    for flag in ("--source", "--host", "--port", "--interval-ms", "--sample-log", "--attribute-pid",
                 "--attribute-pidfile", "--attribute-cgroup", "--attribute-idle-w"):  # fmt: skip
        assert flag in out.stdout


def test_sigterm_stops_it_cleanly():
    with running_monitor("--source", "estimate", "--quiet") as (proc, _):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_a_sample_log_whose_disk_fills_ends_the_monitor_with_one_line_and_whole_lines_kept(tmp_path):
    """The log may grow to 20 kB (RLIMIT_FSIZE: a write past it fails as on a full disk, part of it written);
    at 1 ms a poll that is about a second. Before, the sampler stopped and the process served 503s forever."""
    log = tmp_path / "samples.csv"
    cmd = [sys.executable, "-m", "joulebench", "monitor", "--port", "0", "--source", "estimate", "--quiet",
           "--interval-ms", "1", "--sample-log", str(log)]  # fmt: skip
    limit = (20000, 20000)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, limit)) as proc:  # fmt: skip
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:  # it went on running: the test fails here, not in a hang
                proc.kill()
    assert proc.returncode == 2 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"joulebench: error: cannot write the sample log {log}: File too large; the monitor stops")
    text = log.read_text()
    rows = text.splitlines()
    assert text.endswith("\n") and rows[0] == "t_s,device,energy_j,power_w" and len(rows) > 100
    assert all(len(r.split(",")) == 4 and r.endswith(tuple("0123456789")) for r in rows[1:])


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


def test_processes_that_cannot_be_named_are_one_line(tmp_path):
    assert "--attribute-pid 4194305: no such process" in one_line_error("--source", "estimate", "--attribute-pid",
                                                                      "4194305")  # fmt: skip
    bad = tmp_path / "server.pid"
    bad.write_text("vllm\n")
    assert "not PIDs" in one_line_error("--source", "estimate", "--attribute-pidfile", str(bad))
    assert "no readable cpu.stat" in one_line_error("--source", "estimate", "--attribute-cgroup", str(tmp_path))
    assert "--attribute-idle-w needs" in one_line_error("--source", "estimate", "--attribute-idle-w", "5")


def test_a_pidfile_written_after_the_monitor_started_is_followed(tmp_path):
    pidfile = tmp_path / "server.pid"
    with running_monitor("--source", "estimate", "--quiet", "--attribute-pidfile", str(pidfile)) as (proc, url):
        with httpx2.Client(base_url=url, timeout=5) as client:
            (att,) = [d for d in client.get("/v1/devices").json()["devices"] if d["kind"] == "attributed"]
            assert att["method"] == "cpu_time_share" and att["name"] == f"the process tree of pidfile {pidfile}"
            pidfile.write_text(f"{os.getpid()}\n")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.5)
                (att,) = [d for d in client.get("/v1/devices").json()["devices"] if d["kind"] == "attributed"]
                if att["status"]["processes"]:
                    break
            assert att["status"]["processes"] == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
