"""Headless replay (Locust as a library) against the real mock server: counts, records, Ctrl-C, bad input."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import mock_server

from loadgen.records import read_records

pytestmark = pytest.mark.integration

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"


@pytest.fixture
def trace(tmp_path) -> str:
    """A small trace of its own, so the test does not depend on the shared files."""
    p = tmp_path / "trace.csv"
    p.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i * 0.1},{50 + i},{5 + i % 7}\n" for i in range(30))
    )
    return str(p)


def replay(url: str, records: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "joulebench", "replay", "--target", url, "--records", str(records), *args]


def test_replays_a_schedule_and_records_every_request(tmp_path, trace):
    records, summary = tmp_path / "run" / "requests.jsonl", tmp_path / "summary.json"
    with mock_server("--ttft-ms", "10", "--itl-ms", "1") as url:
        run = subprocess.run(
            replay(
                url,
                records,
                "--trace",
                trace,
                "--process",
                "constant",
                "--rate",
                "20",
                "--duration",
                "2",
                "--summary",
                str(summary),
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = read_records(records)
    assert len(rows) == 40 and {r["status"] for r in rows} == {"ok"}
    assert all(r["usage_output_tokens"] == r["output_tokens"] for r in rows)
    s = json.loads(summary.read_text())
    assert s["requests"] == 40 and s["achieved_rate_per_s"] == pytest.approx(20.0, rel=0.05)
    assert s["schedule_lag_s"]["p99"] < 0.05
    assert "40/40 ok" in run.stdout


def test_the_trace_own_timestamps_scaled(tmp_path, trace):
    records = tmp_path / "requests.jsonl"
    with mock_server("--ttft-ms", "1", "--itl-ms", "0") as url:
        run = subprocess.run(replay(url, records, "--trace", trace, "--rate", "2", "--duration", "60"),
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    rows = sorted(read_records(records), key=lambda r: r["scheduled_s"])
    assert len(rows) == 30
    gaps = [b["scheduled_s"] - a["scheduled_s"] for a, b in itertools.pairwise(rows)]
    assert gaps == pytest.approx([0.05] * 29, abs=1e-6)  # 0.1 s apart in the trace, twice as fast


def test_ctrl_c_keeps_what_finished_and_marks_what_was_in_flight(tmp_path, trace):
    records = tmp_path / "requests.jsonl"
    with mock_server("--ttft-ms", "10", "--itl-ms", "100") as url:
        proc = subprocess.Popen(
            replay(url, records, "--trace", trace, "--process", "constant", "--rate", "20", "--duration", "5"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(3.0)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    rows = read_records(records)
    statuses = {r["status"] for r in rows}
    assert statuses <= {"ok", "interrupted"} and "interrupted" in statuses and "ok" in statuses
    assert len({r["request_id"] for r in rows}) == len(rows)  # none written twice


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "http://127.0.0.1:9"], "no OpenAI server answers at http://127.0.0.1:9"),
        (["--trace", "/nonexistent.csv"], "/nonexistent.csv: no such trace file"),
        (["--process", "zigzag"], "unknown arrival process 'zigzag'"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    with mock_server() as url:
        cmd = replay(url, tmp_path / "r.jsonl", *args)
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert message in run.stderr
