"""Attribution (conservation, weights) on synthetic series."""

from __future__ import annotations

import numpy as np
import pytest

from compare.attribution import Weights, attribute, fit_weights, prefill_interval

W = Weights(prefill_j_per_token=0.1, decode_j_per_token=1.0, fit="test")


def req(sent: float, first: float, n_in: int, chunk_times: list[float]) -> dict:
    return {"sent_s": sent, "first_token_s": first, "usage_input_tokens": n_in, "chunks": [(t, 1) for t in chunk_times]}


def random_run(seed: int, n: int = 40):
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(n):
        sent = rng.uniform(0, 50)
        first = sent + rng.uniform(0.05, 0.5)
        records.append(
            req(sent, first, int(rng.integers(10, 2000)), sorted(first + rng.uniform(0, 5, rng.integers(1, 60))))
        )
    edges = np.arange(0.0, 60.01, 0.5)
    energy = rng.uniform(30, 300, len(edges) - 1)
    return records, edges, energy


@pytest.mark.parametrize("idle_w", [0.0, 50.0, 1000.0])
def test_requests_plus_idle_is_what_was_measured(idle_w):
    for seed in range(5):
        records, edges, energy = random_run(seed)
        a = attribute(records, edges, energy, W, idle_power_w=idle_w)
        assert a.per_request_j.sum() + a.idle_j == pytest.approx(energy.sum(), rel=1e-12)
        assert (a.per_request_j >= 0).all() and a.idle_j >= 0


def test_a_lone_request_gets_its_slices_and_quiet_slices_stay_idle():
    r = req(0.0, 1.0, 100, [1.5, 2.5])
    a = attribute([r], [0, 1, 2, 3, 4], [10.0, 20.0, 30.0, 40.0], W)
    assert a.per_request_j[0] == pytest.approx(60.0)  # slices 0–2 had its work; slice 3 none
    assert a.idle_j == pytest.approx(40.0)


def test_the_weights_split_a_shared_slice():
    prefill = req(0.0, 1.0, 100, [])  # 100 prefill tokens in [0, 1): work 10
    decode = req(-5.0, -4.0, 1, [0.2, 0.4, 0.6, 0.8, 0.9])  # 5 decode tokens in [0, 1): work 5
    a = attribute([prefill, decode], [0.0, 1.0], [30.0], W)
    assert a.per_request_j == pytest.approx([20.0, 10.0])
    even = attribute([prefill, decode], [0.0, 1.0], [30.0], Weights(1.0, 1.0, "even"))
    assert even.per_request_j == pytest.approx([30.0 * 100 / 105, 30.0 * 5 / 105])


def test_dynamic_view_removes_loaded_idle_first():
    r = req(0.0, 0.5, 10, [0.7])
    a = attribute([r], [0.0, 1.0], [150.0], W, idle_power_w=100.0)
    assert a.per_request_j[0] == pytest.approx(50.0) and a.idle_j == pytest.approx(100.0)


def test_fit_recovers_prefill_and_decode_costs():
    runs = [(i, o, 0.02 * i + 0.3 * o) for i, o in [(512, 400), (2048, 64), (128, 512), (4096, 16)]]
    w = fit_weights(runs)
    assert (w.prefill_j_per_token, w.decode_j_per_token) == pytest.approx((0.02, 0.3))
    assert "R²=1.000" in w.fit
    with pytest.raises(ValueError, match="at least two"):
        fit_weights(runs[:1])


def test_prefill_is_where_the_engine_did_it_not_in_the_queue():
    r = req(0.0, 10.0, 1000, [10.5])  # queued for nine seconds, then prefilled at 1000 tokens/s
    assert prefill_interval(r, 1000.0) == pytest.approx((9.0, 10.0))
    assert prefill_interval(r, None) == (0.0, 10.0)  # without a rate: from send to first token
    assert prefill_interval(r, 10.0) == (0.0, 10.0)  # never before it was sent
    a = attribute([r], [0.0, 9.0, 10.0, 11.0], [900.0, 100.0, 100.0], W, prefill_tokens_per_s=1000.0)
    assert a.per_request_j[0] == pytest.approx(200.0) and a.idle_j == pytest.approx(900.0)  # the queue's slice idle
    assert prefill_interval({"sent_s": 0.0, "first_token_s": None, "usage_input_tokens": 5}, 1.0) is None
