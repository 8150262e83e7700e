"""The replay's Prometheus metrics: counts, the schedule as target, the master's sum over workers."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loadgen.metrics import LAG_BUCKETS_S, ReplayCollector, ReplayMetrics, merge
from loadgen.records import RequestRecord


def finished(status: str, lag_s: float, ttft_s: float | None, out: int = 8) -> RequestRecord:
    r = RequestRecord(request_id="0", trace_index=0, scheduled_s=100.0, input_tokens=40, output_tokens=out)
    r.sent_s = 100.0 + lag_s
    r.first_token_s = None if ttft_s is None else r.sent_s + ttft_s
    r.status = status  # type: ignore[assignment]
    r.usage_output_tokens = out if status == "ok" else 0
    return r


def exposed(snapshot: dict) -> dict[str, list]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReplayCollector(lambda: snapshot))
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_scheduled_counts_the_schedule_as_time_passes_across_schedules():
    now = [0.0]
    m = ReplayMetrics(clock=lambda: now[0])
    m.start_schedule([10.0, 11.0, 12.0])
    assert m.scheduled() == 0
    now[0] = 11.0
    assert m.scheduled() == 2
    m.start_schedule([20.0, 21.0])  # a new test in the web UI: the counter goes on from 2
    now[0] = 20.5
    assert m.scheduled() == 3


def test_sent_finished_in_flight_tokens_and_histograms():
    m = ReplayMetrics(clock=lambda: 0.0)
    for _ in range(3):
        m.on_sent()
    m.on_finished(finished("ok", lag_s=0.0007, ttft_s=0.05))
    m.on_finished(finished("timeout", lag_s=0.003, ttft_s=None))
    s = m.snapshot()
    assert (s["sent"], s["in_flight"], s["finished"]) == (3, 1, {"ok": 1, "timeout": 1})
    assert (s["input_tokens"], s["output_tokens"]) == (40, 8)
    assert sum(s["lag"]["counts"]) == 2 and s["lag"]["sum"] == pytest.approx(0.0037)
    assert s["lag"]["counts"][LAG_BUCKETS_S.index(0.001)] == 1  # 0.7 ms falls in the 1 ms bucket
    assert sum(s["ttft"]["counts"]) == 1


def test_the_master_sums_its_workers():
    a, b = ReplayMetrics(clock=lambda: 0.0), ReplayMetrics(clock=lambda: 0.0)
    a.on_sent()
    a.on_finished(finished("ok", 0.001, 0.1))
    b.on_sent()
    b.on_sent()
    b.on_finished(finished("http_error", 0.002, None))
    total = merge([a.snapshot(), b.snapshot()])
    assert (total["sent"], total["in_flight"]) == (3, 1)
    assert total["finished"] == {"ok": 1, "http_error": 1}
    assert sum(total["lag"]["counts"]) == 2


def test_exposition_follows_prometheus_conventions():
    m = ReplayMetrics(clock=lambda: 0.0)
    m.on_sent()
    m.on_finished(finished("ok", 0.0004, 0.02))
    got = exposed(m.snapshot())
    assert got["joulebench_loadgen_requests_sent_total"][0].value == 1
    assert got["joulebench_loadgen_requests_finished_total"][0].labels == {"status": "ok"}
    buckets = got["joulebench_loadgen_schedule_lag_seconds_bucket"]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 1
    assert [b.value for b in buckets] == sorted(b.value for b in buckets)  # cumulative
    assert got["joulebench_loadgen_schedule_lag_seconds_count"][0].value == 1
    assert all(name.startswith("joulebench_loadgen_") for name in got)
