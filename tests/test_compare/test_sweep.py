"""``joulebench sweep`` (DVFS) through a fake NVML at the library boundary: the plan, the set and restore
calls, restore after a failure in the middle, after SIGTERM, and the restore guard after a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from paths import FAKE_GPU
from servers import mock_server

from compare.sweep import analyze, pareto

WIDE = {**os.environ, "COLUMNS": "200"}  # rich wraps table cells to the terminal's width
FOUND = {"locked_sm_mhz": None, "power_limit_mw": 700_000}  # the fake GPU's settings before a sweep


def test_pareto_and_slo():
    assert pareto([(10, 0.02), (12, 0.03), (9, 0.025), (12, 0.02), (None, 0.01)]) == [
        False, False, False, True, False
    ]  # fmt: skip
    rows = [
        {"rate": 1.0, "setting": "SM 900 MHz", "tokens_per_joule": 12.0, "tpot_p99_s": 0.05, "ttft_p99_s": 0.5,
         "saturated": False},
        {"rate": 1.0, "setting": "SM max", "tokens_per_joule": 9.0, "tpot_p99_s": 0.02, "ttft_p99_s": 0.2,
         "saturated": False},
    ]  # fmt: skip
    per_rate = analyze(rows, tpot_p99_ms=30, ttft_p99_ms=None)
    assert per_rate["1x"] == {"best_within_slo": "SM max", "frontier": ["SM 900 MHz", "SM max"]}
    assert [r["meets_slo"] for r in rows] == [False, True]
    assert analyze(rows, tpot_p99_ms=60, ttft_p99_ms=None)["1x"]["best_within_slo"] == "SM 900 MHz"


# -- the command, in its own process on the fake GPU, against the mock server ----------------------------


def trace(tmp_path: Path, seconds: float = 60.0) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i * 0.25},40,8\n" for i in range(int(4 * seconds)))
    )
    return path


def sweep(tmp_path: Path, url: str, *extra: str, fake: tuple[str, ...] = (), window: str = "2") -> list[str]:
    return [
        sys.executable, str(FAKE_GPU), "--settings-file", str(tmp_path / "gpu.json"), *fake, "--", "sweep",
        "--target", url, "--trace", str(trace(tmp_path)), "--rates", "1", "--warmup-s", "0.5", "--window-s", window,
        "--drain-s", "10", "--settle-s", "0.2", "--out", str(tmp_path / "run"), *extra,
    ]  # fmt: skip


def gpu_settings(tmp_path: Path) -> dict:
    path = tmp_path / "gpu.json"
    return next(iter(json.loads(path.read_text()).values())) if path.exists() else FOUND


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path):
    run = subprocess.run(sweep(tmp_path, "http://127.0.0.1:9", "--sm-clocks", "900,max", "--power-limits", "300",
                               "--dry-run"), capture_output=True, text=True, timeout=60, env=WIDE)  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = run.stdout + run.stderr
    assert "NVIDIA H100" in out and "345–1980" in out and "SM 1980 MHz, 300 W" in out and "nothing is changed" in out
    assert not (tmp_path / "gpu.json").exists() and not (tmp_path / "run").exists()


def test_without_allow_gpu_settings_it_refuses(tmp_path):
    run = subprocess.run(sweep(tmp_path, "http://127.0.0.1:9", "--sm-clocks", "900"), capture_output=True,
                         text=True, timeout=60, env=WIDE)  # fmt: skip
    assert run.returncode != 0 and "--allow-gpu-settings" in run.stderr and "--dry-run" in run.stderr
    assert not (tmp_path / "gpu.json").exists()


@pytest.mark.integration
def test_a_sweep_measures_every_setting_and_restores(tmp_path):
    with mock_server("--ttft-ms", "5", "--itl-ms", "2") as url:
        run = subprocess.run(
            sweep(tmp_path, url, "--sm-clocks", "900,max", "--power-limits", "300", "--allow-gpu-settings",
                  "--slo-tpot-p99-ms", "50"), capture_output=True, text=True, timeout=180, env=WIDE,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads((tmp_path / "run" / "sweep.json").read_text())
    assert out["complete"] and out["restored"] and len(out["rows"]) == 2
    for row, clock in zip(out["rows"], (900, 1980), strict=True):
        assert row["achieved_sm_clock_mhz"] == pytest.approx(clock) and "sw_power_cap" in row["throttle_reasons"]
        assert row["j_per_token"] > 0 and row["tpot_p99_s"] is not None and row["meets_slo"]
    assert out["per_rate"]["1x"]["best_within_slo"] in ("SM 900 MHz, 300 W", "SM 1980 MHz, 300 W")
    assert (tmp_path / "run" / "sweep.png").stat().st_size > 1000 and "frontier" in (
        tmp_path / "run" / "sweep.md"
    ).read_text()
    assert gpu_settings(tmp_path) == FOUND


@pytest.mark.integration
def test_a_failure_in_the_middle_still_restores(tmp_path):
    with mock_server("--ttft-ms", "5", "--itl-ms", "2") as url:
        run = subprocess.run(  # set calls: lock 900, limit 300, then lock 1980 fails
            sweep(tmp_path, url, "--sm-clocks", "900,max", "--power-limits", "300", "--allow-gpu-settings",
                  fake=("--fail-set-call", "3")), capture_output=True, text=True, timeout=180, env=WIDE,
        )  # fmt: skip
    assert run.returncode != 0 and "lock SM clocks at 1980 MHz" in run.stderr
    out = json.loads((tmp_path / "run" / "sweep.json").read_text())
    assert len(out["rows"]) == 1 and not out["complete"] and out["restored"]
    assert gpu_settings(tmp_path) == FOUND


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_or_killed_sweep_restores_and_leaves_no_process(tmp_path, sig):
    with (
        mock_server("--ttft-ms", "5", "--itl-ms", "2") as url,
        subprocess.Popen(sweep(tmp_path, url, "--sm-clocks", "900", "--allow-gpu-settings", window="60"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=WIDE) as proc,
    ):  # fmt: skip
        deadline = time.monotonic() + 60
        while gpu_settings(tmp_path)["locked_sm_mhz"] != 900 or not (tmp_path / "run" / "runs").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        family = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        deadline = time.monotonic() + 15
        while gpu_settings(tmp_path) != FOUND:  # SIGKILL: the guard restores them
            assert time.monotonic() < deadline, gpu_settings(tmp_path)
            time.sleep(0.1)
        _, alive = psutil.wait_procs([psutil.Process(p) for p in family if psutil.pid_exists(p)], timeout=15)
        assert not alive, [p.cmdline() for p in alive]
    if sig == signal.SIGTERM:
        assert proc.returncode != 0 and "SIGTERM" in err
        assert json.loads((tmp_path / "run" / "sweep.json").read_text())["restored"]
