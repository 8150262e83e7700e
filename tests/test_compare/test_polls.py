"""What the server says during a replay: vLLM's metrics parsed, the engine's prefill rate from its own
timing, and prefill counted where the engine did it — checked against a mock server whose queue and
prefill times are known."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from servers import mock_server
from synthetic import simulate

from compare.polls import Poller, parse_vllm_metrics
from compare.rundir import read_polls
from estimands.engine import prefill_rate, server_in_system, throttle_reasons
from estimands.tokens import tokens_in_window
from loadgen.records import read_records

#: A page as vLLM 0.32 serves it (two engines' label sets, and what a comparison does not read).
VLLM_PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 3.0
vllm:num_requests_running{engine="1",model_name="tiny"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 7.0
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{engine="0",model_name="tiny"} 12000.0
vllm:prompt_tokens_created{engine="0",model_name="tiny"} 1.7e9
# TYPE vllm:request_prefill_time_seconds histogram
vllm:request_prefill_time_seconds_bucket{engine="0",le="0.3",model_name="tiny"} 2.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 4.0
vllm:request_prefill_time_seconds_count{engine="0",model_name="tiny"} 4.0
vllm:request_prefill_time_seconds_sum{engine="0",model_name="tiny"} 1.5
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="tiny"} 99.0
"""


def test_vllm_metrics_are_summed_over_engines():
    m = parse_vllm_metrics(VLLM_PAGE)
    assert m == {"running": 4.0, "waiting": 7.0, "prompt_tokens": 12000.0, "prefill_s_sum": 1.5, "prefill_count": 4.0}


def test_the_prefill_rate_is_the_change_over_the_replay():
    polls = [
        {"t": 1.0, "server": {"prefill_s_sum": 10.0, "prefill_count": 5, "prompt_tokens": 1000, "running": 0,
                              "waiting": 0}},
        {"t": 2.0, "devices": {"gpu0": {"throttle_reasons": ["gpu_idle"]}}},
        {"t": 3.0, "server": {"prefill_s_sum": 12.0, "prefill_count": 9, "prompt_tokens": 9000, "running": 2,
                              "waiting": 3}},
    ]  # fmt: skip
    rate = prefill_rate(polls)
    assert rate["tokens_per_s"] == pytest.approx(8000 / 2.0) and rate["requests"] == 4
    assert prefill_rate(polls[:2]) is None and prefill_rate([]) is None
    assert server_in_system(polls) == ([1.0, 3.0], [0, 5])
    assert throttle_reasons(polls, 0.0, 2.5) == ["gpu_idle"] and throttle_reasons(polls, 2.5, 9.0) == []


def test_prefill_counted_where_the_engine_did_it_on_a_simulated_queue():
    """A queue of ten seconds and more: spread over send → first token, prefill lands long before the engine
    did it; over the last n/rate seconds before the first token, where it happened."""
    rng = np.random.default_rng(5)
    lengths = [(int(i), 4) for i in rng.integers(500, 3000, 300)]
    served = simulate(np.cumsum(rng.exponential(1 / 12.0, 300)), lengths, slots=2, prefill_tokens_per_s=20000,
                      itl_s=0.05)  # fmt: skip
    t0, t1 = served.records[100]["scheduled_s"], served.records[200]["scheduled_s"]
    truth = sum(
        r["usage_input_tokens"] * _share(p, t0, t1) for r, p in zip(served.records, served.prefill, strict=True)
    )
    ours, _ = tokens_in_window(served.records, t0, t1, 20000.0)
    naive, _ = tokens_in_window(served.records, t0, t1)
    assert ours == pytest.approx(truth, rel=0.02)
    assert abs(naive - truth) > 0.1 * truth  # the old count is far off, so the test tells them apart


def _share(interval: tuple[float, float], t0: float, t1: float) -> float:
    lo, hi = interval
    return max(0.0, min(hi, t1) - max(lo, t0)) / (hi - lo) if hi > lo else float(t0 <= hi < t1)


@pytest.mark.integration
def test_prefill_accounting_against_a_mock_with_known_queue_and_prefill(tmp_path):
    """The mock holds two requests at a time and prefills at 10,000 tokens/s, with arrivals at about twice
    what it serves: its /metrics give the rate, its log every request's true admission; the window's input
    tokens must come within 2 % of the truth (and the count from send to first token must not)."""
    trace = tmp_path / "trace.csv"
    rng = np.random.default_rng(2)
    rows = "".join(
        f"{t:.4f},{int(i)},{int(o)}\n"
        for t, i, o in zip(
            np.cumsum(rng.exponential(0.05, 120)), rng.integers(400, 2500, 120), rng.integers(2, 6, 120), strict=True
        )
    )
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + rows)  # fmt: skip
    records_path = tmp_path / "requests.jsonl"
    with mock_server("--ttft-ms", "0", "--itl-ms", "5", "--max-num-seqs", "2", "--prefill-ms-per-token", "0.1",
                     "--record-arrivals") as url:  # fmt: skip
        with Poller(url, None, tmp_path / "polls.jsonl", interval_s=0.2):
            run = subprocess.run(
                [sys.executable, "-m", "joulebench", "replay", "--target", url, "--trace", str(trace), "--first", "120",
                 "--rate", "1", "--records", str(records_path)], capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            time.sleep(0.5)
        assert run.returncode == 0, run.stderr[-2000:]
        with urllib.request.urlopen(f"{url}/mock/arrivals") as r:
            served = json.loads(r.read())["served"]
    records = read_records(records_path)
    rate = prefill_rate(read_polls(tmp_path / "polls.jsonl"))
    assert rate["tokens_per_s"] == pytest.approx(10000, rel=0.01) and rate["requests"] == 120
    assert rate["mean_queue_s"] > 1.0  # a real queue: requests waited seconds before their prefill
    assert len(served) == 120
    times = sorted(r["scheduled_s"] for r in records)
    t0, t1 = times[10], times[110]
    truth = sum(s["input_tokens"] * _share((s["admitted_s"], s["first_token_s"]), t0, t1) for s in served)
    ours, _ = tokens_in_window(records, t0, t1, rate["tokens_per_s"])
    naive, _ = tokens_in_window(records, t0, t1)
    assert ours == pytest.approx(truth, rel=0.02), (ours, truth, naive)
    assert abs(naive - truth) > 0.05 * truth
