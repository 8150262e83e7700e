"""The stack's saturated reference: its steady part, its figures and validity, kept across runs, published."""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from estimands import prices
from estimands.prices import Prices
from estimands.reference import MIN_COMPLETED, NO_PRICES, premiums, steady_span, work_price
from loadgen import reference
from loadgen.metrics import ReferenceCollector
from monitor.meter import MeterReading, MeterSeries


class ConstantPower:
    """A monitor answering every window at ``power_w`` (± 1 J), read against the records' own clock."""

    url = "http://monitor.test"

    def __init__(self, power_w: float = 200.0, uncovered: dict | None = None) -> None:
        self.power_w, self.uncovered = power_w, uncovered or {}

    def energy(self, t0: float, t1: float) -> MeterReading:
        e = self.power_w * (t1 - t0)
        return MeterReading(t0, t1, e, 1.0, "gpu", ["nvml"], t1 - t0 < 0.2, uncovered_s=self.uncovered)

    def series(self, t0: float, t1: float, step_s: float) -> MeterSeries:
        edges = np.append(np.arange(t0, t1, step_s), t1)
        e = self.power_w * np.diff(edges)
        return MeterSeries(edges, e, np.full(len(e), 0.1), "gpu", ["nvml"])


def closed_loop(n: int = 60, slots: int = 4, service_s: float = 1.0, ttft_s: float = 0.2, n_in: int = 100,
                n_out: int = 10) -> list[dict]:  # fmt: skip
    """Records of a closed loop: ``slots`` in flight, each request sent when one ends."""
    free, out = [0.0] * slots, []
    for i in range(n):
        k = min(range(slots), key=free.__getitem__)
        sent = free[k]
        first, last = sent + ttft_s, sent + service_s
        step = (last - first) / (n_out - 1)
        out.append({"request_id": str(i), "status": "ok", "sent_s": sent, "first_token_s": first, "last_token_s": last,
                    "input_tokens": n_in, "output_tokens": n_out, "usage_input_tokens": n_in,
                    "usage_output_tokens": n_out,
                    "chunks": [(first + j * step, 1) for j in range(n_out)]})  # fmt: skip
        free[k] = last
    return out


def test_the_steady_part_opens_when_the_start_cohort_has_ended_and_ends_at_the_last_send():
    records = closed_loop(n=20, slots=4)
    assert steady_span(records, 4) == pytest.approx((1.0, 4.0))  # 20 requests, 4 slots: 5 rounds
    assert steady_span(records[:4], 4) is None  # only the cohort: nothing refills the batch
    assert steady_span(records, 0) is None


def test_the_reference_is_energy_over_the_tokens_processed_in_its_steady_part():
    records = closed_loop(n=60, slots=4)
    ref = reference.measure(records, ConstantPower(200.0), 4, {"trace": "azure-conv"}, "r1")
    assert ref["valid"], ref["reasons"]
    t0, t1 = ref["start_s"], ref["end_s"]
    assert (t0, t1) == pytest.approx((1.0, 14.0))
    assert abs(ref["mix"]["off"]) < 0.05 and abs(ref["halves"]["off"]) < 0.05
    energy = 200.0 * (t1 - t0)
    # Output: ten tokens a second per slot. Prompts: between spread from the send and all at the first
    # token (the cohort's fall before the window in both, the last round's after), their middle.
    assert ref["output_tokens"] == pytest.approx(4 * 10 * (t1 - t0), rel=0.03)
    assert ref["j_per_output_token"] == pytest.approx(energy / ref["output_tokens"])
    assert ref["j_per_token"] == pytest.approx(energy / (ref["input_tokens"] + ref["output_tokens"]))
    assert 0 < ref["uncertainty_j_per_token"] < 0.1 * ref["j_per_token"]
    assert ref["completed"] >= MIN_COMPLETED and ref["workload"] == {"trace": "azure-conv"}


def test_an_invalid_reference_says_why():
    short = reference.measure(closed_loop(n=12, slots=4), ConstantPower(), 4, {})
    assert not short["valid"] and any("too few requests" in r for r in short["reasons"])
    failed = closed_loop(n=60, slots=4)
    failed[30]["status"] = "timeout"
    assert "1 request(s) did not finish ok" in " ".join(reference.measure(failed, ConstantPower(), 4, {})["reasons"])
    stale = reference.measure(closed_loop(n=60), ConstantPower(uncovered={"gpu1": 3.0}), 4, {})
    assert "energy incomplete: gpu1 was not read for 3.0 s of it (stale)" in stale["reasons"]
    none = reference.measure(closed_loop(n=4), ConstantPower(), 4, {})
    assert not none["valid"] and "no steady part" in none["reasons"][0]


def test_only_a_valid_reference_is_kept_and_it_loads_back(tmp_path, caplog):
    good = reference.measure(closed_loop(n=60), ConstantPower(), 4, {"trace": "azure-code"}, "r1")
    bad = reference.measure(closed_loop(n=12), ConstantPower(), 4, {}, "r2")
    assert reference.load(tmp_path) is None  # none yet
    assert reference.save(tmp_path, good) == tmp_path / reference.REFERENCE_FILE
    assert reference.save(tmp_path, bad) is None  # an invalid one does not replace it
    assert reference.load(tmp_path) == json.loads(json.dumps(good))
    (tmp_path / reference.REFERENCE_FILE).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert reference.load(tmp_path) is None
    assert "is not a reference" in caplog.text


