"""The offline runner on the real vLLM CPU build: 32 requests, exact tokens, estimated energy, J/token."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_offline_runner_on_32_requests(tmp_path):
    out = tmp_path / "offline.json"
    cmd = [
        sys.executable, "-m", "joulebench", "offline", "--model", "tiny", "--model-cache", str(tmp_path),
        "--batch-sizes", "8,32", "--num-requests", "32", "--input-tokens", "64", "--output-tokens", "16",
        "--max-model-len", "1024", "--source", "estimate", "--idle-max-s", "4", "--out", str(out),
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["weights"] == "dummy" and record["preset"] == "tiny"
    assert record["energy"] == {"kind": "host", "sources": ["estimate"], "estimated": True}
    assert record["engine"]["max_num_seqs"] == 32
    assert [r["batch_size"] for r in record["results"]] == [8, 32]
    for r in record["results"]:
        assert (r["requests"], r["input_tokens"], r["output_tokens"]) == (32, 32 * 64, 32 * 16)
        assert r["energy_j"] > 0 and r["duration_s"] > 0
        assert r["j_per_output_token"] == pytest.approx(r["energy_j"] / (32 * 16))
        assert r["dynamic_energy_j"] <= r["energy_j"]
    assert "ESTIMATED" in run.stdout


def test_bins_are_measured_one_full_batch_each_for_the_estimator(tmp_path):
    from server.binning import count_bins, estimate, measured_bins

    out = tmp_path / "bins.json"
    cmd = [
        sys.executable, "-m", "joulebench", "offline", "--model", "tiny", "--model-cache", str(tmp_path),
        "--bins", "32x8,64x16", "--bin-batch", "4", "--max-model-len", "1024", "--source", "estimate",
        "--idle-max-s", "4", "--out", str(out),
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [(r["bin"], r["requests"], r["input_tokens"], r["output_tokens"]) for r in results] == [
        ([32, 8], 4, 4 * 32, 4 * 8),
        ([64, 16], 4, 4 * 64, 4 * 16),
    ]
    measured = measured_bins(results)
    est = estimate(count_bins([(20, 5)] * 6 + [(50, 10)] * 2), measured)
    assert est.energy_j == pytest.approx(6 / 4 * results[0]["energy_j"] + 2 / 4 * results[1]["energy_j"])


def test_a_bad_bin_is_one_line():
    run = subprocess.run(
        [sys.executable, "-m", "joulebench", "offline", "--bins", "100x7"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "100x7 is not a bin" in run.stderr


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("not json", "not a request-set file"),
        ('{"sets": [{"batch_size": 0, "requests": [[1, 1]]}]}', "must be positive"),
        ('{"sets": [{"batch_size": 2, "requests": [[1]]}]}', "not a request-set file"),
        ('{"sets": []}', "no request sets"),
    ],
)
def test_a_bad_request_set_file_is_one_line(tmp_path, content, says):
    path = tmp_path / "sets.json"
    path.write_text(content)
    run = subprocess.run(
        [sys.executable, "-m", "joulebench", "offline", "--requests", str(path)], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert says in run.stderr
