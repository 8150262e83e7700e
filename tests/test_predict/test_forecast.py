"""The predictions' known answers: the saturated closed loop, the steady span, the Little baseline."""

from __future__ import annotations

import numpy as np
import pytest
from known_profiles import flat, saturating

from predict.forecast import interval, replay, saturated
from predict.simulate import Job


def test_the_saturated_reference_completes_c_requests_per_out_steps():
    """Each of the c slots serves requests back to back, out × d each (prefill free in time)."""
    p = flat(power_w=500.0, step_s=0.02, max_num_seqs=8)
    rng = np.random.default_rng(0)
    lengths = [(100, int(o)) for o in rng.integers(20, 81, 400)]
    ref = saturated(p, lengths)
    mean_out = np.mean([o for _, o in lengths])
    assert ref.completed_per_s == pytest.approx(8 / (mean_out * 0.02), rel=0.03)
    assert ref.figures.j_per_output_token == pytest.approx(500.0 * 0.02 / 8)
    assert ref.figures.running_mean == pytest.approx(8)


def test_with_flat_power_the_little_baseline_is_the_simulation():
    """P(n) the same at every n but idle: J/output-token = P × busy time ÷ tokens, which the baseline gives
    only when the server is never idle — with P(0) = P it is exact."""
    p = flat(power_w=300.0, step_s=0.01, idle_w=300.0)
    rng = np.random.default_rng(0)
    jobs = [Job(float(t), 100, 40) for t in np.cumsum(rng.exponential(0.2, 2000))]
    o = replay(p, jobs)
    assert o.little_j_per_output_token == pytest.approx(o.j_per_output_token, rel=0.03)
    assert o.little_running == pytest.approx(o.running_mean, rel=0.05)
    assert o.ttft_p50_s == pytest.approx(0.01, abs=0.011)  # the prefill step, after waiting for a boundary
    assert o.tpot_p50_s == pytest.approx(0.01)


def test_j_per_output_token_falls_with_load_toward_the_reference():
    p = saturating()
    ref = saturated(p, [(300, 100)]).figures.j_per_output_token
    rng = np.random.default_rng(2)
    figures = []
    for rate in (1.0, 4.0, 16.0):
        jobs = [Job(float(t), 300, 100) for t in np.cumsum(rng.exponential(1 / rate, 600))]
        figures.append(replay(p, jobs).j_per_output_token)
    assert figures == sorted(figures, reverse=True)
    assert figures[-1] > ref


def test_interval_is_the_median_and_the_95_percent_of_replicates():
    out = interval([*np.arange(1.0, 1002.0), np.nan])
    assert out["median"] == 501.0 and out["replicates"] == 1001
    assert out["low"] == pytest.approx(26.0) and out["high"] == pytest.approx(976.0)
