"""Attribution with the per-slice energy model: conservation, the idle rule, stability against the slice
width, the fit recovering known costs. Simulated servers, no servers."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import simulate

from estimands.attribution import EnergyModel, attribute, fit_model, slices
from estimands.tokens import prefill_interval

MODEL = EnergyModel(step_j=0.5, prefill_j_per_token=0.001, decode_j_per_token=0.05)


def req(sent: float, first: float, n_in: int, chunk_times: list[float]) -> dict:
    return {"sent_s": sent, "first_token_s": first, "usage_input_tokens": n_in, "chunks": [(t, 1) for t in chunk_times],
            "last_token_s": chunk_times[-1] if chunk_times else first, "status": "ok"}  # fmt: skip


def served(n: int = 200, rate: float = 5.0, seed: int = 0, **kw):
    rng = np.random.default_rng(seed)
    lengths = [(int(i), int(o)) for i, o in zip(rng.integers(100, 3000, n), rng.integers(5, 200, n), strict=True)]
    return simulate(np.cumsum(rng.exponential(1.0 / rate, n)), lengths, slots=16, **kw)


@pytest.mark.parametrize("seed", range(3))
def test_both_views_conserve_the_measured_energy(seed):
    s = served(seed=seed, noise_w=20.0, step_j=0.3)
    sl = slices(s.records, s.edges, 20000.0)
    a = attribute(sl, s.energy_j, 100.0, MODEL)
    assert a.attributional_j.sum() + a.unattributed_j == pytest.approx(s.energy_j.sum(), rel=1e-12)
    assert a.dynamic_j.sum() + a.unattributed_dynamic_j + 100.0 * np.diff(s.edges).sum() == pytest.approx(
        s.energy_j.sum(), rel=1e-12
    )
    assert a.unattributed_idle_j >= 0 and (a.attributional_j > a.dynamic_j).all()


def test_idle_goes_to_the_requests_in_service_and_none_while_none_is():
    lone = req(0.0, 1.0, 100, [1.5, 2.5])  # in service over [0, 2.5] (no rate: prefill from its send)
    sl = slices([lone], [0, 1, 2, 3, 4], None)
    a = attribute(sl, [110.0, 110.0, 110.0, 100.0], 100.0, MODEL)
    assert a.unattributed_idle_j == pytest.approx(100.0 * 1.5)  # [2.5, 4]: nobody in service
    assert a.attributional_j[0] == pytest.approx(100.0 * 2.5 + 30.0)  # its idle share and the dynamic of 3 slices
    queued = req(0.0, 9.0, 1000, [9.5])  # waited nine seconds in a queue, prefilled at 1000 tokens/s
    sl = slices([queued], np.arange(0.0, 11.0), 1000.0)
    a = attribute(sl, np.full(10, 100.0), 100.0, MODEL)
    assert a.attributional_j[0] == pytest.approx(100.0 * 1.5)  # in service from 8 s to 9.5 s only
    two = [req(0.0, 0.5, 10, [0.9]), req(0.0, 0.5, 10, [0.9, 1.9])]
    a = attribute(slices(two, [0.0, 1.0, 2.0], None), [100.0, 100.0], 100.0, MODEL)
    # slice 0: both in service (0.9 s and 1 s of it); slice 1: the second alone for 0.9 s, then nobody
    assert a.attributional_j == pytest.approx([100.0 * 0.9 / 1.9, 100.0 * 1.0 / 1.9 + 90.0])
    assert a.unattributed_idle_j == pytest.approx(10.0)


def test_the_attributed_total_does_not_move_with_the_slice_width():
    fine = served(step_j=0.2, noise_w=30.0, slice_s=0.05, seed=4)
    totals, per_request = [], []
    for width in (0.1, 0.5):
        k = round(width / 0.05)
        n = (len(fine.energy_j) // k) * k
        edges = fine.edges[: n + 1 : k]
        energy = fine.energy_j[:n].reshape(-1, k).sum(axis=1)
        sl = slices(fine.records, edges, 20000.0)
        model = fit_model(sl.features(), energy - 100.0 * np.diff(edges), [i // 20 for i in range(len(energy))])
        a = attribute(sl, energy, 100.0, model)
        totals.append(a.attributional_j.sum())
        per_request.append(a.attributional_j)
    assert totals[0] == pytest.approx(totals[1], rel=0.05)
    assert np.corrcoef(per_request[0], per_request[1])[0, 1] > 0.95


def test_the_fit_recovers_the_costs_and_their_errors():
    s = served(n=400, rate=8.0, step_j=0.4, noise_w=5.0, seed=2)
    sl = slices(s.records, s.edges, 20000.0)
    y = s.energy_j - 100.0 * np.diff(s.edges)
    model = fit_model(sl.features(), y, [i // 40 for i in range(len(y))])
    assert model.step_j == pytest.approx(0.4, rel=0.15)
    assert model.prefill_j_per_token == pytest.approx(0.001, rel=0.15)
    assert model.decode_j_per_token == pytest.approx(0.05, rel=0.15)
    assert all(0 < e < 0.5 * v for e, v in zip(model.se, model.theta, strict=True))  # finite, and smaller
    assert model.r2 > 0.8 and len(model.replicas()) == model.groups
    assert "jackknife" in model.describe()
    neg = fit_model(sl.features(), -y, [0] * len(y))  # energy that falls with work: no negative cost fitted
    assert (neg.theta >= 0).all()


def test_prefill_is_where_the_engine_did_it_not_in_the_queue():
    r = req(0.0, 10.0, 1000, [10.5])  # queued for nine seconds, then prefilled at 1000 tokens/s
    assert prefill_interval(r, 1000.0) == pytest.approx((9.0, 10.0))
    assert prefill_interval(r, None) == (0.0, 10.0)  # without a rate: from send to first token
    assert prefill_interval(r, 10.0) == (0.0, 10.0)  # never before it was sent
    sl = slices([r], [0.0, 9.0, 10.0, 11.0], 1000.0)
    assert sl.prefill[0] == pytest.approx([0.0, 1000.0, 0.0]) and sl.decode[0] == pytest.approx([0.0, 0.0, 1.0])
    assert prefill_interval({"sent_s": 0.0, "first_token_s": None, "usage_input_tokens": 5}, 1.0) is None
