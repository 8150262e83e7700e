"""Traces: the real Azure files, malformed rows, generic CSV/JSONL, selection, clipping, names."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from paths import TRACES

from loadgen.errors import TraceError
from loadgen.traces import merge, parse_columns, parse_timestamp, read_trace, resolve_trace

needs_shared = pytest.mark.skipif(not TRACES.is_dir(), reason=f"needs the shared traces beside the checkout ({TRACES})")


@needs_shared
@pytest.mark.parametrize(
    ("name", "n", "rate", "first"),
    [("azure-conv", 19366, 5.53, (374, 44)), ("azure-code", 8819, 2.57, (4808, 10))],
)
def test_the_published_azure_traces(name, n, rate, first):
    t = resolve_trace(name, trace_dir=TRACES)
    assert len(t.requests) == n
    assert t.rate_per_s == pytest.approx(rate, abs=0.01)
    assert (t.requests[0].input_tokens, t.requests[0].output_tokens) == first
    assert t.requests[0].arrival_s == 0.0 and t.requests[0].klass == name.removeprefix("azure-")
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(t.requests, t.requests[1:], strict=False))


def test_sub_microsecond_timestamps():
    a = parse_timestamp("2023-11-16 18:15:46.6805900")
    b = parse_timestamp("2023-11-16 18:15:50.9951690")
    assert b - a == pytest.approx(4.314579, abs=1e-6)
    assert parse_timestamp("12.5") == 12.5


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_naive_timestamps_are_utc_whatever_the_machines_time_zone(monkeypatch):
    # New York's clocks fell back at 02:00 EDT on 2023-11-05: read as local time, 01:30 → 02:30 was two hours
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_timestamp("2023-11-05 02:30:00") - parse_timestamp("2023-11-05 01:30:00") == 3600
        assert parse_timestamp("1970-01-01 00:00:01.5") == 1.5
        assert parse_timestamp("1970-01-01 01:00:00+01:00") == 0  # a time with its zone keeps it
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n1,10,5\n2,ten,5\n",
            r"line 3: ContextTokens 'ten' is not an integer",
        ),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n1,10,5\nyesterday,10,5\n", r"line 3: TIMESTAMP 'yesterday'"),
        ("TIMESTAMP,ContextTokens\n1,10\n", r"line 1: the header has no 'GeneratedTokens'"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n1,10\n", r"line 2: no 'GeneratedTokens'"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n1,10,0\n", r"line 2: token counts must be positive"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", r"has no requests"),
    ],
)
def test_malformed_rows_name_the_line(tmp_path, body, message):
    with pytest.raises(TraceError, match=message):
        read_trace(write(tmp_path, body))


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [("t.jsonl", '{"TIMESTAMP": 0, "ContextTokens": 5, "GeneratedTokens": 5}\n' + "[" * 200_000 + "]" * 200_000,
      r"t.jsonl line 2: nested too deeply to be a row"),
     ("t.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n0,2000000000,8\n",
      r"t.csv line 2: 2000000000 tokens, more than any model's context \(10000000\): are the columns right\?")],
)  # fmt: skip
def test_rows_no_request_can_be_are_one_line_not_a_traceback_or_a_prompt_of_billions(tmp_path, name, body, message):
    with pytest.raises(TraceError, match=message):
        read_trace(write(tmp_path, body, name))


def test_generic_jsonl_with_a_column_mapping(tmp_path):
    rows = [{"t": 5.0, "in": 100, "out": 7}, {"t": 2.0, "in": 50, "out": 3}]
    p = write(tmp_path, "\n".join(json.dumps(r) for r in rows) + "\n", "x.jsonl")
    t = read_trace(p, columns={"timestamp": "t", "input": "in", "output": "out"})
    assert [(r.arrival_s, r.input_tokens, r.output_tokens) for r in t.requests] == [(0.0, 50, 3), (3.0, 100, 7)]
    bad = write(tmp_path, '{"t": 1, "in": 1, "out": 1}\n{oops\n', "bad.jsonl")
    with pytest.raises(TraceError, match="line 2: not JSON"):
        read_trace(bad, columns={"timestamp": "t", "input": "in", "output": "out"})


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("excel.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\r\n0,10,5\r\n1.5,20,6\r\n"),
        ("powershell.jsonl", '{"TIMESTAMP": 0, "ContextTokens": 10, "GeneratedTokens": 5}\n'
                             '{"TIMESTAMP": 1.5, "ContextTokens": 20, "GeneratedTokens": 6}\n'),
    ],
)  # fmt: skip
def test_a_byte_order_mark_is_read_past(tmp_path, name, body):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())  # what Excel's "CSV UTF-8" and PowerShell write
    t = read_trace(path)
    assert [(r.arrival_s, r.input_tokens, r.output_tokens) for r in t.requests] == [(0.0, 10, 5), (1.5, 20, 6)]


def test_columns_name_any_files_fields(tmp_path):
    p = write(tmp_path, "when,prompt_len,output_len\n3,100,7\n1,50,3\n", "vllm.csv")
    columns = parse_columns("timestamp=when, input=prompt_len,output=output_len")
    t = resolve_trace(str(p), columns=columns)
    assert [(r.arrival_s, r.input_tokens, r.output_tokens) for r in t.requests] == [(0.0, 50, 3), (2.0, 100, 7)]
    assert parse_columns("input=n_in") == {"timestamp": "TIMESTAMP", "input": "n_in", "output": "GeneratedTokens"}
    with pytest.raises(TraceError, match=r"line 1: the header has no 'TIMESTAMP', .* \(it has: when, prompt_len"):
        resolve_trace(str(p))
    for bad in ("", "timestamp", "start=t", "input=", "input=a,input=b"):
        with pytest.raises(TraceError, match=r"--columns .*KEY=COLUMN"):
            parse_columns(bad)
    with pytest.raises(TraceError, match="--columns is for a CSV/JSONL path"):
        resolve_trace("azure-conv", columns=columns)


def test_a_mistyped_trace_name_lists_the_named_ones():
    with pytest.raises(TraceError, match=r"azure-cnv: no such trace file, nor a named trace \(the named ones: "
                       r"azure-conv, azure-code\) — did you mean azure-conv\?"):  # fmt: skip
        resolve_trace("azure-cnv")


def test_selection_and_clipping(tmp_path):
    body = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i},{100 * (i + 1)},{50}\n" for i in range(10))
    t = read_trace(write(tmp_path, body))
    assert len(t.first(3).requests) == 3
    w = t.window(2.0, 3.0)
    assert [r.arrival_s for r in w.requests] == [0.0, 1.0, 2.0]
    clipped = t.fit(512, "clip")
    assert clipped.overlong.requests == 6  # inputs of 500+ do not fit with 50 outputs
    assert len(clipped.requests) == 10 and all(r.input_tokens + r.output_tokens <= 512 for r in clipped.requests)
    assert clipped.requests[-1].output_tokens == 50  # the output kept, the input cut
    assert clipped.requests[-1].clipped_from == (1000, 50) and clipped.requests[0].clipped_from is None


def test_overlong_requests_are_dropped_by_default_and_counted(tmp_path):
    body = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i},{100 * (i + 1)},{50}\n" for i in range(10))
    t = read_trace(write(tmp_path, body))
    dropped = t.fit(512)
    assert [r.input_tokens for r in dropped.requests] == [100, 200, 300, 400]
    o = dropped.overlong
    assert (o.policy, o.requests, o.of_requests) == ("drop", 6, 10)
    assert o.tokens == sum(100 * (i + 1) + 50 for i in range(4, 10)) and o.of_tokens == sum(
        100 * (i + 1) + 50 for i in range(10)
    )
    assert "6 of 10 requests (60.0 %" in o.describe() and "dropped" in o.describe()
    first = t.fit(512, first=3)  # the first three that fit: only three requests examined
    assert len(first.requests) == 3 and first.overlong.of_requests == 3 and first.overlong.requests == 0
    with pytest.raises(TraceError, match=r"6 of 10 requests .* exceed the 512-token context: refused"):
        t.fit(512, "error")
    with pytest.raises(TraceError, match="unknown overlong policy 'trim'"):
        t.fit(512, "trim")


def test_a_named_trace_offline_says_what_to_do(tmp_path):
    with pytest.raises(TraceError, match=r"azure-conv is not in .*downloading .* failed .*--trace-dir"):
        resolve_trace(
            "azure-conv", trace_dir=tmp_path, cache_dir=tmp_path / "cache", download_base="http://127.0.0.1:9"
        )


def test_merge_orders_by_arrival(tmp_path):
    a = read_trace(write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n0,1,1\n2,1,1\n", "a.csv"), klass="conv")
    b = read_trace(write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n0,2,2\n1,2,2\n", "b.csv"), klass="code")
    m = merge([a, b], "both")
    assert [(r.arrival_s, r.klass) for r in m.requests] == [(0.0, "conv"), (0.0, "code"), (1.0, "code"), (2.0, "conv")]
