"""``joulebench compare`` end to end: the real monitor (estimate source), vLLM's CPU build serving the
tiny preset, a real replay and a real offline run, on a small trace in the Azure format."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest
from synthetic import azure_trace

pytestmark = pytest.mark.integration


def test_compare_writes_a_report_and_leaves_no_process(tmp_path):
    trace = azure_trace(tmp_path / "trace.csv")
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "joulebench", "compare", "--model", "tiny", "--model-cache", str(tmp_path / "models"),
        "--max-model-len", "1024", "--max-num-seqs", "8", "--trace", str(trace), "--rates", "1", "--warmup-s", "2",
        "--window-s", "8", "--source", "estimate", "--idle-max-s", "6", "--bin-batch", "2", "--out", str(run_dir),
    ]  # fmt: skip
    before = {p.pid for p in psutil.process_iter()}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["estimated"] and summary["config"]["weights"] == "dummy" and summary["config"]["complete"]
    (rate,) = summary["rates"]
    x = rate["repeats"][0]
    assert x["statuses"] == {"ok": x["requests"]} and x["tokens"]["output"] > 0
    assert x["energy_j"] > 0 and x["j_per_token"] > 0
    a = x["attribution"]
    for view in ("attributional", "dynamic"):
        assert a[view]["requests_j"] + a[view]["idle_j"] == pytest.approx(a["replay_energy_j"], rel=1e-9)
    assert rate["offline"]["j_per_token"] > 0 and rate["premium"]["ratio"] > 0
    assert "gap_percent" in x["binning"]
    assert "R²" in summary["weights"]["fit"]
    offline = json.loads((run_dir / "offline" / "offline.json").read_text())
    labels = [r["label"] for r in offline["results"]]
    assert labels[:3] == ["rate 1x #0", "fit prefill-heavy", "fit decode-heavy"]
    assert any(label.startswith("bin ") for label in labels)
    assert "ESTIMATED" in (run_dir / "report.md").read_text()
    assert (run_dir / "report.html").stat().st_size > 10_000
    config = json.loads((run_dir / "config.json").read_text())
    assert config["command"][:2] == ["joulebench", "compare"] and config["devices"][0]["source"] == "estimate"

    psutil.wait_procs([p for p in psutil.process_iter() if p.pid not in before], timeout=10)
    left = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if p.pid not in before and any(str(run_dir) in c or "vllm" in c for c in p.info["cmdline"] or [])
    ]
    assert not left, left


def test_a_bad_rate_list_is_one_line():
    run = subprocess.run(
        [sys.executable, "-m", "joulebench", "compare", "--rates", "1,x"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "--rates" in run.stderr
