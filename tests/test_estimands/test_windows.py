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


def test_a_flat_series_has_no_trend_and_a_ramp_has_one():
    rng = np.random.default_rng(3)
    t = np.arange(0, 60, 0.25)
    flat = trend(t, 10 + rng.normal(0, 2, len(t)))
    assert not flat.significant and not flat.material(0.25, 1.0)
    ramp = trend(t, 5 + t + rng.normal(0, 2, len(t)))
    assert ramp.significant and ramp.material(0.25, 1.0) and ramp.change == pytest.approx(60, rel=0.1)


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
    assert any("requests in system trend" in r for r in st["not_steady"])
    assert "the backlog grows" in st["saturated"]
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
