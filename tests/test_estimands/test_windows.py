"""Steady-state windows on simulated servers: where they open and close, the steady-state tests, the
saturation flags and the verdict's reasons. No servers: ``synthetic.simulate`` is a queue with known
service times."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import simulate

from estimands.windows import (
    Window,
    choose_window,
    in_system,
    measured_requests,
    mser,
    overlap,
    steadiness,
    trend,
    verdict,
)


def poisson(rate: float, n: int, seed: int = 0) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, n))


def lengths(n: int, seed: int = 1) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return [(int(i), int(o)) for i, o in zip(rng.integers(100, 2000, n), rng.integers(5, 60, n), strict=True)]


def test_in_system_counts_scheduled_and_not_finished():
    rs = [{"scheduled_s": 0.0, "last_token_s": 1.0}, {"scheduled_s": 0.2, "last_token_s": 3.0},
          {"scheduled_s": 5.0, "sent_s": 5.0, "last_token_s": None, "first_token_s": None}]  # fmt: skip
    assert list(in_system(rs, [0.1, 0.5, 2.0, 4.0, 5.0])) == [1, 2, 1, 0, 0]


def in_system_series(rng, mean_rate: float, span_s: float, stay_s: float, ramp: float = 1.0, slice_s: float = 0.25):
    """Requests in system at slice midpoints of an M/G/∞ queue (exponential stays of mean ``stay_s``) whose
    arrival rate is steady before the window and goes linearly from λ₀ to ``ramp``·λ₀ across it (mean
    ``mean_rate``); with the stays of the requests that arrive in the window."""
    lam0 = 2 * mean_rate / (1 + ramp)
    lead = 10 * stay_s
    peak = lam0 * max(ramp, 1.0)
    t = np.cumsum(rng.exponential(1 / peak, int(peak * (lead + span_s) * 1.3 + 50))) - lead
    t = t[t < span_s]
    keep = rng.random(len(t)) < np.where(t < 0, 1.0, 1 + (ramp - 1) * t / span_s) * lam0 / peak  # thinning
    t = t[keep]
    stays = rng.exponential(stay_s, len(t))
    mids = (np.arange(int(span_s / slice_s)) + 0.5) * slice_s
    n = np.searchsorted(np.sort(t), mids, side="right") - np.searchsorted(np.sort(t + stays), mids, side="right")
    return mids, n.astype(float), stays[t >= 0]


def test_a_flat_series_has_no_trend_and_a_ramp_has_one():
    rng = np.random.default_rng(3)
    t = np.arange(0, 60, 0.25)
    flat = trend(t, 10 + rng.normal(0, 2, len(t)), [0.25])  # white noise: no correlation beyond a slice
    assert flat.tested and not flat.significant and not flat.material(0.25, 1.0)
    ramp = trend(t, 5 + t + rng.normal(0, 2, len(t)), [0.25])
    assert ramp.significant and ramp.material(0.25, 1.0) and ramp.change == pytest.approx(60, rel=0.1)


def test_a_steady_but_strongly_correlated_series_is_not_flagged():
    """Requests stay 4 s, 16 slices: neighbouring slices are nearly the same count. The variance comes from
    the series' low frequencies, shaped by the stays, so a steady queue is not called a trend."""
    rng = np.random.default_rng(11)
    flagged = 0
    for _ in range(200):
        mids, n, stays = in_system_series(rng, mean_rate=2.0, span_s=120.0, stay_s=4.0)  # ~8 in system, 240 arrivals
        tr = trend(mids, n, stays)
        assert tr.tested and tr.df >= 8
        flagged += tr.significant
    assert flagged / 200 <= 0.08  # 5 % nominal; 0.08 leaves room for 200 draws
    mids, n, stays = in_system_series(np.random.default_rng(5), mean_rate=2.0, span_s=120.0, stay_s=4.0)
    assert not trend(mids, n, stays).significant


def test_a_doubling_of_the_arrival_rate_is_flagged():
    rng = np.random.default_rng(7)
    mids, n, stays = in_system_series(rng, mean_rate=2.0, span_s=300.0, stay_s=4.0, ramp=2.0)  # ~600 arrivals
    tr = trend(mids, n, stays)
    assert tr.tested and tr.significant and tr.material(0.25, 1.0)
    assert tr.change == pytest.approx(8 * 2 / 3, rel=0.35)  # from 2/3 to 4/3 of the mean of 8 in system


def test_a_window_too_short_to_test_is_not_tested_and_not_valid():
    """Fewer than ten slices, or too few residence times for the test to tell a trend from the queue's own
    slow swings: "not tested", and so not valid (before issue 29 such a window had t = 0 and passed)."""
    served = simulate(poisson(4.0, 400), lengths(400), slots=8)
    w = choose_window(served.records, served.edges)
    short = Window(w.start_s, w.start_s + 2.0, w.warmup_s, w.mser_s, w.arrival_end_s)  # 8 slices
    st = steadiness(served.records, served.edges, served.energy_j, short)
    v = verdict(st, min_requests=1)
    assert not v["valid"] and any(r.startswith("not tested for steadiness: 8 slices") for r in v["reasons"])
    assert not st["in_system"]["tested"] and not st["power_w"]["tested"]
    assert st["not_steady"] == [] and st["saturated"] == [] and st["not_tested"]
    mids, n, stays = in_system_series(np.random.default_rng(2), mean_rate=2.0, span_s=10.0, stay_s=4.0)
    slow = trend(mids, n, stays)  # 40 slices, but only 2.5 stays long
    assert not slow.tested and not slow.significant and slow.df < 4


