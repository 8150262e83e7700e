"""The profile: monotone curves, its fit on synthetic series with known parameters, its file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from known_profiles import LEVELS, saturating

from predict.errors import PredictError
from predict.monotone import Curve, isotonic
from predict.observe import Run
from predict.profile import Profile, bins_of, fit, load, save
from predict.simulate import Job, as_records, energy_slices, simulate, steady_part


def test_isotonic_pools_adjacent_violators():
    assert isotonic([1, 3, 2, 4], [1, 1, 1, 1]).tolist() == [1, 2.5, 2.5, 4]
    assert isotonic([5, 1], [3, 1]).tolist() == [4, 4]


def test_a_curve_is_linear_in_log_n_flat_below_and_flat_or_linear_beyond():
    c = Curve((1.0, 4.0), (100.0, 300.0), (1.0, 1.0))
    assert float(c(2.0)) == pytest.approx(200.0)  # halfway in log n
    assert float(c(0.5)) == 100.0 and float(c(8.0)) == 300.0
    lin = Curve((1.0, 4.0), (1.0, 4.0), (0.1, 0.1), "linear")
    assert float(lin(8.0)) == pytest.approx(8.0)


def test_draws_stay_positive_and_monotone():
    c = Curve((1.0, 2.0, 4.0), (1.0, 1.05, 1.1), (0.5, 0.5, 0.5))
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = c.draw(rng)
        assert min(d.value) > 0 and list(d.value) == sorted(d.value)


def test_draws_of_a_flat_top_are_centred_on_it():
    """A cap held over many points (a pooled block of the fit): its draws average the fit's value, as
    drawing each point apart and pooling again did not (the largest of many noisy points rose above it)."""
    n = tuple(float(x) for x in range(1, 41))
    c = Curve(n, (400.0,) * 10 + (680.0,) * 30, (20.0,) * 40)
    rng = np.random.default_rng(1)
    tops = [d.value[-1] for d in (c.draw(rng) for _ in range(2000))]
    assert np.mean(tops) == pytest.approx(680.0, rel=0.002)
    assert np.std(tops) == pytest.approx(20.0 / np.sqrt(30), rel=0.1)  # the block's pooled error


def test_bins_are_single_counts_where_dense_and_sparse_transients_join_a_neighbour():
    seconds = np.zeros(40)
    seconds[[1, 2, 3]] = 5.0
    seconds[5] = 0.01  # a dip a closed loop passes through
    seconds[6] = 4.0
    seconds[30:33] = 0.5  # a bin closes once it holds a second
    assert bins_of(seconds) == [(1, 1), (2, 2), (3, 3), (5, 6), (30, 31), (32, 32)]


def ladder(profile: Profile, levels=LEVELS, seed=0) -> list[Run]:
    """A closed-loop ladder served by the simulation, recorded as a load generator and a 4 Hz energy
    series would have: the fit's input with a known answer."""
    rng = np.random.default_rng(seed)
    runs = []
    for c in levels:
        jobs = [Job(0.0, int(rng.integers(50, 800)), int(rng.integers(20, 200))) for _ in range(6 * c + 40)]
        sim = simulate(profile, jobs, concurrency=c, chunks=True)
        edges = np.arange(0.0, float(sim.span_end_s.max()), 0.25)
        t0, t1 = steady_part(sim, c)
        epoch = 1.8e9  # Unix seconds, as the records carry them
        runs.append(Run(f"c{c}", as_records(sim, epoch), edges + epoch, energy_slices(sim, edges),
                        (t0 + epoch, t1 + epoch)))  # fmt: skip
    return runs


def test_the_fit_recovers_a_known_profile_from_a_closed_loop_ladder():
    true = saturating()
    got = fit(ladder(true), true.idle_w, 0.1, true.max_num_seqs, true.token_budget, "synthetic ladder")
    n = np.array(got.power_w.n)
    assert set(LEVELS) <= set(np.round(n).astype(int))
    at = np.isin(np.round(n), LEVELS)
    np.testing.assert_allclose(np.array(got.power_w.value)[at], true.power_w(n[at]), rtol=0.02)
    np.testing.assert_allclose(np.array(got.step_s.value)[at], true.step_s(n[at]), rtol=0.01)
    assert got.prefill_s_per_token == pytest.approx(true.prefill_s_per_token, rel=0.02)
    assert got.prefill_j_per_token == pytest.approx(true.prefill_j_per_token, rel=0.1)
    assert got.idle_w == true.idle_w  # no time with nothing running: the idle measured apart
    assert all(se > 0 for se in got.power_w.se)


def test_the_fit_reads_the_power_between_requests_where_runs_have_it():
    true = saturating()
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.exponential(1.0, 150))  # light load: mostly one or none running
    sim = simulate(true, [Job(float(x), 200, 50) for x in t], chunks=True)
    edges = np.arange(0.0, float(sim.span_end_s.max()), 0.25)
    got = fit([Run("light", as_records(sim, 0.0), edges, energy_slices(sim, edges))], 50.0, 1.0, 64, 2048)
    assert got.idle_w == pytest.approx(true.idle_w, rel=0.02)  # not the 50 W given
    assert got.power(1) == pytest.approx(true.power(1), rel=0.03)


def test_a_profile_survives_its_file(tmp_path):
    p = saturating(rel_se=0.01)
    path = save(p, tmp_path)
    assert path.name == "profile.json"
    assert load(tmp_path) == p
    assert load(path) == p


def test_a_bad_profile_file_is_one_line_naming_it(tmp_path):
    with pytest.raises(PredictError, match="no such profile"):
        load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PredictError, match=r"bad\.json: not JSON"):
        load(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({"version": 0}))
    with pytest.raises(PredictError, match="not a version-1 profile"):
        load(tmp_path / "old.json")
    record = saturating().record()
    del record["step_s"]
    (tmp_path / "torn.json").write_text(json.dumps(record))
    with pytest.raises(PredictError, match="not a profile"):
        load(tmp_path / "torn.json")
