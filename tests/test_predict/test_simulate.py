"""The simulation against cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from known_profiles import flat, saturating

from loadgen.arrivals import poisson
from loadgen.traces import Trace, TraceRequest
from predict.simulate import Job, as_records, simulate, steady_part


def test_a_single_request_takes_its_prefill_step_then_one_step_per_further_token():
    p = flat(power_w=300.0, step_s=0.01, tau=1e-4, gamma=0.002)
    sim = simulate(p, [Job(1.0, 500, 20)])
    prefill = 0.01 + 1e-4 * 500  # the step that prefills the prompt gives the first token
    assert sim.ttft_s[0] == pytest.approx(prefill)
    assert sim.e2e_s[0] == pytest.approx(prefill + 19 * 0.01)
    assert sim.tpot_s[0] == pytest.approx(0.01)
    # idle before it arrives, P(1) while it runs, γ for each prompt token
    assert sim.energy_j.sum() == pytest.approx(100.0 * 1.0 + 300.0 * sim.e2e_s[0] + 0.002 * 500)
    f = sim.figures(1.0, float(sim.last_token_s[0]))
    assert f.output_tokens == pytest.approx(20)
    assert f.input_tokens == pytest.approx(500)


def test_a_prompt_over_the_token_budget_is_prefilled_in_chunks():
    p = flat(step_s=0.01, tau=1e-4, budget=2048)
    sim = simulate(p, [Job(0.0, 5000, 3)])
    assert sim.ttft_s[0] == pytest.approx(3 * 0.01 + 1e-4 * 5000)  # three steps of ≤ 2048 prompt tokens


def test_requests_beyond_max_num_seqs_wait_for_a_slot():
    p = flat(step_s=0.01, max_num_seqs=1)
    sim = simulate(p, [Job(0.0, 10, 5), Job(0.0, 10, 5)])
    assert sim.admitted_s[1] == pytest.approx(sim.last_token_s[0])
    assert sim.e2e_s[1] == pytest.approx(2 * sim.e2e_s[0])


def test_a_closed_loop_keeps_its_concurrency_running_at_n_over_step_of_n_tokens_per_second():
    p = saturating()
    p = type(p)(**{**p.__dict__, "prefill_s_per_token": 0.0, "prefill_j_per_token": 0.0})
    rng = np.random.default_rng(0)
    for c in (1, 8, 32):
        jobs = [Job(0.0, int(rng.integers(10, 500)), int(rng.integers(20, 200))) for _ in range(10 * c)]
        sim = simulate(p, jobs, concurrency=c)
        t0, t1 = steady_part(sim, c)
        f = sim.figures(t0, t1)
        assert f.running_mean == pytest.approx(c)
        assert f.output_tokens / (t1 - t0) == pytest.approx(c / p.step(c), rel=1e-6)
        assert f.energy_j / (t1 - t0) == pytest.approx(p.power(c), rel=1e-9)


def test_little_s_law_holds_in_an_m_d_infinity_regime():
    """Poisson arrivals, identical requests, no queue (max_num_seqs far above the occupancy), free prefill:
    every request runs out × d from its admission, so the mean running count is λ × out × d."""
    d, out, lam = 0.01, 50, 10.0
    p = flat(step_s=d, max_num_seqs=256)
    trace = Trace("same", [TraceRequest(0.0, 100, out)])
    means = []
    for seed in range(12):
        times = poisson(trace, lam, 400.0, seed=seed).times_s
        sim = simulate(p, [Job(float(t), 100, out) for t in times])
        means.append(sim.figures(20.0, 380.0).running_mean)
    expected = lam * out * d
    se = np.std(means, ddof=1) / math.sqrt(len(means))
    assert abs(np.mean(means) - expected) < 3 * se + 1e-9
    assert np.mean(means) == pytest.approx(expected, rel=0.05)


def test_the_records_it_writes_read_as_a_replay():
    sim = simulate(saturating(), [Job(0.0, 100, 4), Job(0.001, 200, 3)], chunks=True)
    records = as_records(sim, epoch_s=1000.0)
    assert [len(r["chunks"]) for r in records] == [4, 3]
    assert all(r["chunks"][0][0] == r["first_token_s"] and r["chunks"][-1][0] == r["last_token_s"] for r in records)


def test_bad_jobs_are_refused():
    with pytest.raises(ValueError, match="sorted"):
        simulate(flat(), [Job(1.0, 1, 1), Job(0.0, 1, 1)])
    with pytest.raises(ValueError, match="at least one"):
        simulate(flat(), [Job(0.0, 0, 1)])