def priced_reference(r: float = 0.5, b: float = 2.0, n_in: float = 400.0, n_out: float = 100.0) -> dict:
    """A reference whose energy is exactly its work at prices r and b, ±1 % in energy and 10 edge prompt tokens."""
    e = b * (r * n_in + n_out)
    return {"run_id": "r1", "workload": {"trace": "azure-conv"}, "energy_j": e, "uncertainty_j": 0.01 * e,
            "input_tokens": n_in, "input_tokens_uncertainty": 10.0, "output_tokens": n_out,
            "j_per_token": e / (n_in + n_out), "j_per_output_token": e / n_out,
            "prices": Prices(r, 0.1, 0.99, 40, 1, "the fit's residuals").record()}  # fmt: skip


def test_the_premium_is_one_priced_premium_and_one_where_energy_is_proportional_to_work():
    ref = priced_reference()  # 4 input tokens per output token: 1.2 J/token, 6 J/output token
    # The run's mix is 1 input per output token, and its energy exactly its work at the reference's prices: the
    # premium is 1, where the two ratios of J/token and J/output token would say 1.25 and 0.5.
    live = {"energy_j": 2.0 * (0.5 * 300 + 300), "uncertainty_j": 9.0, "input_tokens": 300, "output_tokens": 300}
    p = premiums(live, ref)
    assert p["premium"] == pytest.approx(1.0) and p["reason"] is None
    assert p["input_per_output"] == pytest.approx(1.0) and p["reference_input_per_output"] == pytest.approx(4.0)
    assert p["prefill_per_decode_token"] == 0.5 and p["reference_run_id"] == "r1"
    assert p["premium"] == pytest.approx(prices.premium(live["energy_j"], (300, 300), ref["energy_j"], (400, 100), 0.5))
    # its uncertainty: the run's energy, the reference's price b, and r's where the mixes differ
    b, u_b, _ = work_price(ref)
    assert b == pytest.approx(2.0) and u_b == pytest.approx(2.0 * math.hypot(0.01, 0.5 * 10 / 300))
    r_term = prices.ratio_term((300, 300), (400, 100), Prices(0.5, 0.1, 0.99, 40, 1, ""))
    assert r_term > 0
    assert p["uncertainty_premium"] == pytest.approx(math.hypot(9.0 / 900, u_b / b, r_term))
    # twice the energy for the same work: twice the premium, whatever the mix
    assert premiums({**live, "energy_j": 1800.0}, ref)["premium"] == pytest.approx(2.0)
    assert premiums(live, None) is None and premiums(None, ref) is None


def test_a_reference_without_prices_gives_no_premium_and_says_why():
    ref = {k: v for k, v in priced_reference().items() if k != "prices"} | {"prices": None}
    live = {"energy_j": 900.0, "uncertainty_j": 9.0, "input_tokens": 300, "output_tokens": 300}
    p = premiums(live, ref)
    assert p["premium"] is None and p["uncertainty_premium"] is None and p["reason"] == NO_PRICES
    assert p["input_per_output"] == pytest.approx(1.0)  # the mixes are shown all the same
    assert work_price(ref) is None
    empty = premiums({"energy_j": 0.0, "input_tokens": 0, "output_tokens": 0}, priced_reference())
    assert empty["premium"] is None and empty["reason"].startswith("no energy or no tokens")


def test_the_reference_without_prices_publishes_its_figures_but_no_price():
    ref = priced_reference() | {"prices": None}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReferenceCollector(lambda: ref))
    names = {s.name for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    assert "joulebench_reference_joules_per_token" in names
    assert not {"joulebench_reference_joules_per_work_unit", "joulebench_reference_price_ratio"} & names


def test_the_reference_is_published_as_gauges_and_absent_before_one():
    ref = reference.measure(closed_loop(n=60), ConstantPower(), 4, reference.workload_of(
        closed_loop(n=60), SimpleNamespace(jb_trace="azure-conv", jb_first=60, jb_start=0.0)), "r1")  # fmt: skip
    holder: dict = {}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReferenceCollector(lambda: holder.get("ref")))
    assert generate_latest(registry) == b""
    holder["ref"] = ref
    samples = {s.name: s for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    g = samples["joulebench_reference_joules_per_token"]
    assert g.value == pytest.approx(ref["j_per_token"])
    assert g.labels == {"run_id": "r1", "trace": "azure-conv", "concurrency": "4"}
    assert samples["joulebench_reference_joules_per_output_token"].value == pytest.approx(ref["j_per_output_token"])
    assert samples["joulebench_reference_measured_timestamp_seconds"].value == pytest.approx(ref["measured_at_s"])
    # its prices, for the premium rule: b, r and their uncertainties, and its mix
    b, u_b, p = work_price(ref)
    assert samples["joulebench_reference_joules_per_work_unit"].value == pytest.approx(b)
    assert samples["joulebench_reference_joules_per_work_unit"].labels == g.labels
    assert samples["joulebench_reference_joules_per_work_unit_uncertainty"].value == pytest.approx(u_b)
    assert samples["joulebench_reference_price_ratio"].value == pytest.approx(p.ratio)
    assert samples["joulebench_reference_price_ratio_uncertainty"].value == pytest.approx(p.ratio_se)
    assert samples["joulebench_reference_input_output_ratio"].value == pytest.approx(10.0, rel=0.05)
    assert b == pytest.approx(ref["energy_j"] / (p.ratio * ref["input_tokens"] + ref["output_tokens"]))
