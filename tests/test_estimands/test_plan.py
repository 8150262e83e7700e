"""The run's timeline and the plan its spread asks for (``estimands.plan``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from estimands.plan import MAX_SEGMENTS, plan, segments_needed, timeline
from estimands.uncertainty import budget

IDLE = {"device": {"start_s": 0.0, "end_s": 6.0}, "loaded": {"start_s": 106.0, "end_s": 112.0}}
LABELS = {0.25: "load 0.25", 0.5: "load 0.5"}


def spans() -> dict[tuple[float, int], tuple[float, float]]:
    """Two references, a profile loop and two rungs of two segments, each starting 2 s after the one before."""
    out, t = {}, 112.0
    for key, length in (((-1.0, 0), 60.0), ((-1.0, 1), 70.0), ((1.0, -1), 12.0), ((0.25, 0), 40.0),
                        ((0.25, 1), 44.0), ((0.5, 0), 20.0), ((0.5, 1), 22.0)):  # fmt: skip
        out[key] = (t + 2.0, t + 2.0 + length)
        t += 2.0 + length
    return out


def test_the_timeline_runs_in_order_and_counts_every_second_once():
    phases = timeline(dict(reversed(list(spans().items()))), IDLE, -1.0, -1, LABELS)
    assert [p["name"] for p in phases] == [
        "device idle (no vLLM)", "vLLM's start", "loaded idle (vLLM up, serving nothing)",
        "saturated reference, segment 1", "saturated reference, segment 2", "profile, 1 in flight",
        "load 0.25, segment 1", "load 0.25, segment 2", "load 0.5, segment 1", "load 0.5, segment 2",
    ]  # fmt: skip
    assert phases[1]["wall_s"] == 100.0  # vLLM's start: device idle's end → loaded idle's start
    assert phases[3]["wall_s"] == 62.0  # the gap before a phase is its own (its replay's start-up)
    assert sum(p["wall_s"] for p in phases) == pytest.approx(phases[-1]["end_s"] - phases[0]["start_s"])


def test_the_segments_needed_follow_the_spread():
    assert segments_needed(0.0, 0.0) == 2
    # a spread of 0.041 (the corrected H100 reference): three segments give ±10.7 %, four ±6.7 %
    assert segments_needed(0.041, 0.0) == 4
    wider = [segments_needed(s, 0.01) for s in (0.02, 0.05, 0.1, 0.2)]
    assert wider == sorted(wider) and wider[0] < wider[-1]
    assert segments_needed(0.05, 0.2) is None  # type B alone is wider than ±10 %
    assert segments_needed(10.0, 0.0) is None and MAX_SEGMENTS >= 20


def test_the_plan_reproduces_the_interval_it_promises():
    """The plan's segment count, fed back to the budget with the same spread, gives an interval within ±10 %;
    one fewer does not."""
    rng = np.random.default_rng(3)
    draws = np.exp(rng.normal(0.0, 0.06, 3))
    values = list(3.0 * draws / math.exp(np.log(draws).mean()))  # geometric mean 3, spread as drawn
    b = budget(values, {"interpolation": ([0.002] * 3, False)}, log=True)
    p = plan([{"label": "load 0.25", "premium": b, "segments": [{}] * 3}], timeline(spans(), IDLE, -1.0, -1, LABELS))
    n = p["segments"]
    assert p["loads"][0]["needed"] == p["loads"][0]["to_run"] == n  # every segment measured had a premium
    s = p["loads"][0]["sd_log"]
    assert s == pytest.approx(float(np.std(np.log(values), ddof=1)))

    def half(k: int) -> float:
        # k values of ln-spread exactly s: ±a (and a 0 where k is odd)
        a = s * math.sqrt((k - 1) / k) if k % 2 == 0 else s
        more = list(np.exp(a * np.array([-1.0, 1.0] * (k // 2) + [0.0] * (k % 2))))
        assert float(np.std(np.log(more), ddof=1)) == pytest.approx(s)
        one = budget(more, {"interpolation": ([0.002 * math.sqrt(k / 3)] * k, False)}, log=True)
        return one["high"] / one["mean"] - 1

    assert half(n) <= 0.10 < half(n - 1)
    assert p["per_segment_s"] == pytest.approx((62 + 72) / 2 + (42 + 46) / 2 + (22 + 24) / 2)
    assert p["fixed_s"] == pytest.approx(6 + 100 + 6 + 14)
    assert p["wall_s"] == pytest.approx(p["fixed_s"] + n * p["per_segment_s"])


def test_segments_lost_to_invalid_windows_are_planned_for():
    """A rung where 2 of 3 segments gave a premium runs half again as many as its spread asks for."""
    b = budget([2.9, 3.1], log=True)
    p = plan([{"label": "load 0.25", "premium": b, "segments": [{}] * 3}], timeline(spans(), IDLE, -1.0, -1, LABELS))
    row = p["loads"][0]
    assert row["to_run"] == math.ceil(row["needed"] * 3 / 2) and p["segments"] == row["to_run"]


def test_no_plan_without_two_valid_segments():
    b = budget([3.0], log=True)
    p = plan([{"label": "load 0.25", "premium": b}], timeline(spans(), IDLE, -1.0, -1, LABELS))
    assert p["segments"] is None and p["wall_s"] is None
    assert "fewer than two segments" in p["loads"][0]["reason"]
