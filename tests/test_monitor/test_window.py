"""Window energy on synthetic series: exactness at updates, power shaping, resets, gaps, flags."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest

from monitor.errors import WindowError
from monitor.series import SeriesView
from monitor.window import (
    SHAPE_FLOOR_LINEAR,
    SHAPE_FLOOR_POWERED,
    counter_power_ratio,
    estimate_power_lag,
    slice_edges,
    update_period_s,
    window_energy,
    window_series,
)


def flat_series(power_w: float = 100.0, duration_s: float = 10.0, period_s: float = 0.1, poll_s: float = 0.01):
    """A counter updating every ``period_s`` at constant power, with power polled every ``poll_s``."""
    t = np.round(np.arange(0.0, duration_s + 1e-9, period_s), 9)
    c = 5000.0 + power_w * t
    pt = np.round(np.arange(0.0, duration_s + 1e-9, poll_s), 9)
    return SeriesView.from_arrays(t, c, pt, np.full(len(pt), power_w))


def test_exact_at_counter_updates():
    view = flat_series()
    w = window_energy(view, 0.0, 10.0)
    assert w.energy_j == pytest.approx(1000.0, abs=1e-9)
    assert w.uncertainty_j == pytest.approx(0.0, abs=1e-9)  # edges on updates, update times exact
    i, j = 13, 71
    w = window_energy(view, view.update_t_s[i], view.update_t_s[j])
    assert w.energy_j == pytest.approx(view.update_energy_j[j] - view.update_energy_j[i], abs=1e-9)


def test_edges_inside_steps_flat_power():
    w = window_energy(flat_series(), 0.05, 1.05)
    assert w.energy_j == pytest.approx(100.0, abs=1e-6)
    # each edge sits mid-step of a 10 J step: the powered floor, 5 % × ½ × 10 J, per edge
    assert w.uncertainty_j == pytest.approx(math.sqrt(2) * SHAPE_FLOOR_POWERED * 0.5 * 10.0, rel=1e-6)
    assert w.updates == 10
    assert not w.short_window


def test_power_shapes_energy_inside_a_step():
    # One 0.1 s step of 10 J: no power in its first half, 200 W in its second.
    t = [0.0, 0.1, 0.2]
    c = [0.0, 10.0, 20.0]
    pt = np.round(np.arange(0.0, 0.2001, 0.01), 9)
    pw = np.where((pt > 0.05) & (pt <= 0.1), 200.0, 0.0)
    pw[pt > 0.1] = 100.0
    view = SeriesView.from_arrays(t, c, pt, pw)
    first_half = window_energy(view, 0.0, 0.05).energy_j
    second_half = window_energy(view, 0.05, 0.1).energy_j
    assert first_half + second_half == pytest.approx(10.0, abs=1e-9)  # the counter, conserved
    assert second_half > 8.5  # shaped by the power, not the 5 J a linear split gives
    linear = SeriesView.from_arrays(t, c)  # same counter, no power samples
    assert window_energy(linear, 0.05, 0.1).energy_j == pytest.approx(5.0)


def test_uncertainty_is_larger_without_power_samples():
    shaped = flat_series()
    bare = SeriesView.from_arrays(shaped.update_t_s, shaped.update_energy_j)
    a = window_energy(shaped, 1.03, 2.07)
    b = window_energy(bare, 1.03, 2.07)
    assert a.energy_j == pytest.approx(b.energy_j)
    assert b.uncertainty_j > 5 * a.uncertainty_j
    assert b.uncertainty_j == pytest.approx(
        math.hypot(SHAPE_FLOOR_LINEAR * 0.3 * 10.0, SHAPE_FLOOR_LINEAR * 0.3 * 10.0), rel=1e-6
    )


def test_update_timing_enters_the_uncertainty():
    base = flat_series(period_s=0.1)
    gaps = np.full(len(base.update_t_s), 0.01)
    view = SeriesView.from_arrays(
        base.update_t_s, base.update_energy_j, base.power_t_s, base.power_w, update_gap_s=gaps
    )
    w = window_energy(view, 1.0, 2.0)
    per_edge = 100.0 * 0.01 / math.sqrt(12)  # P̄ × g / √12
    assert w.uncertainty_j == pytest.approx(math.sqrt(2) * per_edge, rel=1e-6)


def test_windows_add_up():
    rng = np.random.default_rng(7)
    t = np.cumsum(rng.uniform(0.08, 0.12, 200))
    c = np.cumsum(rng.uniform(5.0, 50.0, 200))
    pt = np.sort(rng.uniform(t[0], t[-1], 2000))
    view = SeriesView.from_arrays(t, c, pt, rng.uniform(50.0, 500.0, 2000))
    cuts = np.sort(rng.uniform(t[0], t[-1], 12))
    whole = window_energy(view, cuts[0], cuts[-1]).energy_j
    parts = [window_energy(view, a, b).energy_j for a, b in itertools.pairwise(cuts)]
    assert all(p >= 0 for p in parts)
    assert sum(parts) == pytest.approx(whole, rel=1e-12)


def test_short_window_flag():
    view = flat_series()
    assert update_period_s(view) == pytest.approx(0.1)
    assert window_energy(view, 1.0, 1.15).short_window
    assert not window_energy(view, 1.0, 1.2).short_window
    one_update = SeriesView.from_arrays([0.0], [0.0], [0.0, 0.5], [10.0, 10.0])
    assert window_energy(one_update, 0.0, 0.5).short_window  # no period known: never trusted


def test_counter_reset_starts_a_new_segment():
    # 100 W throughout; the driver reloads between t = 5.0 and 5.2, the counter restarts at 3 J.
    t0 = np.round(np.arange(0.0, 5.0001, 0.1), 9)
    t1 = np.round(np.arange(5.2, 8.0001, 0.1), 9)
    c0 = 50_000.0 + 100.0 * t0
    c1 = 3.0 + 100.0 * (t1 - 5.2)
    view = SeriesView.from_arrays(
        np.concatenate([t0, t1]),
        np.concatenate([c0, c1]),
        update_segment=np.concatenate([np.zeros(len(t0)), np.ones(len(t1))]),
    )
    w = window_energy(view, 4.0, 6.0)
    assert w.segments == 2
    assert w.gap_s == pytest.approx(0.2)
    assert w.energy_j == pytest.approx(200.0)  # 100 J + 20 J estimated across the gap + 80 J
    assert w.uncertainty_j >= 20.0  # the gap's energy is a guess: all of it is uncertain
    for a, b in [(4.9, 5.1), (5.05, 5.15), (5.1, 5.3), (0.0, 8.0)]:
        assert window_energy(view, a, b).energy_j >= 0.0


def test_polling_gap_is_interpolated_with_a_large_uncertainty():
    t = np.array([0.0, 0.1, 0.2, 3.2, 3.3])  # nothing polled between 0.2 and 3.2
    c = 100.0 * t
    w = window_energy(SeriesView.from_arrays(t, c), 1.2, 2.2)
    assert w.energy_j == pytest.approx(100.0)
    assert w.uncertainty_j >= 0.5 * (1 / 3) * 300.0 * math.sqrt(2) * 0.99


def test_open_end_is_extrapolated_from_power():
    view = flat_series(duration_s=10.0)
    view = SeriesView.from_arrays(
        view.update_t_s,
        view.update_energy_j,
        np.append(view.power_t_s, [10.02, 10.04, 10.05]),
        np.append(view.power_w, [100.0, 100.0, 100.0]),
    )
    w = window_energy(view, 9.5, 10.05)
    assert w.extrapolated_s == pytest.approx(0.05)
    assert w.energy_j == pytest.approx(55.0)
    assert w.uncertainty_j == pytest.approx(SHAPE_FLOOR_POWERED * 5.0, rel=1e-6)


def test_window_partly_before_the_data_is_clipped():
    w = window_energy(flat_series(), -1.0, 1.0)
    assert w.covered_s == pytest.approx(1.0)
    assert w.energy_j == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("t0", "t1", "message"),
    [(20.0, 30.0, "outside the recorded data"), (2.0, 1.0, "start < end"), (math.nan, 1.0, "finite")],
)
def test_bad_windows_are_refused(t0, t1, message):
    with pytest.raises(WindowError, match=message):
        window_energy(flat_series(), t0, t1)


def test_no_data_is_refused():
    with pytest.raises(WindowError, match="no energy has been recorded"):
        window_energy(SeriesView.from_arrays([], []), 0.0, 1.0)


def test_counter_power_ratio():
    base = flat_series(power_w=100.0)
    low = SeriesView.from_arrays(base.update_t_s, base.update_energy_j, base.power_t_s, base.power_w * 0.95)
    assert counter_power_ratio(low, 0.0, 10.0) == pytest.approx(1 / 0.95)
    bare = SeriesView.from_arrays(base.update_t_s, base.update_energy_j)
    assert counter_power_ratio(bare, 0.0, 10.0) is None
    assert counter_power_ratio(base, 3.0, 3.05) is None


def bursty(lag_s: float, seconds: float = 30.0, seed: int = 3) -> SeriesView:
    """A counter ticking every 0.1 s under bursts of power; power samples every 10 ms, ``lag_s`` late."""
    rng = np.random.default_rng(seed)
    edges = np.cumsum(rng.uniform(0.3, 2.0, 64))
    levels = rng.choice([80.0, 700.0], len(edges))

    def power(t: np.ndarray) -> np.ndarray:
        return levels[np.minimum(np.searchsorted(edges, t), len(levels) - 1)]

    fine = np.arange(0.0, seconds, 0.001)
    energy = np.concatenate(([0.0], np.cumsum(power(fine[:-1]) * 0.001)))
    ticks = np.arange(0.0, seconds - 0.5, 0.1)
    polls = np.arange(0.0, seconds - 0.5, 0.01)
    return SeriesView.from_arrays(ticks, np.interp(ticks, fine, energy), polls, power(polls - lag_s))


@pytest.mark.parametrize("lag_s", [0.06, 0.1, -0.02])
def test_power_lag_is_learnt_from_bursts(lag_s):
    assert estimate_power_lag(bursty(lag_s)) == pytest.approx(lag_s, abs=0.006)


def test_no_lag_is_reported_as_nothing_to_correct():
    assert estimate_power_lag(bursty(0.0)) is None  # no candidate beats zero lag


def test_a_learnt_lag_makes_edges_accurate():
    view = bursty(0.06)
    exact = bursty(0.0)
    t0, t1 = 3.333, 17.777
    truth = window_energy(exact, t0, t1).energy_j
    late = window_energy(view, t0, t1).energy_j
    fixed = window_energy(replace(view, power_lag_s=0.06), t0, t1).energy_j
    assert abs(fixed - truth) < 0.5 * abs(late - truth) + 0.2


def test_flat_power_cannot_tell_a_lag():
    assert estimate_power_lag(flat_series()) is None


@pytest.mark.parametrize(("t0", "t1", "step", "n"), [(0.0, 1.0, 0.25, 4), (0.0, 1.1, 0.25, 5), (2.0, 2.1, 0.5, 1)])
def test_slice_edges_cover_the_window(t0, t1, step, n):
    edges = slice_edges(t0, t1, step)
    assert len(edges) == n + 1 and edges[0] == t0 and edges[-1] == t1
    assert np.all(np.diff(edges) > 0) and np.all(np.diff(edges) <= step + 1e-12)


def test_a_series_of_slices_sums_to_the_window():
    rng = np.random.default_rng(11)
    t = np.cumsum(rng.uniform(0.08, 0.12, 300))
    c = np.cumsum(rng.uniform(5.0, 50.0, 300))
    pt = np.sort(rng.uniform(t[0], t[-1], 3000))
    view = SeriesView.from_arrays(t, c, pt, rng.uniform(50.0, 500.0, 3000))
    edges = slice_edges(t[3] + 0.013, t[-3] - 0.02, 0.25)
    energy, uncertainty = window_series(view, edges)
    assert len(energy) == len(edges) - 1 and np.all(energy >= 0) and np.all(uncertainty >= 0)
    assert energy.sum() == pytest.approx(window_energy(view, edges[0], edges[-1]).energy_j, rel=1e-12)


def test_bad_slices_are_refused():
    with pytest.raises(WindowError, match="positive step"):
        slice_edges(0.0, 1.0, 0.0)