def test_mser_cuts_the_initial_transient():
    rng = np.random.default_rng(4)
    y = np.concatenate([np.linspace(0, 20, 40), 20 + rng.normal(0, 1, 200)])
    d = mser(y)
    assert 25 <= d <= 60
    assert mser(20 + rng.normal(0, 1, 200)) < 30  # nothing to cut: little is cut


def test_the_window_opens_at_a_fixed_request_and_closes_at_the_last_arrival():
    served = simulate(poisson(5.0, 200), lengths(200), slots=8)
    w = choose_window(served.records, served.edges, 0.2)
    sched = sorted(r["scheduled_s"] for r in served.records)
    assert 0 <= w.start_s - sched[40] < 0.25  # at the 41st arrival, on the slice grid
    assert w.end_s <= sched[-1] and sched[-1] - w.end_s <= 0.25  # on the slice grid, at the last arrival
    assert np.isclose(served.edges, w.start_s).any() and np.isclose(served.edges, w.end_s).any()
    assert choose_window(served.records, served.edges, 0.0).start_s <= sched[0] + 0.25


def test_every_rate_measures_the_same_requests():
    """The window is fixed in the workload's order: the same requests arrive in it at every rate, where a
    window cut by MSER on each rate's own in-system series would not."""
    arrivals, n = poisson(4.0, 300), lengths(300)
    sets = []
    for m in (0.5, 1.0, 2.0):
        served = simulate(np.asarray(arrivals) / m, n, slots=8, slice_s=0.05)
        sets.append(measured_requests(served.records, choose_window(served.records, served.edges, 0.2)))
    assert overlap(sets) > 0.98 and min(len(x) for x in sets) >= 235
    assert overlap([{1, 2, 3}, {2, 3, 4}]) == pytest.approx(0.5) and overlap([{1}]) is None


def test_a_stable_queue_is_steady_and_valid():
    served = simulate(poisson(4.0, 400), lengths(400), slots=8)  # about 40 % busy
    w = choose_window(served.records, served.edges)
    st = steadiness(served.records, served.edges, served.energy_j, w)
    assert st["not_steady"] == [] and st["saturated"] == []
    assert st["completed"] >= 300
    assert verdict(st, min_requests=100) == {"valid": True, "saturated": False, "reasons": []}


def test_a_filling_window_is_not_steady_and_saturated():
    served = simulate(poisson(20.0, 400), lengths(400), slots=2)  # far more work arrives than two slots serve
    w = choose_window(served.records, served.edges)
    st = steadiness(served.records, served.edges, served.energy_j, w)
    assert st["in_system"]["end"] > 1.5 * st["in_system"]["start"]
    # requests stay ~80 s in a 11 s window: too short to test, but a backlog that grows this much is no swing
    assert st["not_tested"] and not st["in_system"]["tested"]
    assert any(r.startswith("the backlog grows from") for r in st["saturated"])
    assert st["arrivals"] - st["completed"] == pytest.approx(st["in_system"]["end"] - st["in_system"]["start"], abs=1)
    v = verdict(st, min_requests=10)
    assert not v["valid"] and v["saturated"]
    assert any(r.startswith("saturated: the backlog grows") for r in v["reasons"])


def test_power_that_drifts_makes_a_window_not_steady():
    served = simulate(poisson(4.0, 300), lengths(300), slots=8)
    w = choose_window(served.records, served.edges)
    drift = served.energy_j * np.linspace(1.0, 1.6, len(served.energy_j))  # e.g. clocks or heat creeping up
    st = steadiness(served.records, served.edges, drift, w)
    assert any(r.startswith("power trends from") for r in st["not_steady"]) and st["saturated"] == []


def test_the_records_must_agree_with_the_servers_gauges():
    served = simulate(poisson(4.0, 300), lengths(300), slots=8)
    w = choose_window(served.records, served.edges)
    times = np.arange(w.start_s, w.end_s, 0.5)
    ours = in_system(served.records, times)
    agree = steadiness(served.records, served.edges, served.energy_j, w, (times, ours))
    assert agree["not_steady"] == [] and agree["in_system"]["server_mean"] == pytest.approx(ours.mean())
    off = steadiness(served.records, served.edges, served.energy_j, w, (times, ours + 10))
    assert any("vLLM's gauges" in r for r in off["not_steady"])


def test_every_reason_is_named():
    steady = {"saturated": [], "not_steady": [], "completed": 5}
    v = verdict(steady, min_requests=50, short_window=True, throttled=["gpu_idle", "hw_thermal"], clock_offset_s=0.2)
    assert not v["valid"] and not v["saturated"]
    text = " | ".join(v["reasons"])
    for part in ("too few requests: 5 completed in the window, 50 needed", "shorter than two updates",
                 "clocks throttled (hw_thermal)", "+200 ms off the monitor's"):  # fmt: skip
        assert part in text
    assert "gpu_idle" not in text  # an idle GPU is not a throttled one
    # the board's own power limit regulating the clocks is the GPU's normal operation, not a slowdown
    assert verdict(steady, min_requests=5, throttled=["sw_power_cap", "applications_clocks"], clock_offset_s=0.01)[
        "valid"
    ]


def test_a_window_record_round_trips():
    w = Window(10.0, 40.0, 3.0, 1.5, 41.0)
    assert Window(**{k: v for k, v in w.record().items() if k != "duration_s"}) == w
    assert w.record()["duration_s"] == 30.0
