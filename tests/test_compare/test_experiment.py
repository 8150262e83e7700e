"""``joulebench compare`` end to end: the real monitor (estimate source), vLLM's CPU build serving the
tiny preset, a real replay and a real offline run, on a small trace in the Azure format."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from servers import CompareRun

pytestmark = pytest.mark.integration


def test_compare_writes_a_report_and_leaves_no_process(tmp_path):
    run = CompareRun(tmp_path, "--max-num-seqs", "4", "--reference-batches", "3", "--counterfactual", "2",
                     "--profile", "on", "--profile-s", "2", rates="0.5,1", requests=24)  # fmt: skip
    run.wait_until("the end", lambda: run.proc.poll() is not None, timeout_s=900)
    code, err = run.finish()
    assert code == 0, err[-4000:]
    run_dir = run.run_dir

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["estimated"] and summary["config"]["weights"] == "dummy" and summary["config"]["complete"]
    assert summary["workload"]["identical_across_rates"] and summary["workload"]["segments"][0]["requests"] == 24
    assert [r["label"] for r in summary["rates"]] == ["0.5x", "1x"]
    for rate in summary["rates"]:
        (x,) = rate["segments"]
        assert x["statuses"] == {"ok": 24} and x["tokens"]["output"] > 0
        assert x["window"]["duration_s"] > 0 and x["energy_j"] > 0 and x["j_per_output_token"] > 0
        assert x["verdict"]["valid"] or x["verdict"]["reasons"]  # a verdict, with its reasons when not valid
        assert x["prefill"]["method"].startswith("the server's own timing")  # vLLM's histograms were polled
        a = x["attribution"]
        for view in ("attributional", "dynamic"):
            assert a[view]["requests_j"] + a[view]["unattributed_j"] == pytest.approx(a["replay_energy_j"], rel=1e-9)
        assert x["same_requests_premium"] > 0
        # a premium wherever the segment has a valid reference (on two cores a short one may miss its mix)
        assert (x["premium"] is not None and x["premium"] > 0) == bool(summary["reference"]["segments"])
    measured = summary["reference"]["online_segments"] + summary["reference"]["offline_segments"]
    assert len(measured) == 2  # both measured, each with its verdict
    for ref in measured:
        assert ref["running_max"] == 4 and ref["j_per_output_token"] > 0 and ref["output_tokens"] > 0
        assert ref["valid"] or ref["reasons"]
        assert abs(ref["mix"]["off"]) < 1 and ref["halves"]["prefill_per_decode_token"] is not None
    assert "gap_percent" in summary["rates"][0]["segments"][0]["binning"]
    offline = json.loads((run_dir / "offline" / "offline.json").read_text())
    labels = [r["label"] for r in offline["results"]]
    assert labels[:4] == ["same requests s0", "reference s0", "check prefill-heavy", "check decode-heavy"]
    assert any(label.startswith("bin ") for label in labels)
    assert (run_dir / "online" / "1x-0" / "polls.jsonl").stat().st_size > 0
    # the counterfactual: half the requests left out, ABBA; the ratio is what the attribution charged them over
    # what leaving them out saved (how close it is to 1 is benchmarks/counterfactual.py's to measure: on this
    # machine's CPU estimate it moves with whatever else runs)
    c = summary["counterfactual"]
    assert c["order"] == "ABBA" and c["left_out"] == 12 and len(c["energy_a_j"]) == len(c["energy_b_j"]) == 2
    delta = (sum(c["energy_a_j"]) - sum(c["energy_b_j"])) / 2
    assert c["delta_j"] == pytest.approx(delta, rel=1e-9) and c["delta_uncertainty_j"] > 0
    assert c["attributed_dynamic_j"] > 0
    if c["delta_j"] > 0:
        assert c["ratio"] == pytest.approx(c["attributed_dynamic_j"] / c["delta_j"], rel=1e-9), c
    else:
        assert c["ratio"] is None, c  # nothing saved: no ratio
    assert (
        "ESTIMATED" in (run_dir / "report.md").read_text()
        and "attributed to vLLM's processes" in (run_dir / "report.md").read_text()
    )
    assert (run_dir / "report.html").stat().st_size > 10_000
    config = json.loads((run_dir / "config.json").read_text())
    assert config["command"][:2] == ["joulebench", "compare"] and config["devices"][0]["source"] == "estimate"
    # the profile: closed loops of 1 and 2 in flight (below --max-num-seqs 4, whose loop is the reference), fitted
    # with the reference into profile.json, and every rate predicted from it beside the measured
    p = summary["prediction"]
    assert {"profile-1", "profile-2"} <= set(p["runs"]) and p["profile"]["max_num_seqs"] == 4
    assert json.loads((run_dir / "profile.json").read_text()) == p["profile"]
    assert [x["label"] for x in p["loads"]] == ["0.5x", "1x"]
    for x in p["loads"]:
        o = x["j_per_output_token"]
        assert o["predicted"] > 0 and o["interval"]["low"] <= o["interval"]["high"] and o["little"] > 0
    assert "## Predicted beside measured" in (run_dir / "report.md").read_text()
    cmd = [sys.executable, "-m", "joulebench", "predict", "--profile", str(run_dir), "--trace",
           config["options"]["trace"], "--requests", "24", "--loads", "0.5", "--replicates", "2", "--out",
           str(tmp_path / "predicted")]  # fmt: skip
    predicted = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert json.loads((tmp_path / "predicted" / "predict.json").read_text())["rows"][0]["load"] == pytest.approx(0.5)

    run.assert_no_process_left()


def test_a_bad_rate_list_is_one_line():
    run = subprocess.run(
        [sys.executable, "-m", "joulebench", "compare", "--rates", "1,x"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "--rates" in run.stderr
