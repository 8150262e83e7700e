"""``joulebench compare`` under faults: vLLM killed mid-replay, the monitor restarted mid-run, SIGINT and
SIGTERM in every phase. Each test checks what is kept, what the user is told, and that no process is left
(psutil). Real parts throughout: the monitor (estimate source), vLLM's CPU build or the mock server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from servers import CompareRun, mock_server, running

from compare.rundir import replay_dir
from loadgen.records import read_records
from monitor.sources.estimate import IDLE_W_PER_CPU, MAX_W_PER_CPU

pytestmark = pytest.mark.integration

VLLM_SERVER = r"vllm\.entrypoints|vllm serve|api_server"  # the server's command line, not vLLM's import probe


def records_in(run_dir: Path, rate: float, segment: int = 0) -> list[dict]:
    path = replay_dir(run_dir, rate, segment) / "requests.jsonl"
    return read_records(path) if path.exists() else []


def test_vllm_killed_mid_replay_keeps_what_finished(tmp_path):
    run = CompareRun(tmp_path, rates="0.5,1", requests=30)
    run.wait_until("the second rate's replay", lambda: len(records_in(run.run_dir, 1.0)) >= 3, timeout_s=600)
    vllm = run.child(VLLM_SERVER)
    vllm.send_signal(signal.SIGKILL)
    code, err = run.finish()

    assert code == 2, err
    assert re.search(r"during online 1x \(2\.\d\d req/s\), segment 1/1, vLLM was killed by SIGKILL", err), err
    assert "the report covers what finished" in err
    config = run.config()
    assert config["complete"] is False and "vLLM was killed" in config["interrupted"]
    # the rate that finished: its window and its place in the report
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert [r["rate"] for r in summary["rates"]] == [0.5]
    assert summary["rates"][0]["segments"][0]["energy_j"] > 0
    # the rate cut short: what finished kept, in flight marked, no window and no offline run
    records = records_in(run.run_dir, 1.0)
    statuses = {r["status"] for r in records}
    assert sum(r["status"] == "ok" for r in records) >= 3
    assert statuses <= {"ok", "disconnect", "error", "interrupted"}, statuses
    assert len({r["request_id"] for r in records}) == len(records)
    assert not (replay_dir(run.run_dir, 1.0, 0) / "window.json").exists()
    assert not (run.run_dir / "offline").exists()
    report = (run.run_dir / "report.md").read_text()
    assert "Incomplete run" in report and "vLLM was killed" in report
    run.assert_no_process_left()


def _start_monitor(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "--port", str(port), "--source", "estimate", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    for line in proc.stdout:
        if "listening on" in line:
            return proc
    raise AssertionError(f"the monitor did not start again on port {port} (exit {proc.wait()})")


@pytest.mark.parametrize("who", ["started by compare", "external"])
def test_monitor_restarted_mid_run_costs_only_its_window(tmp_path, who):
    with (
        mock_server("--ttft-ms", "20", "--itl-ms", "2") as target,
        running("monitor", "--source", "estimate", "--quiet") as (external, monitor_url),
    ):
        extra = ["--target", target, "--offline", "off", "--segments", "2"]
        if who == "external":
            extra += ["--monitor", monitor_url]
        run = CompareRun(tmp_path, *extra, warmup_share=0.4)
        run.wait_until("the first replay", lambda: len(records_in(run.run_dir, 1.0)) >= 1)
        if who == "external":
            external.kill()
            external.wait()
            # down across the first window's start (its 7th request, 3 s in at 2 requests/s), then back on its port
            run.wait_until("the first window", lambda: len(records_in(run.run_dir, 1.0)) >= 9)
            port = int(monitor_url.rsplit(":", 1)[1])
            restarted = _start_monitor(port)
        else:
            run.child(r"-m monitor").kill()
        try:
            code, err = run.finish()
        finally:
            if who == "external":
                restarted.kill()
                restarted.communicate()  # reaped, its pipe closed

    assert code == 1, err
    assert "incomplete, " in err and re.search(
        r"online 1x \(2\.\d\d req/s\), segment 1/2: (no energy for its window|energy incomplete)", err
    )  # no reading at all, or one the restarted monitor's history covers only in part
    config = run.config()
    assert config["complete"] is False and config["interrupted"] is None
    if who == "started by compare":
        assert "the monitor was killed by SIGKILL" in config["problems"][0]
        assert (run.run_dir / "monitor-2.log").exists()
    # the first segment: records kept, no energy (or one marked incomplete); the second measured by the
    # restarted monitor
    assert {r["status"] for r in records_in(run.run_dir, 1.0, 0)} == {"ok"}
    first = replay_dir(run.run_dir, 1.0, 0) / "window.json"
    assert not first.exists() or json.loads(first.read_text())["span_reading"]["uncovered_s"]
    window = json.loads((replay_dir(run.run_dir, 1.0, 1) / "window.json").read_text())
    watts = window["energy_j"] / (window["series"][1] - window["series"][0])
    cpus = psutil.cpu_count()
    assert IDLE_W_PER_CPU * cpus * 0.99 <= watts <= MAX_W_PER_CPU * cpus * 1.01  # neither negative nor doubled
    energy = [row.split(",") for row in (run.run_dir / "energy.csv").read_text().splitlines()[1:]]
    assert energy and all(float(row[5]) >= 0 for row in energy)
    assert {row[2] for row in energy if row[0] == "online"} == {"1"}  # only the measured segment has a series
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert [x["segment"] for x in summary["rates"][0]["segments"]] == [1]
    assert "Incomplete run" in (run.run_dir / "report.md").read_text()
    page = (run.run_dir / "report.html").read_text()  # each problem on its own line
    assert f"Incomplete run</strong> ({len(config['problems'])} problem" in page
    assert page.count("<br>– ") == len(config["problems"])
    assert "no energy for its window" in page or "energy incomplete" in page
    run.assert_no_process_left()


def _in_config(key: str) -> Callable[[CompareRun], bool]:
    return lambda run: key in run.config()


# (phase, whether vLLM is started here, when that phase is under way)
PHASES = {
    "setup": (True, lambda run: run.run_dir.exists()),  # the model, which vLLM build, the plan
    "device idle": (True, lambda run: _in_config("monitor")(run) and time.sleep(1) is None),
    "vLLM starting": (True, lambda run: run.find(VLLM_SERVER) is not None),
    "loaded idle": (False, lambda run: _in_config("monitor")(run) and time.sleep(1.5) is None),
    "replay": (False, lambda run: len(records_in(run.run_dir, 1.0)) >= 2),
    "offline": (False, lambda run: (run.run_dir / "offline" / "offline.log").exists()),
}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_a_signal_in_any_phase_stops_everything(tmp_path, phase, sig):
    starts_vllm, under_way = PHASES[phase]
    with mock_server("--ttft-ms", "20", "--itl-ms", "2") as target:
        run = CompareRun(tmp_path, *([] if starts_vllm else ["--target", target]))
        run.wait_until(phase, lambda: under_way(run))
        os.killpg(run.proc.pid, sig)  # as Ctrl-C in a terminal: the foreground process group
        code, err = run.finish(timeout_s=120)

    assert code == 128 + sig, err
    assert f"stopped by {signal.Signals(sig).name}" in err
    config = run.config()
    assert config["complete"] is False if phase != "setup" else config.get("complete") in (None, False)
    if phase in ("replay", "offline"):  # something finished: a report of it
        assert config["interrupted"].startswith(f"stopped by {signal.Signals(sig).name}")
        assert "Incomplete run" in (run.run_dir / "report.md").read_text()
        records = records_in(run.run_dir, 1.0)
        assert records and {r["status"] for r in records} <= {"ok", "interrupted"}
    run.assert_no_process_left()
