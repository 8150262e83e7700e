"""The replay's Prometheus metrics, served at Locust's web UI ``/metrics`` (the Grafana "Run" dashboard).

Each process keeps plain counts (no prometheus_client globals: Locust's master sums its workers'
snapshots, which travel in Locust's own worker reports every few seconds). The target is the schedule
itself: ``requests_scheduled`` counts the requests whose scheduled time has passed, so its rate is the
target rate and the gap to ``requests_sent`` is the dispatcher falling behind.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from estimands.reference import work_price
from loadgen.records import RequestRecord

#: Histogram upper bounds (seconds): schedule lag is milliseconds when healthy, TTFT up to minutes.
LAG_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _Histogram:
    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class ReplayMetrics:
    """One process's replay counts; ``snapshot`` is what a worker sends and what ``merge`` adds up."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._due_before = 0  # scheduled requests of earlier schedules
        self._times: list[float] = []  # this schedule's absolute send times (this process's share)
        self.sent = 0
        self.in_flight = 0
        self.finished: dict[str, int] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.lag = _Histogram(LAG_BUCKETS_S)
        self.ttft = _Histogram(TTFT_BUCKETS_S)

    def start_schedule(self, times_s: Sequence[float]) -> None:
        self._due_before = self.scheduled()
        self._times = sorted(times_s)

    def scheduled(self) -> int:
        return self._due_before + bisect.bisect_right(self._times, self._clock())

    def on_sent(self) -> None:
        self.sent += 1
        self.in_flight += 1

    def on_finished(self, record: RequestRecord) -> None:
        self.in_flight -= 1
        status = record.status or "unknown"
        self.finished[status] = self.finished.get(status, 0) + 1
        self.output_tokens += record.usage_output_tokens or 0
        if status == "ok":
            self.input_tokens += record.usage_input_tokens or record.input_tokens
        if (lag := record.schedule_lag_s) is not None:
            self.lag.observe(max(0.0, lag))
        if (ttft := record.ttft_s) is not None:
            self.ttft.observe(ttft)

    def snapshot(self) -> dict[str, Any]:
        return {
            "scheduled": self.scheduled(),
            "sent": self.sent,
            "in_flight": self.in_flight,
            "finished": dict(self.finished),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "lag": {"counts": list(self.lag.counts), "sum": self.lag.sum},
            "ttft": {"counts": list(self.ttft.counts), "sum": self.ttft.sum},
        }


def merge(snapshots: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of several processes' snapshots (Locust's master over its workers)."""
    total = ReplayMetrics(clock=lambda: 0.0).snapshot()
    for s in snapshots:
        for key in ("scheduled", "sent", "in_flight", "input_tokens", "output_tokens"):
            total[key] += s[key]
        for status, n in s["finished"].items():
            total["finished"][status] = total["finished"].get(status, 0) + n
        for key in ("lag", "ttft"):
            total[key]["counts"] = [a + b for a, b in zip(total[key]["counts"], s[key]["counts"], strict=True)]
            total[key]["sum"] += s[key]["sum"]
    return total


def _histogram(name: str, doc: str, bounds: Sequence[float], h: Mapping[str, Any]) -> HistogramMetricFamily:
    cumulative, buckets = 0, []
    for bound, n in zip([*map(str, bounds), "+Inf"], h["counts"], strict=True):
        cumulative += n
        buckets.append((bound, cumulative))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h["sum"])


class ReplayCollector(Collector):
    """``joulebench_loadgen_*`` from a snapshot read at scrape time."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        p = "joulebench_loadgen"
        yield CounterMetricFamily(
            f"{p}_requests_scheduled", "Requests whose scheduled send time has passed (its rate: the target).",
            value=s["scheduled"],
        )  # fmt: skip
        yield CounterMetricFamily(f"{p}_requests_sent", "Requests sent.", value=s["sent"])
        yield GaugeMetricFamily(f"{p}_requests_in_flight", "Requests sent and not finished.", value=s["in_flight"])
        finished = CounterMetricFamily(f"{p}_requests_finished", "Requests finished, by status.", labels=["status"])
        for status, n in sorted(s["finished"].items()):
            finished.add_metric([status], n)
        yield finished
        yield CounterMetricFamily(f"{p}_input_tokens", "Prompt tokens of requests served.", value=s["input_tokens"])
        yield CounterMetricFamily(f"{p}_output_tokens", "Output tokens received.", value=s["output_tokens"])
        yield _histogram(
            f"{p}_schedule_lag_seconds", "Send time minus scheduled time (the client falling behind).",
            LAG_BUCKETS_S, s["lag"],
        )  # fmt: skip
        yield _histogram(
            f"{p}_ttft_seconds", "Time to first token, measured by the client from the send.", TTFT_BUCKETS_S, s["ttft"]
        )


