"""The checks a running stack owes the dashboards, shared by tests/test_stack.py (processes started by hand)
and tests/test_compose.py (the compose stack): every panel's PromQL has data, the dashboard variables
find their values, and the J/token recording rule agrees with the report's figure for the same window."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import httpx2
from paths import ROOT

from estimands.prices import premium, work
from estimands.reference import work_price
from estimands.tokens import tokens_in_window
from monitor.meter import MonitorClient

RULE_WINDOW_S = 60.0  # the [1m] of joulebench:joules_per_token:rate1m
SCRAPE_S = 1.0


def wait_http(url: str, timeout_s: float, alive=lambda: None) -> None:
    """Until ``url`` answers 200; ``alive()`` raises (with a log's end) if what should answer has died."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx2.get(url, timeout=2).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        alive()
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout_s:.0f} s"
        time.sleep(0.3)


def loadgen_counts(url: str) -> dict[str, float]:
    """The load generator's request counts from Locust's ``/metrics`` (finished: summed over statuses)."""
    text = httpx2.get(f"{url}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("joulebench_loadgen_requests_"):
            name, value = line.split()
            key = name.removeprefix("joulebench_loadgen_requests_").split("{")[0]
            out[key] = out.get(key, 0.0) + float(value)
    return out


def instant(prom: str, expr: str, at_s: float) -> list[dict]:
    r = httpx2.get(f"{prom}/api/v1/query", params={"query": expr, "time": at_s}, timeout=10).json()
    assert r["status"] == "success", (expr, r)
    return r["data"]["result"]


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel [refId], PromQL) of every target of every dashboard."""
    out = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        d = json.loads(path.read_text())
        for p in d["panels"]:
            out += [(d["title"], f"{p['title']} [{t['refId']}]", t["expr"]) for t in p["targets"]]
    return out


def needs_reference(expr: str) -> bool:
    """A query of the stack's saturated reference or the premium over it: empty until one is measured."""
    return "reference" in expr or "premium" in expr


def check_every_panel(prom: str, at_s: float, reference: bool) -> int:
    """Every panel's query at ``at_s``: no PromQL error, and data — or, for the reference's and the
    premium's queries before a saturate run (``reference`` False), none, so the panel says "no reference
    yet"; then the variables' label values. Returns the number of queries checked."""
    queries = panel_queries()
    for dashboard, panel, expr in queries:
        q = expr.replace("$gpu", ".*").replace("$model", ".*").replace("$__range", "60s")
        values = [float(s["value"][1]) for s in instant(prom, q, at_s)]
        if needs_reference(expr) and not reference:
            assert values == [], f"{dashboard} / {panel}: data before any reference for {q}: {values}"
            continue
        assert any(math.isfinite(v) for v in values), f"{dashboard} / {panel}: no data for {q}"
    for label, metric, want in (("gpu", "joulebench_gpu_power_watts", ["0"]),
                                ("model_name", "vllm:num_requests_running", ["tiny"])):  # fmt: skip
        r = httpx2.get(f"{prom}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=10).json()
        assert r["data"] == want
    return len(queries)


@dataclass(frozen=True)
class RuleCheck:
    rule_j: float  # joulebench:joules_per_token:rate1m as Prometheus evaluated it
    report_j: float  # the monitor's window energy over the records' tokens in the same window
    low_j: float  # the scrape band: what the rule may read given where the scrapes fell
    high_j: float
    t0: float
    t1: float
    energy_j: float
    tokens: int

    def __str__(self) -> str:
        return (f"J/token: rule {self.rule_j:.5f}, report {self.report_j:.5f} ({self.energy_j:.1f} J / "
                f"{self.tokens} tokens over [{self.t0:.1f}, {self.t1:.1f}]), "
                f"scrape band [{self.low_j:.5f}, {self.high_j:.5f}]")  # fmt: skip


def rule_against_report(prom: str, monitor_url: str, records: list[dict], at_s: float) -> RuleCheck:
    """The J/token rule against the report's figure: the monitor's window energy over the tokens the records
    put in the window (prefill and decode), for the window the rule evaluated last before ``at_s``.

    Within the scrape resolution: Prometheus sees each counter only at scrapes, so either edge of its window
    may be off by up to one scrape interval, for the joules and for the tokens. The band is the fewest
    joules over the most tokens to the most joules over the fewest, plus the monitor's own uncertainty."""
    (sample,) = instant(prom, "timestamp(joulebench:joules_per_token:rate1m)", at_s)
    t1 = float(sample["value"][1])
    (rule,) = instant(prom, "joulebench:joules_per_token:rate1m", t1)
    meter = MonitorClient(monitor_url)
    t0 = t1 - RULE_WINDOW_S
    reading = meter.energy(t0, t1)
    tokens = sum(tokens_in_window(records, t0, t1))
    inner, outer = (t0 + SCRAPE_S, t1 - SCRAPE_S), (t0 - SCRAPE_S, t1 + SCRAPE_S)
    low = (meter.energy(*inner).energy_j - reading.uncertainty_j) / sum(tokens_in_window(records, *outer))
    high = (meter.energy(*outer).energy_j + reading.uncertainty_j) / sum(tokens_in_window(records, *inner))
    return RuleCheck(float(rule["value"][1]), reading.energy_j / tokens, low, high, t0, t1, reading.energy_j,
                     int(tokens))  # fmt: skip


def premium_against_report(prom: str, monitor_url: str, records: list[dict], reference: dict, t1: float) -> str:
    """The premium rule at ``t1`` (a time the rules were evaluated): first against its own definition on the
    rules it divides and the reference's prices (``estimands.reference.work_price``), then against the report's
    premium (the monitor's energy ÷ the records' tokens at those prices, ``estimands.prices.premium``) within
    the scrape band, as ``rule_against_report``. Returns a line for the test's output."""
    b, _, prices = work_price(reference)
    r = prices.ratio

    def value(expr: str) -> float:
        (sample,) = instant(prom, expr, t1)
        return float(sample["value"][1])

    got = value("joulebench:premium:rate1m")
    power = value("joulebench:power_watts:rate1m")
    n_in_s, n_out_s = (
        value("joulebench:input_tokens_per_second:rate1m"),
        value("joulebench:output_tokens_per_second:rate1m"),
    )
    assert math.isclose(got, power / (b * work(n_in_s, n_out_s, r)), rel_tol=1e-9), (got, power, n_in_s, n_out_s)
    meter = MonitorClient(monitor_url)
    t0 = t1 - RULE_WINDOW_S
    reading = meter.energy(t0, t1)
    inner, outer = (t0 + SCRAPE_S, t1 - SCRAPE_S), (t0 - SCRAPE_S, t1 + SCRAPE_S)
    low = (meter.energy(*inner).energy_j - reading.uncertainty_j) / (b * work(*tokens_in_window(records, *outer), r))
    high = (meter.energy(*outer).energy_j + reading.uncertainty_j) / (b * work(*tokens_in_window(records, *inner), r))
    ref_tokens = (reference["input_tokens"], reference["output_tokens"])
    report = premium(reading.energy_j, tokens_in_window(records, t0, t1), reference["energy_j"], ref_tokens, r)
    assert low <= got <= high, (got, report, low, high)
    return f"premium {got:.3f} (report {report:.3f}; band [{low:.3f}, {high:.3f}]; r = {r:.3g}, b = {b:.5g} J)"
