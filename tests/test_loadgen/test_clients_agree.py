"""The two HTTP clients (``CLIENTS``) give the same record for the same reply, field by field; only the times
differ (whether each is set must not). Replies from the real mock server (every fault it has, HTTPS), from a
server that sends bytes as given (``ScriptedServer``: heads and chunks cut short, malformed chunking, what
llhttp refuses and ``http.client`` takes), and fuzzed event streams framed and cut at random."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import mock_server, scripted_server, self_signed_certificate

from loadgen.client import CLIENTS, ClientConfig, request_body, send
from loadgen.fasthttp import FastReply, chunk_boundary
from loadgen.records import RequestRecord

pytestmark = pytest.mark.integration

STALL_S = 0.3  # the timeout where a reply stalls


def comparable(record: RequestRecord) -> dict[str, Any]:
    """The record's fields; each time replaced by whether it is set, the chunks by their token counts (and the
    mock's id and creation second of each reply, which an error may quote, by placeholders)."""
    out = record.to_json()
    out["error"] = re.sub(r'(chat)?cmpl-[0-9a-f]{16}|"created": \d+', "X", out["error"])
    for key, value in out.items():
        if key.endswith("_s"):
            out[key] = value is not None
    out["chunks"] = [n for _, n in record.chunks]
    return out


def records(url: str, n_out: int = 3, timeout_s: float = 10.0, chat: bool = False, **extra: Any) -> list[dict]:
    """The same request sent over each client, its records made comparable. A reply that stalls is given
    ``STALL_S``; others 10 s, so that a busy machine does not time one client out and not the other."""
    out = []
    for client in CLIENTS:
        config = ClientConfig(base_url=url, model="mock", timeout_s=timeout_s, chat=chat, client=client)
        record = RequestRecord("r", 0, scheduled_s=time.time(), input_tokens=3, output_tokens=n_out)
        out.append(comparable(send(config, record, {**request_body(config, [2, 3, 4], n_out), **extra})))
    return out


def assert_same(got: list[dict]) -> dict:
    fast, stdlib = got
    assert {k: v for k, v in fast.items() if v != stdlib[k]} == {}, stdlib
    return fast


@pytest.fixture(scope="module")
def mock():
    with mock_server("--ttft-ms", "5", "--itl-ms", "1") as url:
        yield url


@pytest.mark.parametrize(
    ("fault", "status"),
    [("", "ok"), ("status:500", "http_error"), ("status:429", "http_error"), ("stall", "timeout"),
     ("disconnect", "disconnect"), ("garbage", "bad_stream"), ("not_object", "bad_stream"),
     ("bad_usage", "bad_stream"), ("short", "short_output"), ("no_stream", "not_streaming"),
     ("deep_json", "client_error")],
)  # fmt: skip
def test_the_mock_servers_replies_give_the_same_records(mock, fault, status):
    for chat in (False, True):
        timeout_s = STALL_S if fault == "stall" else 10.0
        record = assert_same(records(mock, 10, timeout_s, chat, **({"mock_fault": fault} if fault else {})))
        assert record["status"] == status


def test_https_gives_the_same_records(tmp_path, monkeypatch):
    cert, key = self_signed_certificate(tmp_path)
    with mock_server("--ttft-ms", "1", "--itl-ms", "0", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)) as u:
        assert assert_same(records(u))["error"].startswith("SSLCertVerificationError: ")  # not trusted yet
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert assert_same(records(u, 5))["status"] == "ok"
        assert assert_same(records(u, 5, STALL_S, mock_fault="stall"))["status"] == "timeout"