class ReferenceCollector(Collector):
    """``joulebench_reference_*``: the stack's reference (``estimands.reference``), as gauges; none before the
    first valid saturate run. The recording rule ``joulebench:premium:rate1m`` prices the live tokens with
    them: power ÷ (b · (r · input tokens/s + output tokens/s)), b and r the reference's saturated prices
    (``estimands.reference.work_price``). A reference without prices publishes no b and r, and there is no
    live premium (``estimands.reference.NO_PRICES``); its J/token figures are published all the same."""

    def __init__(self, reference: Callable[[], Mapping[str, Any] | None]) -> None:
        self._reference = reference

    def collect(self) -> Iterator[Metric]:
        ref = self._reference()
        if not ref:
            return
        w = ref.get("workload") or {}
        labels = ["run_id", "trace", "concurrency"]
        values = [str(ref.get("run_id") or ""), str(w.get("trace") or ""), str(ref.get("concurrency") or "")]
        p = "joulebench_reference"
        for name, key, what in (
            ("joules_per_token", "j_per_token", "J/token of the stack's saturated reference (a saturate run's "
             "steady part: all energy of the measured devices ÷ input + output tokens)"),
            ("joules_per_token_uncertainty", "uncertainty_j_per_token", "Its standard uncertainty (monitor, "
             "prompt tokens at the edges)"),
            ("joules_per_output_token", "j_per_output_token", "J/output token of the stack's saturated reference"),
            ("joules_per_output_token_uncertainty", "uncertainty_j_per_output_token", "Its standard uncertainty"),
            ("measured_timestamp_seconds", "measured_at_s", "When the reference was measured (Unix seconds)"),
            ("requests", "completed", "Requests that ended in the reference's steady part"),
        ):  # fmt: skip
            if ref.get(key) is not None:
                g = GaugeMetricFamily(f"{p}_{name}", what + ".", labels=labels)
                g.add_metric(values, float(ref[key]))
                yield g
        mix = (ref.get("mix") or {}).get("span_input_per_output")
        priced = work_price(ref)
        for name, value, what in (
            ("input_output_ratio", mix, "Input ÷ output tokens processed in the reference's steady part (its mix)"),
            ("joules_per_work_unit", priced and priced[0], "b: the saturated price of one unit of work, the joules "
             "of one output token's worth: the reference's energy ÷ (r · input + output tokens) over its steady "
             "part. The live premium is power ÷ (b · (r · input tokens/s + output tokens/s)). Absent where the "
             "reference has no prices: no premium then"),
            ("joules_per_work_unit_uncertainty", priced and priced[1], "Its standard uncertainty (monitor, prompt "
             "tokens at the edges; r's own is price_ratio_uncertainty)"),
            ("price_ratio", priced and priced[2].ratio, "r: what one prefill (input) token costs in decode (output) "
             "tokens at saturation, fitted on the reference's energy slices (estimands.prices). Absent where the "
             "reference has no prices"),
            ("price_ratio_uncertainty", priced and priced[2].ratio_se, "Its standard uncertainty (absent where "
             "unknown: r held at its bound)"),
        ):  # fmt: skip
            if value is not None and math.isfinite(value):
                g = GaugeMetricFamily(f"{p}_{name}", what + ".", labels=labels)
                g.add_metric(values, float(value))
                yield g
