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
from paths import LOCUSTFILE
from servers import mock_server

from loadgen.records import read_records

pytestmark = pytest.mark.integration


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
        (["--records", "/dev/full"], "cannot write the request records to /dev/full: No space left on device"),
    ],
)
def test_bad_input_is_one_line(tmp_path, trace, args, message):
    with mock_server() as url:
        cmd = replay(url, tmp_path / "r.jsonl", "--trace", trace, *args)
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert message in run.stderr


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_workers_split_one_schedule(tmp_path, trace):
    plugin = LOCUSTFILE
    records = tmp_path / "requests.jsonl"
    port = free_port()
    common = [sys.executable, "-m", "locust", "-f", str(plugin), "--headless"]
    with mock_server("--ttft-ms", "5", "--itl-ms", "1") as url:
        jb = ["--jb-trace", trace, "--jb-process", "constant", "--jb-rate", "30", "--jb-duration", "3",
              "--jb-records", str(records)]  # fmt: skip
        master = subprocess.Popen(
            [*common, "--master", "--master-bind-port", str(port), "--expect-workers", "2", "-u", "2", "-r", "2",
             "-t", "12s", "--host", url, *jb],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        workers = [
            subprocess.Popen(
                [*common, "--worker", "--master-port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for _ in range(2)
        ]
        out, _ = master.communicate(timeout=90)
        for w in workers:
            w.wait(timeout=30)
    assert master.returncode == 0, out[-3000:]
    files = sorted(tmp_path.glob("requests.worker*.jsonl"))
    assert [f.name for f in files] == ["requests.worker0.jsonl", "requests.worker1.jsonl"]
    per_worker = [read_records(f) for f in files]
    assert all(len(rows) == 45 for rows in per_worker)
    ids = [r["request_id"] for rows in per_worker for r in rows]
    assert sorted(ids, key=int) == [str(i) for i in range(90)]  # every request once, none twice
    assert {r["status"] for rows in per_worker for r in rows} == {"ok"}
    starts = [min(r["scheduled_s"] for r in rows) for rows in per_worker]
    assert abs(starts[0] - starts[1]) == pytest.approx(1 / 30, abs=1e-6)  # one schedule, one clock
