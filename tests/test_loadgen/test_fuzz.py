"""Malformed input, fuzzed with Hypothesis: SSE streams and trace files give a clear error or a result,
never a crash or a hang. Derandomized, so the suite stays deterministic."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen.client import _decode
from loadgen.errors import TraceError
from loadgen.sse import SSEParser
from loadgen.traces import read_trace

FUZZ = settings(derandomize=True, max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip

# Streams built from the pieces that matter to the parser, so the fuzzer reaches its branches.
PIECES = st.sampled_from([b"data:", b"data: ", b"event: x", b": comment", b"\n", b"\r", b"\r\n", b"\n\n",
                          b"{}", b"[DONE]", b"\xff\xfe", b"\x00", b"id: 1", b"data", b" ", b"data: {}\n\n",
                          b"data: caf\xc3\xa9\n\n", b"data: x\r\n\r\n"])  # fmt: skip
STREAMS = st.lists(st.one_of(PIECES, st.binary(max_size=20)), max_size=40).map(b"".join)


def feed_in(stream: bytes, cuts: list[int]) -> tuple[list[str], bool]:
    parser, events, last = SSEParser(), [], 0
    for cut in [*sorted({min(c, len(stream)) for c in cuts}), len(stream)]:
        events += parser.feed(stream[last:cut])
        last = cut
    return events, parser.pending


@FUZZ
@given(STREAMS, st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_sse_never_raises_and_any_chunking_gives_the_same_events(stream, cuts):
    whole = feed_in(stream, [])
    assert feed_in(stream, cuts) == whole
    assert all(isinstance(e, str) for e in whole[0])


class LineByLineSSE:
    """The parser as it was to 0.1.0 (every line decoded, then split at its colon): what ``SSEParser``'s fast paths
    (a whole one-line event in one chunk; fields matched on bytes) must give, event for event."""

    def __init__(self) -> None:
        self._buf, self._data, self._cr_pending = b"", [], False

    def feed(self, chunk: bytes) -> list[str]:
        if self._cr_pending and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._cr_pending = chunk.endswith(b"\r")
        self._buf += chunk
        events: list[str] = []
        lines = self._buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._buf = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if field == "data":
                self._data.append(value[1:] if value.startswith(" ") else value)
        return events

    @property
    def pending(self) -> bool:
        return bool(self._buf or self._data)


@FUZZ
@given(STREAMS, st.lists(st.integers(min_value=0, max_value=400), max_size=10), st.booleans())
def test_sse_gives_what_the_line_by_line_parser_gave(stream, cuts, as_bytearray):
    events = [i + 2 for i in range(len(stream)) if stream.startswith(b"\n\n", i)]  # reaches the one-event path
    for split in (cuts, events):
        ours, theirs = SSEParser(), LineByLineSSE()
        last = 0
        for cut in [*sorted({min(c, len(stream)) for c in split}), len(stream)]:
            piece = stream[last:cut]  # fasthttp hands on the C parser's bytearrays
            assert ours.feed(bytearray(piece) if as_bytearray else piece) == theirs.feed(piece)
            assert ours.pending == theirs.pending
            last = cut


@FUZZ
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=30), min_size=1, max_size=8))
def test_sse_data_lines_round_trip(values):
    clean = [v.replace("\r", "").replace("\n", "") for v in values]
    stream = "".join(f"data: {v}\n\n" for v in clean).encode()
    events, pending = feed_in(stream, [3, 7, 11])
    assert events == clean and not pending


CELLS = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "1",
            "-5",
            "12",
            "1e3",
            "nan",
            "inf",
            "2023-11-16 18:15:46.6805900",
            "2023-13-45 99:99:99",
            "2023-11-16 18:15:46.x",
            "1.5",
            "0x10",
            " 7 ",
        ]
    ),
    st.text(max_size=12),
)


@FUZZ
@given(st.lists(st.lists(CELLS, min_size=0, max_size=4), max_size=6), st.binary(max_size=16))
def test_a_malformed_csv_trace_is_a_trace_error(tmp_path, rows, junk):
    path = tmp_path / "trace.csv"
    body = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(",".join(r) + "\n" for r in rows)
    path.write_bytes(body.encode("utf-8", errors="surrogateescape") + junk)
    try:
        trace = read_trace(path)
    except TraceError as err:
        assert str(path) in str(err) and "\n" not in str(err)
        return
    assert trace.requests and all(r.input_tokens >= 1 and r.output_tokens >= 1 for r in trace.requests)
    assert all(math.isfinite(r.arrival_s) and r.arrival_s >= 0 for r in trace.requests)


@FUZZ
@given(st.lists(st.one_of(st.just('{"TIMESTAMP": 1, "ContextTokens": 3, "GeneratedTokens": 2}'), st.text(max_size=40),
                          st.binary(max_size=12).map(lambda b: b.decode("latin-1"))), max_size=6))  # fmt: skip
def test_a_malformed_jsonl_trace_is_a_trace_error(tmp_path, lines):
    path = tmp_path / "trace.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", errors="surrogateescape"))
    try:
        trace = read_trace(path)
    except TraceError as err:
        assert str(path) in str(err) and "\n" not in str(err)
        return
    assert trace.requests


def test_a_binary_file_is_a_trace_error(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_bytes(b"TIMESTAMP,ContextTokens,GeneratedTokens\n\x00\xff\xfe,1,2\n")
    with pytest.raises(TraceError, match=r"trace\.csv"):
        read_trace(path)


JSONISH = st.one_of(
    st.text(max_size=20),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                 max_leaves=8).map(json.dumps),
)  # fmt: skip


@FUZZ
@given(st.tuples(st.sampled_from(["", " ", "\n", "\ufeff"]), JSONISH, st.sampled_from(["", " ", "\t", "x", "}"])))
def test_the_clients_json_decode_is_json_loads(parts):
    text = "".join(parts)
    try:
        expected = json.loads(text)
    except json.JSONDecodeError:
        with pytest.raises(json.JSONDecodeError):
            _decode(text)
        return
    assert _decode(text) == expected
