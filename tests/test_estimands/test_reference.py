"""The saturated reference's steady part and its checks, on simulated closed loops."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import simulate

from estimands.reference import HALVES_TOLERANCE, MIX_TOLERANCE, checks, pool_mix, steady_span
from estimands.tokens import tokens_in_window

RATE = 20000.0


def closed_loop(batches: int, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    pool = [(int(i), int(o)) for i, o in zip(rng.integers(100, 800, 8 * batches), rng.integers(20, 200, 8 * batches),
                                             strict=True)]  # fmt: skip
    return simulate(np.zeros(len(pool)), pool, slots=8, closed_loop=True).records


def mix_off(records: list[dict], t0: float, t1: float) -> float:
    n_in, n_out = tokens_in_window(records, t0, t1, RATE)
    pool_in, pool_out = pool_mix(records)
    return (n_in / n_out) / (pool_in / pool_out) - 1


def test_the_start_transient_is_cut_and_the_span_has_the_pool_s_mix():
    """Opened at the start cohort's first tokens (the earlier rule), the span holds the cohort's decode but
    not its prefill: too few input tokens per output token. Opened when the cohort has ended, it has its
    pool's mix."""
    records = closed_loop(batches=40)
    cohort = sorted(records, key=lambda r: r["sent_s"])[:8]
    t0, t1 = steady_span(records, 8)
    assert t0 == pytest.approx(max(r["last_token_s"] for r in cohort))
    assert t1 == pytest.approx(max(r["sent_s"] for r in records))
    assert abs(mix_off(records, t0, t1)) < MIX_TOLERANCE
    short = closed_loop(batches=3)  # the earlier default: three batches, opened at the cohort's first tokens
    earlier = max(r["first_token_s"] for r in sorted(short, key=lambda r: r["sent_s"])[:8])
    assert mix_off(short, earlier, max(r["sent_s"] for r in short)) < -MIX_TOLERANCE


def test_the_checks_name_a_mix_off_the_pool_and_halves_that_disagree():
    ok = checks((385.0, 100.0), (4000.0, 1000.0), [(10.0, 200.0, 50.0), (10.1, 190.0, 50.0)], 0.02)
    assert ok["reasons"] == [] and ok["mix"]["off"] == pytest.approx(-0.0375)
    assert ok["halves"]["j_per_work"] == pytest.approx([10.0 / 54.0, 10.1 / 53.8])
    off = checks((300.0, 100.0), (4000.0, 1000.0), [(10.0, 200.0, 50.0), (12.0, 200.0, 50.0)], 0.02)
    assert len(off["reasons"]) == 2
    assert off["reasons"][0].startswith("not the workload's mix") and "-25.0 %" in off["reasons"][0]
    assert off["reasons"][1].startswith("not steady") and off["halves"]["off"] == pytest.approx(0.2)
    assert off["halves"]["off"] > HALVES_TOLERANCE
    unread = checks((400.0, 100.0), (4000.0, 1000.0), [None, (1.0, 1.0, 1.0)], 0.02)
    assert unread["reasons"] == ["its halves were not both measured (each needs two counter updates)"]


def test_the_halves_are_compared_on_work_not_tokens():
    """Two halves that cost the same per unit of work but hold different mixes: equal at the prices, 25 %
    apart per token."""
    halves = [(0.02 * 1000 + 50.0, 1000.0, 50.0), (0.02 * 250 + 50.0, 250.0, 50.0)]  # a = 0.02, b = 1 J
    assert checks((1250.0, 100.0), (1250.0, 100.0), halves, 0.02)["reasons"] == []
    per_token = checks((1250.0, 100.0), (1250.0, 100.0), halves, 1.0)  # priced per token, they differ
    assert per_token["reasons"] and per_token["halves"]["off"] > HALVES_TOLERANCE
    unpriced = checks((1250.0, 100.0), (1250.0, 100.0), halves, None)  # no prices: shown, not judged
    assert unpriced["reasons"] == [] and unpriced["halves"]["judged"] is False
