"""Arrival processes: rate and variability within tolerance, reproducible, burstiness kept."""

from __future__ import annotations

import numpy as np
import pytest
from paths import TRACES

from loadgen.arrivals import CLOSED_LOOP, PROCESSES, compress, constant, gamma, mix, poisson, resample, workload
from loadgen.errors import LoadgenError
from loadgen.traces import Trace, TraceRequest, resolve_trace


def synthetic(n: int = 5000, seed: int = 1) -> Trace:
    """A bursty trace: bursts of Poisson arrivals separated by quiet spells."""
    rng = np.random.default_rng(seed)
    gaps = np.where(rng.random(n) < 0.1, rng.exponential(5.0, n), rng.exponential(0.05, n))
    times = np.cumsum(gaps) - gaps[0]
    return Trace("bursty", [TraceRequest(float(t), 100, 10) for t in times])


def cv(times: np.ndarray) -> float:
    g = np.diff(times)
    return float(g.std() / g.mean())


def dispersion(times: np.ndarray, bin_s: float = 10.0) -> float:
    counts = np.bincount((times // bin_s).astype(int))[:-1]
    return float(counts.var() / counts.mean())


def test_poisson_rate_and_cv():
    s = poisson(synthetic(), 20.0, 1000.0, seed=3)
    assert s.rate_per_s == pytest.approx(20.0, rel=0.03)
    assert cv(s.times_s) == pytest.approx(1.0, abs=0.05)
    assert s.label == "poisson@20.00" and (np.diff(s.times_s) >= 0).all()


@pytest.mark.parametrize("target_cv", [0.5, 2.0])
def test_gamma_cv(target_cv):
    s = gamma(synthetic(), 10.0, 2000.0, cv=target_cv, seed=5)
    assert s.rate_per_s == pytest.approx(10.0, rel=0.05)
    assert cv(s.times_s) == pytest.approx(target_cv, rel=0.08)


def test_constant_is_exact():
    s = constant(synthetic(), 4.0, 10.0)
    assert np.allclose(np.diff(s.times_s), 0.25) and len(s) == 40


def test_compress_keeps_the_shape():
    t = synthetic()
    s = compress(t, 2.0)
    assert np.allclose(s.times_s * 2.0, [r.arrival_s for r in t.requests])
    assert (s.index == np.arange(len(t.requests))).all() and s.label == "trace×2.00"


@pytest.mark.parametrize("factor", [0.5, 2.0, 2.5])
def test_resample_changes_rate_and_keeps_burstiness(factor):
    t = synthetic()
    native = compress(t)
    s = resample(t, factor, seed=7)
    assert len(s) == pytest.approx(factor * len(t.requests), rel=0.03)
    assert s.index.min() >= 0 and s.index.max() < len(t.requests)
    if factor > 1:  # superposed copies: variance and mean both scale, dispersion stays
        assert dispersion(s.times_s) == pytest.approx(dispersion(native.times_s), rel=0.35)
    poisson_same_rate = poisson(t, s.rate_per_s, native.times_s[-1], seed=1)
    assert dispersion(s.times_s) > 3 * dispersion(poisson_same_rate.times_s)  # still bursty


def test_seeded_and_reproducible():
    t = synthetic()
    for make in (lambda seed: poisson(t, 5.0, 100.0, seed), lambda seed: resample(t, 1.7, seed)):
        a, b, c = make(1), make(1), make(2)
        assert np.array_equal(a.times_s, b.times_s) and np.array_equal(a.index, b.index)
        assert not np.array_equal(a.times_s, c.times_s)


def test_mix_meets_the_share():
    conv, code = poisson(synthetic(), 10.0, 500.0, seed=1), poisson(synthetic(), 5.0, 500.0, seed=2)
    m = mix(conv, code, 0.3, code_offset=10_000, seed=3)
    share = np.mean(m.index < 10_000)
    assert share == pytest.approx(0.3, abs=0.02)
    assert (np.diff(m.times_s) >= 0).all()


def test_bad_parameters_are_refused():
    with pytest.raises(LoadgenError, match="positive"):
        poisson(synthetic(), 0.0, 10.0)
    with pytest.raises(LoadgenError, match="positive"):
        resample(synthetic(), -1.0)
    with pytest.raises(LoadgenError, match=r"share must be in \[0, 1\]"):
        mix(constant(synthetic(), 1, 10), constant(synthetic(), 1, 10), 1.5, 0)


@pytest.mark.skipif(not TRACES.is_dir(), reason=f"needs the shared traces beside the checkout ({TRACES})")
def test_the_conversation_trace_at_half_and_double_rate():
    t = resolve_trace("azure-conv", trace_dir=TRACES)
    for factor in (0.5, 2.0):
        s = PROCESSES["trace-resample"](t, factor, 600.0, 0)
        assert s.rate_per_s == pytest.approx(5.53 * factor, rel=0.15)


def test_every_registered_process_runs_by_name():
    t = synthetic()
    for name, make in PROCESSES.items():
        s = make(t, 2.0, 50.0, 0, 1.5)
        assert len(s) > 0 and (s.times_s < 50.0).all(), name
    assert cv(PROCESSES["gamma"](t, 10.0, 2000.0, 0, 2.0).times_s) == pytest.approx(2.0, rel=0.08)


@pytest.mark.parametrize("process", sorted(set(PROCESSES) - {CLOSED_LOOP}))
def test_a_fixed_workload_sends_the_same_requests_at_every_rate(process):
    """One workload: each of the population's requests exactly once, in order, whatever the rate."""
    rng = np.random.default_rng(7)
    pop = Trace("pop", [TraceRequest(float(t), int(i), int(o)) for t, i, o in
                        zip(np.cumsum(rng.exponential(0.5, 300)), rng.integers(1, 4000, 300),
                            rng.integers(1, 900, 300), strict=True)])  # fmt: skip
    for rate in (0.25, 1.0, 3.5):
        s = workload(process, pop, rate, seed=2)
        assert len(s) == 300 and list(s.index) == list(range(300))
        assert (np.diff(s.times_s) >= 0).all() and s.times_s[0] >= 0
        assert s.label.endswith("300 requests")
    slow, fast = workload(process, pop, 0.5, seed=2), workload(process, pop, 2.0, seed=2)
    assert slow.times_s[-1] > 2.5 * fast.times_s[-1]  # a quarter of the rate takes about four times as long
    if process == "trace":
        assert np.allclose(workload(process, pop, 2.0).times_s, (pop_times(pop) - pop_times(pop)[0]) / 2.0)


def pop_times(t: Trace) -> np.ndarray:
    return np.array([r.arrival_s for r in t.requests])


def test_a_fixed_workload_keeps_the_trace_burstiness_when_resampled():
    t = synthetic(2000)
    for rate in (0.5, 2.0):
        s = workload("trace-resample", t, rate, seed=4)
        assert dispersion(s.times_s, bin_s=10.0 / rate) > 5  # bursty, unlike Poisson's ≈ 1
        assert s.rate_per_s == pytest.approx(rate * t.rate_per_s, rel=0.35)
    with pytest.raises(LoadgenError, match="unknown arrival process 'bursts'"):
        workload("bursts", t, 1.0)


def test_saturate_is_a_closed_loop_of_every_request():
    t = synthetic(50)
    s = workload(CLOSED_LOOP, t, 1.0)
    assert len(s) == 50 and list(s.index) == list(range(50)) and not s.times_s.any()  # no times: the loop sends
    assert PROCESSES[CLOSED_LOOP](t, 1.0, 10.0, 0).label == "saturate, 50 requests"
