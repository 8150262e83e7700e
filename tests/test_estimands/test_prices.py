"""The saturated prices and the premium on the same work, on simulated servers whose energy is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic import simulate

from estimands.attribution import slices
from estimands.prices import Prices, fit_prices, premium, work
from estimands.reference import steady_span
from estimands.tokens import tokens_in_window
from estimands.windows import choose_window, slices_in

RATE = 20000.0  # simulate's prefill rate, as vLLM's metrics would give it


def lengths(n: int, inputs: tuple[int, int], outputs: tuple[int, int], seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return [(int(i), int(o)) for i, o in zip(rng.integers(*inputs, n), rng.integers(*outputs, n), strict=True)]


def saturated(pool: list[tuple[int, int]], idle_w: float) -> tuple[float, tuple[float, float], object]:
    """A closed loop's steady part: its energy, its tokens (input, output) and its prices."""
    ref = simulate(np.zeros(len(pool)), pool, slots=8, idle_w=idle_w, closed_loop=True)
    t0, t1 = steady_span(ref.records, 8)
    k = (ref.edges[:-1] >= t0) & (ref.edges[1:] <= t1)
    a, b = float(ref.edges[:-1][k][0]), float(ref.edges[1:][k][-1])
    f = slices(ref.records, ref.edges, RATE).features()[k]
    prices = fit_prices(ref.energy_j[k], f[:, 1], f[:, 2], [0] * int(k.sum()))
    return float(ref.energy_j[k].sum()), tokens_in_window(ref.records, a, b, RATE), prices


def test_the_prices_are_the_simulated_costs_when_there_is_no_idle_power():
    _, _, prices = saturated(lengths(240, (100, 800), (20, 200), 1), idle_w=0.0)
    assert prices.ratio == pytest.approx(0.001 / 0.05, rel=0.01)  # simulate's prefill and decode J per token
    assert prices.r2 > 0.99


def test_the_premium_does_not_move_with_the_window_s_mix_when_energy_is_proportional_to_work():
    """Online traffic of long prompts against a reference of short ones: J/token and J/output-token ratios
    compare the two mixes (far from 1); the premium prices the window's own work and finds it costs what it
    costs at saturation (1), as it must when energy is a·prefill + b·decode everywhere."""
    e_ref, t_ref, prices = saturated(lengths(240, (100, 300), (20, 200), 1), idle_w=0.0)
    long = lengths(300, (1500, 3000), (20, 200), 2)
    online = simulate(np.cumsum(np.full(300, 0.2)), long, slots=8, idle_w=0.0)
    w = choose_window(online.records, online.edges)
    e = float(online.energy_j[slices_in(online.edges, w)].sum())
    t = tokens_in_window(online.records, w.start_s, w.end_s, RATE)
    assert premium(e, t, e_ref, t_ref, prices.ratio) == pytest.approx(1.0, abs=0.02)
    per_token = (e / sum(t)) / (e_ref / sum(t_ref))
    per_output = (e / t[1]) / (e_ref / t_ref[1])
    assert per_token < 0.6 and per_output > 1.3  # two "premiums" of the same work, neither of them 1


def test_work_is_priced_in_decode_tokens():
    assert work(1000, 100, 0.02) == pytest.approx(120.0)
    assert premium(0.0, (1, 1), 1.0, (1, 1), 0.1) is None
    assert fit_prices([1.0, 2.0], [1, 2], [1, 2], [0, 0]) is None  # too few rows
    assert fit_prices([1.0, 2.0, 3.0], [1, 2, 3], [0, 0, 0], [0, 1, 2]) is None  # no decode cost to scale by


def test_prices_read_back_from_their_record_through_json():
    p = fit_prices([3.0, 5.0, 4.1, 7.0], [2, 4, 3, 6], [1, 1, 1, 1], [0, 0, 0, 0])
    assert p is not None
    back = Prices.from_record(json.loads(json.dumps(p.record())))  # NaN travels as NaN
    assert back.ratio == p.ratio and back.rows == p.rows and back.method == p.method
    assert back.ratio_se == pytest.approx(p.ratio_se, nan_ok=True)
