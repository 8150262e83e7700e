"""The mock OpenAI server as users run it: a real process, streamed completions, set latencies."""

from __future__ import annotations

import json
import time

import httpx2
import psutil
import pytest
from servers import mock_server, running

from loadgen.sse import SSEParser

pytestmark = pytest.mark.integration


def stream(client: httpx2.Client, path: str, body: dict) -> tuple[list[dict], float, float]:
    parser, events = SSEParser(), []
    t0 = time.perf_counter()
    first = None
    with client.stream("POST", path, json=body) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            for data in parser.feed(chunk):
                if data == "[DONE]":
                    continue
                event = json.loads(data)
                if first is None and event["choices"]:
                    first = time.perf_counter() - t0
                events.append(event)
    return events, first or 0.0, time.perf_counter() - t0


def test_streams_forced_lengths_at_the_set_pace():
    with mock_server("--ttft-ms", "80", "--itl-ms", "5") as url, httpx2.Client(base_url=url, timeout=10) as client:
        body = {
            "model": "mock", "prompt": list(range(37)), "max_tokens": 20, "min_tokens": 20, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }  # fmt: skip
        events, ttft, e2e = stream(client, "/v1/completions", body)
        token_events = [e for e in events if e["choices"]]
        assert len(token_events) == 20
        assert [e["usage"]["completion_tokens"] for e in token_events] == list(range(1, 21))
        assert events[-1]["usage"] == {"prompt_tokens": 37, "completion_tokens": 20, "total_tokens": 57}
        assert 0.08 <= ttft < 0.2
        assert 0.08 + 19 * 0.005 <= e2e < 0.5


def test_chat_tokenize_and_plain_completions():
    with mock_server("--ttft-ms", "0", "--itl-ms", "0") as url, httpx2.Client(base_url=url, timeout=10) as client:
        assert client.post("/tokenize", json={"prompt": "one two three"}).json()["count"] == 3
        chat = {"model": "mock", "messages": [{"role": "user", "content": "a b c d"}], "max_tokens": 4, "stream": True}
        events, _, _ = stream(client, "/v1/chat/completions", chat)
        assert "".join(e["choices"][0]["delta"]["content"] for e in events) == "tok tok tok tok"
        plain = client.post("/v1/completions", json={"model": "mock", "prompt": "x y", "max_tokens": 3}).json()
        assert plain["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
        too_long = client.post("/v1/completions", json={"prompt": list(range(40000)), "max_tokens": 1})
        assert too_long.status_code == 400 and "max_model_len" in too_long.json()["error"]["message"]
        assert client.get("/health").status_code == 200


def test_records_arrivals_only_when_asked():
    with mock_server("--ttft-ms", "0", "--itl-ms", "0", "--record-arrivals") as url, httpx2.Client(base_url=url) as c:
        before = time.time()
        for _ in range(3):
            c.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
        got = c.get("/mock/arrivals").json()
        assert got["recording"] and len(got["arrivals_s"]) == 3 and before <= min(got["arrivals_s"]) <= time.time()
        assert c.get("/mock/arrivals").json()["arrivals_s"] == []  # each call takes what came since the last
    with mock_server("--ttft-ms", "0", "--itl-ms", "0") as url, httpx2.Client(base_url=url) as c:
        c.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
        assert c.get("/mock/arrivals").json() == {"recording": False, "arrivals_s": [], "served": []}


def test_worker_processes_share_one_port_and_one_arrival_log():
    with running("joulebench", "mock-server", "--ttft-ms", "0", "--itl-ms", "0", "--record-arrivals",
                 "--workers", "3") as (proc, url):  # fmt: skip
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2
        for _ in range(40):  # a connection each, handed by the kernel to any of the three processes
            with httpx2.Client(base_url=url) as c:
                r = c.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
                assert r.status_code == 200
        with httpx2.Client(base_url=url) as c:
            got = c.get("/mock/arrivals").json()["arrivals_s"]
        assert len(got) == 40 and got == sorted(got)
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive


def test_workers_die_with_a_killed_parent():
    with running("joulebench", "mock-server", "--workers", "2") as (proc, _):
        (worker,) = psutil.Process(proc.pid).children()
        proc.kill()
        proc.wait()
        worker.wait(timeout=10)
