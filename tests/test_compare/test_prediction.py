"""Predicted beside measured (``compare.prediction``): which part of a profile's closed loop the fit reads,
when a prediction agrees with a measurement, and a run's own loops predicting a window they never saw."""

from __future__ import annotations

import numpy as np
import pytest

from compare.prediction import _agrees, ladder_span, little
from predict.forecast import replay
from predict.monotone import Curve
from predict.profile import Profile
from predict.simulate import Job


def record(sent: float, first: float, last: float, status: str = "ok") -> dict:
    return {"status": status, "sent_s": sent, "first_token_s": first, "last_token_s": last, "scheduled_s": sent}


def test_a_profile_loop_is_read_from_its_cohort_s_last_first_token_to_its_last_token():
    """The start cohort's burst of prompts is done at its last first token (not its last end: a long cohort
    request need not hold the span back, since every token after that is placed by the records)."""
    rs = [record(0.0, 0.5, 9.0), record(0.0, 0.8, 1.0), record(1.0, 1.2, 2.0), record(2.0, 2.3, 3.5)]
    assert ladder_span(rs, 2) == (0.8, 9.0)
    assert ladder_span([record(0.0, 0.5, 0.6, "http_error")], 1) is None  # nothing served: nothing to read


@pytest.mark.parametrize(
    ("band", "measured", "agrees"),
    [
        ({"low": 0.9, "high": 1.1}, {"mean": 1.0}, True),  # one segment: its figure inside the interval
        ({"low": 0.9, "high": 0.95}, {"mean": 1.0}, False),
        ({"low": 0.9, "high": 0.95}, {"mean": 1.0, "low": 0.94, "high": 1.2}, True),  # the intervals overlap
        ({"low": 0.9, "high": 0.93}, {"mean": 1.0, "low": 0.94, "high": 1.2}, False),
        (None, {"mean": 1.0}, None),  # nothing predicted
        ({"low": 0.9, "high": 1.1}, {}, None),  # nothing measured
    ],
)
def test_agreement_is_overlap_or_the_measured_figure_inside(band, measured, agrees):
    assert _agrees(band, measured) is agrees


def flat_profile(power_w: float = 300.0, step_s: float = 0.01) -> Profile:
    n = (1.0, 8.0)
    return Profile(8, 4096, 100.0, 1.0, Curve(n, (power_w, power_w), (1.0, 1.0), "flat"),
                   Curve(n, (step_s, step_s), (1e-4, 1e-4), "linear"), 0.0, 0.0, 0.0, 0.0)  # fmt: skip


def test_a_window_of_lone_requests_is_predicted_at_one_running():
    """Requests that never overlap each run alone: the window's energy is P(1) while one runs and the loaded
    idle between them, its output tokens theirs: the simulation and Little's law both give that."""
    p = flat_profile()
    jobs = [Job(2.0 * k, 1, 11) for k in range(10)]  # 11 tokens at 10 ms: 0.1 s each, one every 2 s
    o = replay(p, jobs, (0.0, 20.0))
    busy = sum(0.1 for _ in jobs)
    expected = (300.0 * busy + 100.0 * (20.0 - busy)) / (10 * 11)
    assert o.j_per_output_token == pytest.approx(expected, rel=0.02)
    records = [record(j.arrival_s, j.arrival_s + 0.01, j.arrival_s + 0.1) for j in jobs]
    seg = {"window": {"start_s": 0.0, "end_s": 20.0}, "tokens_per_s": {"output": 110 / 20.0}}
    # Little's law: 0.5 arrivals/s × 0.1 s in system = 0.05 running, so P(0.05) = 100 + 0.05 × 200 W
    assert little(records, seg, p) == pytest.approx((100.0 + 0.05 * 200.0) / 5.5, rel=1e-9)
    assert np.isfinite(o.ttft_p50_s)
