"""The streaming client against the real mock server: exact records and every failure status, over each HTTP
client (``CLIENTS``); ``test_clients_agree.py`` checks that the two give the same records."""

from __future__ import annotations

import time

import pytest
from servers import mock_server, scripted_server, self_signed_certificate

from loadgen.client import CLIENTS, ClientConfig, normalize_target, request_body, send, served_model
from loadgen.errors import LoadgenError
from loadgen.records import RequestRecord

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def url():
    with mock_server("--ttft-ms", "50", "--itl-ms", "2") as u:
        yield u


@pytest.fixture(params=CLIENTS)
def client(request) -> str:
    return request.param


def run(url: str, n_out: int = 10, chat: bool = False, timeout_s: float = 10.0, client: str = CLIENTS[0],
        **extra) -> RequestRecord:  # fmt: skip
    config = ClientConfig(base_url=url, model="mock", chat=chat, timeout_s=timeout_s, client=client)
    prompt = "a b c d e" if chat else list(range(2, 42))
    record = RequestRecord("r", 0, scheduled_s=time.time(), input_tokens=5 if chat else 40, output_tokens=n_out)
    return send(config, record, {**request_body(config, prompt, n_out), **extra})


def test_a_good_stream_gives_every_time_and_count(url, client):
    r = run(url, 10, client=client)
    assert r.status == "ok", r.error
    assert (r.usage_input_tokens, r.usage_output_tokens) == (40, 10)
    assert len(r.chunks) == 10 and sum(n for _, n in r.chunks) == 10
    # never faster than the mock's configured pace (how close is the capacity benchmark's job), give or take the
    # millisecond an event loop's timer may fire early (a CI run measured 49.88 ms for 50)
    assert 0.05 - 0.002 <= r.ttft_s < 0.5
    assert 0.05 + 9 * 0.002 - 0.002 <= r.e2e_s < 0.6
    assert all(b[0] >= a[0] for a, b in zip(r.chunks, r.chunks[1:], strict=False))
    assert r.sent_s >= r.scheduled_s and r.first_token_s <= r.last_token_s


def test_chat_with_text(url, client):
    r = run(url, 4, chat=True, client=client)
    assert r.status == "ok" and r.usage_input_tokens == 5 and r.usage_output_tokens == 4


@pytest.mark.parametrize("code", [429, 500, 503])
def test_http_errors(url, code, client):
    r = run(url, mock_fault=f"status:{code}", client=client)
    assert (r.status, r.http_status) == ("http_error", code) and f"HTTP {code}" in r.error


def test_a_stalled_server_times_out(url, client):
    r = run(url, 10, timeout_s=0.5, mock_fault="stall", client=client)
    assert r.status == "timeout" and r.first_token_s is not None and "0.5 s" in r.error


def test_the_timeout_limits_silence_not_the_stream(client):
    # 48 tokens 25 ms apart: a 1.2 s stream under a 0.5 s timeout (its gaps leave a loaded machine room). The
    # default client's timer once counted every wait of the stream against one timeout_s (libev's stop keeps
    # what is left), and cut it after about 20 tokens.
    with mock_server("--ttft-ms", "1", "--itl-ms", "25") as u:
        r = run(u, 48, timeout_s=0.5, client=client)
    assert r.status == "ok", r.error
    assert r.usage_output_tokens == 48 and sum(n for _, n in r.chunks) == 48
    assert r.e2e_s > 2 * 0.5


def test_a_dropped_connection_is_a_disconnect(url, client):
    r = run(url, 10, mock_fault="disconnect", client=client)
    assert r.status == "disconnect" and len(r.chunks) == 5


def test_a_broken_event_is_a_bad_stream(url, client):
    r = run(url, 10, mock_fault="garbage", client=client)
    assert r.status == "bad_stream" and "not JSON" in r.error


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("not_object", "an event is JSON but not an object (list)"),
        ("bad_usage", "an event's usage counts are not non-negative integers"),
    ],
)
def test_valid_json_of_the_wrong_shape_is_a_bad_stream(url, fault, message, client):
    r = run(url, 10, mock_fault=fault, client=client)
    assert r.status == "bad_stream" and message in r.error


def test_a_plain_json_reply_is_not_streaming(url, client):
    r = run(url, 10, mock_fault="no_stream", client=client)
    assert r.status == "not_streaming" and r.http_status == 200
    assert "answered one application/json body, not an event stream" in r.error and '"usage"' in r.error


def test_what_the_client_cannot_handle_is_a_client_error_record_never_an_exception(url, client):
    # the JSON parser's RecursionError: no check of the client expects it
    r = run(url, 10, mock_fault="deep_json", client=client)
    assert r.status == "client_error" and r.error.startswith("RecursionError: ")
    assert len(r.chunks) == 1  # what came before is kept


def test_the_start_up_check_tells_a_wrong_path_from_no_model(url):
    assert served_model(normalize_target(f"{url}/v1"))[0] == "mock"
    with pytest.raises(LoadgenError, match=r"answered HTTP 404 for GET /nope/v1/models: is --target the server's root"):
        served_model(f"{url}/nope")


def test_the_start_up_check_has_a_deadline_a_trickling_server_cannot_stretch():
    # a byte every 0.25 s: each read is well within the 1 s timeout, the head never ends (5 s in all)
    with scripted_server() as server:
        url = server.serve([b"HTTP/1.1 200 OK\r\nX-Slow: ", *[b"a", 0.25] * 20])
        started = time.monotonic()
        with pytest.raises(LoadgenError, match=r"did not answer GET /v1/models within 1 s \(it sends too slowly\)"):
            served_model(url, timeout_s=1.0)
    assert time.monotonic() - started < 2.5


def test_https_is_spoken_where_the_url_says(tmp_path, monkeypatch, client):
    cert, key = self_signed_certificate(tmp_path)
    with mock_server("--ttft-ms", "1", "--itl-ms", "0", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)) as u:
        assert u.startswith("https://")
        with pytest.raises(LoadgenError, match=r"the TLS handshake with https://.* failed .*SSL_CERT_FILE"):
            served_model(u)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert served_model(u) == ("mock", 32768)
        assert run(u, 3, client=client).status == "ok"


def test_fewer_tokens_than_forced_is_short_output(url, client):
    r = run(url, 10, mock_fault="short", client=client)
    assert r.status == "short_output" and r.usage_output_tokens == 5 and "5 of 10" in r.error


def test_nobody_listening_is_a_disconnect(client):
    r = run("http://127.0.0.1:9", 3, client=client)
    assert r.status == "disconnect" and "Connection" in r.error


def test_chat_text_is_calibrated_with_the_servers_tokenizer(url, client):
    from loadgen.client import TextCalibrator

    cal = TextCalibrator(url, "mock")
    for n in (1, 7, 300):
        assert cal.count(cal.text(n)) == n
    assert run(url, 2, chat=True, client=client).status == "ok"
    texts = cal.texts([5, 9, 5, 7])
    assert sorted(texts) == [5, 7, 9] and all(cal.count(t) == n for n, t in texts.items())
