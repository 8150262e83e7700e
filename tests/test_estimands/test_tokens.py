"""Which tokens a span of a replay holds: prefill where the engine did it, decode at each chunk."""

from __future__ import annotations

import pytest

from estimands.tokens import tokens_in_window


def record(sent: float, first: float, n_in: int, chunks: list[float]) -> dict:
    return {"sent_s": sent, "first_token_s": first, "usage_input_tokens": n_in, "chunks": [(t, 1) for t in chunks]}


def test_tokens_in_a_window_count_only_what_was_processed_inside():
    r = record(0.0, 1.0, 100, [1.5, 2.5])
    assert tokens_in_window([r], 0.5, 2.0) == pytest.approx((50.0, 1.0))
    assert tokens_in_window([r], 0.0, 3.0) == pytest.approx((100.0, 2.0))
    assert tokens_in_window([r], 3.0, 4.0) == (0.0, 0.0)
    assert tokens_in_window([r], 0.5, 2.0, prefill_tokens_per_s=200.0) == pytest.approx((100.0, 1.0))  # in [0.5, 1]


def test_a_prefill_too_fast_to_resolve_falls_at_the_first_token_at_any_clock():
    """At Unix times (1.8e9 s) a nanosecond is below a float's resolution: no division by a zero length."""
    t = 1.8e9
    r = record(t, t + 1.0, 100, [t + 1.5])
    assert tokens_in_window([r], t + 0.5, t + 1.2, prefill_tokens_per_s=1e15) == (100.0, 0.0)
    assert tokens_in_window([r], t + 0.5, t + 0.9, prefill_tokens_per_s=1e15) == (0.0, 0.0)