def test_nobody_listening_gives_the_same_record():
    assert assert_same(records("http://127.0.0.1:9"))["error"].startswith("ConnectionRefusedError: ")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(k: int) -> bytes:
    body = {"choices": [{"index": 0, "text": " tok"}], "usage": {"prompt_tokens": 3, "completion_tokens": k}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


SSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
CHUNKED = SSE + b"Transfer-Encoding: chunked\r\n\r\n"
EVENTS = [chunk(event(k)) for k in (1, 2, 3)] + [chunk(b"data: [DONE]\n\n"), b"0\r\n\r\n"]
WHOLE = b"".join([event(3), b"data: [DONE]\n\n"])

#: name → (the bytes sent after the request, in order; a float is a pause, None holds the connection) and the
#: status both clients must give.
REPLIES: dict[str, tuple[list[bytes | float | None], str]] = {
    "good": ([CHUNKED, *EVENTS], "ok"),
    "each event its own read": ([CHUNKED, *[x for e in EVENTS for x in (e, 0.01)]], "ok"),
    "an interim 100 Continue first": ([b"HTTP/1.1 100 Continue\r\n\r\n", CHUNKED, *EVENTS], "ok"),
    "an interim 103, which http.client takes as the reply": (
        [b"HTTP/1.1 103 Early Hints\r\n\r\n", CHUNKED, *EVENTS],
        "http_error",
    ),
    "a body the close delimits": ([SSE + b"\r\n", event(1), event(2), event(3), b"data: [DONE]\n\n"], "ok"),
    "a Content-Length body": ([SSE + b"Content-Length: %d\r\n\r\n" % len(WHOLE), WHOLE], "ok"),
    "bare LF line ends in the head": ([CHUNKED.replace(b"\r\n", b"\n"), *EVENTS], "ok"),
    "bytes after the reply's end": ([CHUNKED, *EVENTS, b"HTTP/1.1 garbage\r\n\r\n"], "ok"),
    "a repeated Content-Type": (
        [SSE + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", *EVENTS],
        "not_streaming",
    ),
    "a transfer coding http.client does not decode": (
        [SSE + b"Transfer-Encoding: gzip, chunked\r\n\r\n", *EVENTS],
        "ok",
    ),
    "closed before the head": ([], "disconnect"),
    "closed in the status line": ([b"HTTP/1.1 200"], "disconnect"),
    "closed in the headers": ([SSE], "disconnect"),
    "a status that is not a number": ([b"HTTP/1.1 abc OK\r\n\r\n"], "disconnect"),
    "not HTTP": ([b"data: x\n\n"], "disconnect"),
    "no byte of the head": ([None], "timeout"),
    "silence mid-stream": ([CHUNKED, EVENTS[0], None], "timeout"),
    "cut in a chunk's size": ([CHUNKED, EVENTS[0], b"4"], "disconnect"),
    "cut in a chunk's data": ([CHUNKED, EVENTS[0], EVENTS[1][:20]], "disconnect"),
    "cut before a chunk's CRLF": ([CHUNKED, EVENTS[0][:-2]], "disconnect"),
    "cut in a chunk's CRLF": ([CHUNKED, EVENTS[0][:-1]], "disconnect"),
    "cut in the last chunk's trailer": ([CHUNKED, *EVENTS[:3], b"0\r\n"], "disconnect"),
    "a chunk size that is not hex": ([CHUNKED, EVENTS[0], b"zz\r\nhello\r\n"], "disconnect"),
    "a chunk size as 0x…": ([CHUNKED, *[b"0x" + e for e in EVENTS[:-1]], b"0\r\n\r\n"], "ok"),
    "a chunk's CRLF two other bytes": ([CHUNKED, EVENTS[0][:-2] + b"XX", *EVENTS[1:]], "ok"),
    "a Content-Length body cut short": ([SSE + b"Content-Length: 1000\r\n\r\n", event(1)], "disconnect"),
    "a body the close delimits, cut in an event": ([SSE + b"\r\n", event(1), event(2)[:10]], "disconnect"),
    "no [DONE]": ([CHUNKED, EVENTS[0], b"0\r\n\r\n"], "disconnect"),
    "CRLF events, [DONE] split across chunks": (
        [CHUNKED, chunk(event(3).replace(b"\n", b"\r\n")), chunk(b"data: [DONE]\r"), chunk(b"\n\r\n"), b"0\r\n\r\n"],
        "ok",
    ),
    # Past fasthttp's KEEP_BYTES (64 kB): the bytes kept for http.client are trimmed to a chunk boundary.
    "a long stream, then cut before a chunk's CRLF": (
        [CHUNKED, *[chunk(event(1))] * 800, EVENTS[1][:-2]],
        "disconnect",
    ),
    "a long stream with a 0x size and a chunk's CRLF two other bytes late in it": (
        [CHUNKED, *[chunk(event(1))] * 600, b"0x" + EVENTS[1][:-2] + b"XX", *[chunk(event(2))] * 100, *EVENTS[2:]],
        "ok",
    ),
    "a long stream, then a chunk size that is not hex": (
        [CHUNKED, *[chunk(event(1)) + b"".join([chunk(b": keep-alive\n")] * 3)] * 500, b"zz\r\nx\r\n"],
        "disconnect",
    ),
    "an HTTP error with a long body": (
        [b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n", chunk(b"x" * 700), b"0\r\n\r\n"],
        "http_error",
    ),
    "an HTTP error with no body": ([b"HTTP/1.1 429 Too Many\r\nContent-Length: 0\r\n\r\n"], "http_error"),
    "an HTTP error body cut short": ([b"HTTP/1.1 503 Oops\r\nContent-Length: 100\r\n\r\nshort"], "http_error"),
    "an HTTP error's chunk cut short": (
        [b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n", chunk(b"bad")[:5]],
        "disconnect",
    ),
    "an HTTP error's chunking broken after its first 500 bytes": (
        [b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n", chunk(b"y" * 600) + b"zz\r\n"],
        "http_error",
    ),
    "one JSON body": (
        [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n", b'{"usage": {"a": 1}}\n'],
        "not_streaming",
    ),
    "one JSON body, its chunk cut short": (
        [
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n",
            chunk(b'{"a"'),
            b"5\r\n1",
        ],
        "disconnect",
    ),
}


@pytest.fixture(scope="module")
def scripted():
    with scripted_server() as server:
        yield server


def test_both_send_the_same_request(scripted):
    url = scripted.serve(REPLIES["good"][0])
    assert assert_same(records(url))["status"] == "ok"
    fast, stdlib = scripted.heads[-2:]
    assert fast == stdlib and b"\r\nAccept-Encoding: identity\r\n" in fast


@pytest.mark.parametrize("name", list(REPLIES))
def test_adversarial_replies_give_the_same_records(scripted, name):
    script, status = REPLIES[name]
    timeout_s = STALL_S if None in script else 10.0
    assert assert_same(records(scripted.serve(script), timeout_s=timeout_s))["status"] == status


# Event streams: mostly good events, among the pieces that matter to the SSE parser and the client's checks, maybe
# ending in [DONE]; framed in HTTP chunks cut at random, or delimited by the close; some cut short.
GOOD = st.sampled_from([event(1), event(2), event(3), b'data: {"choices": [{"text": "a"}]}\n\n',
                        b'data: {"choices":[{"text":"b"}]}\r\n\r\n'])  # fmt: skip
PIECES = st.sampled_from([b"data: [DONE]", b"data:", b"data: ", b": comment\n", b"\n", b"\r", b"\r\n", b"\n\n",
                          b"{}", b"[1]", b"\xff\xfe", b'data: {"choices": [], "usage": {"completion_tokens": "x"}}\n\n',
                          b'data: {"error": {"message": "no"}}\n\n', b"event: x\n"])  # fmt: skip
STREAMS = st.tuples(st.lists(st.one_of(GOOD, GOOD, GOOD, PIECES, st.binary(max_size=8)), min_size=1, max_size=12),
                    st.booleans()).map(lambda t: b"".join(t[0]) + (b"data: [DONE]\n\n" if t[1] else b""))  # fmt: skip


FUZZ = settings(derandomize=True, max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@FUZZ
@given(STREAMS, st.lists(st.integers(min_value=1, max_value=600), max_size=6), st.booleans(), st.booleans(),
       st.sampled_from([None, None, None, 0.05, 0.3, 0.6, 0.9, 0.99]))  # fmt: skip
def test_fuzzed_streams_give_the_same_records(scripted, stream, cuts, chunked, paced, cut_at):
    pieces, last = [], 0
    for cut in [*sorted({min(c, len(stream)) for c in cuts}), len(stream)]:
        if cut > last:
            pieces.append(stream[last:cut])
            last = cut
    if chunked:
        body = [chunk(p) for p in pieces] + [b"0\r\n\r\n"]
        head = CHUNKED
    else:
        body, head = pieces, SSE + b"\r\n"
    wire = b"".join(body)
    if cut_at is not None:  # the connection closes in the middle of the body
        wire = wire[: int(cut_at * len(wire))]
    script: list[bytes | float | None] = [head]
    step = max(1, len(wire) // 3)
    for i in range(0, len(wire), step):
        script += [wire[i : i + step], *([0.002] if paced else [])]
    assert_same(records(scripted.serve(script)))


def test_chunks_are_framed_as_http_client_frames_them():
    body = b"5\r\nhello\r\n0x3;ext=1\r\nabcXX" + b"4\r\nwxyz\r\n" + b"9\r\npartial"
    assert chunk_boundary(b"HEAD" + body, 4, 100) == (len(body) - len(b"9\r\npartial"), 5 + 3 + 4)
    assert chunk_boundary(b"HEAD" + body, 4, 11) == (len(b"5\r\nhello\r\n0x3;ext=1\r\nabcXX"), 8)  # at most 11
    assert chunk_boundary(b"zz\r\n", 0, 100) == (0, 0) and chunk_boundary(b"0\r\n\r\n", 0, 100) == (0, 0)
    assert chunk_boundary(b"3\r\nab", 0, 100) == (0, 0)  # a chunk not all there waits


def test_the_timeout_counts_from_each_wait_not_from_the_event_loops_last_turn(scripted):
    """A process busy for longer than the timeout between reads (the loop's clock is as old) still waits for the
    next byte: gevent's loop time is updated as each wait starts, as gevent's own Timeout does."""
    url = scripted.serve([CHUNKED, 1.2, *EVENTS])  # the first event 0.2 s after the sleep, within the timeout
    reply = FastReply(url, "/v1/completions", b"{}", {"Content-Type": "application/json"}, 0.6)
    try:
        time.sleep(1.0)  # not gevent's: the loop does not turn
        assert b"[DONE]" in b"".join(reply.reads())
    finally:
        reply.close()
