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
        "--max-model-len", "1024", "--source", "estimate", "--idle-s", "1", "--out", str(out),
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
