"""Request records: derived latencies, the JSONL file surviving crashes, interrupted requests marked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loadgen.errors import LoadgenError
from loadgen.records import RecordWriter, RequestRecord, read_records


def record(i: int, **kw) -> RequestRecord:
    return RequestRecord(request_id=f"r{i}", trace_index=i, scheduled_s=100.0, input_tokens=10, output_tokens=5, **kw)


def test_latencies_from_sent_and_from_scheduled():
    r = record(0, sent_s=100.5, first_token_s=100.7, last_token_s=101.5, usage_output_tokens=5, status="ok")
    assert r.schedule_lag_s == pytest.approx(0.5)
    assert r.ttft_s == pytest.approx(0.2) and r.ttft_from_schedule_s == pytest.approx(0.7)
    assert r.e2e_s == pytest.approx(1.0) and r.e2e_from_schedule_s == pytest.approx(1.5)
    assert r.tpot_s == pytest.approx(0.2)
    assert record(1).ttft_s is None and record(1).tpot_s is None


def test_in_flight_requests_are_marked_interrupted(tmp_path):
    w = RecordWriter(tmp_path / "requests.jsonl").open()
    w.write(record(0, status="ok"))
    w.close(in_flight=[record(1, sent_s=100.1), record(2, status="ok")])
    rows = read_records(tmp_path / "requests.jsonl")
    assert [(r["request_id"], r["status"]) for r in rows] == [("r0", "ok"), ("r1", "interrupted")]
    assert rows[1]["schedule_lag_s"] == pytest.approx(0.1)


def test_finished_records_survive_a_killed_process(tmp_path):
    path = tmp_path / "requests.jsonl"
    script = textwrap.dedent(f"""
        import os, signal
        from loadgen.records import RecordWriter, RequestRecord
        w = RecordWriter({str(path)!r}).open()
        for i in range(25):
            w.write(RequestRecord(request_id=f"r{{i}}", trace_index=i, scheduled_s=0.0, input_tokens=1,
                                  output_tokens=1, status="ok"))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == -9
    assert [r["request_id"] for r in read_records(path)] == [f"r{i}" for i in range(25)]


def test_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "requests.jsonl"
    w = RecordWriter(path).open()
    w.write(record(0, status="ok"))
    w.close()
    with path.open("a") as f:
        f.write('{"request_id": "r1", "sta')
    assert [r["request_id"] for r in read_records(path)] == ["r0"]


def test_an_unwritable_path_is_refused_before_any_traffic(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LoadgenError, match="cannot write the request records"):
        RecordWriter(blocker / "requests.jsonl").open()


def test_a_full_disk_is_refused_before_any_traffic():
    with pytest.raises(LoadgenError, match="cannot write the request records to /dev/full: No space left"):
        RecordWriter(Path("/dev/full")).open()


def test_the_write_probe_leaves_no_trace(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text('{"request_id": "old"}\n')
    RecordWriter(path).open().close()
    assert path.read_text() == '{"request_id": "old"}\n'


def test_a_file_with_records_is_appended_to_only_when_asked(tmp_path):
    path = tmp_path / "requests.jsonl"
    RecordWriter(path).open(append=False).close()  # a new file
    path.write_text("\n\n")
    RecordWriter(path).open(append=False).close()  # blank lines are no records
    w = RecordWriter(path).open(append=False)
    w.write(record(0, status="ok", run_id="a"))
    w.close()
    with pytest.raises(LoadgenError, match=r"already holds records: pass --append"):
        RecordWriter(path).open(append=False)
    w = RecordWriter(path).open(append=True)
    w.write(record(0, status="ok", run_id="b"))
    w.close()
    assert [(r["request_id"], r["run_id"]) for r in read_records(path)] == [("r0", "a"), ("r0", "b")]
