"""Reading a costly counter only around its predicted updates (pure logic, synthetic ticks)."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.ticks import TIGHT_S, CounterReads


def simulate(
    reads: CounterReads,
    seconds: float,
    period_s: float = 0.1,
    phase_s: float = 0.037,
    poll_s: float = 0.01,
    jitter_s: float = 0.0,
    seed: int = 0,
):
    """Poll for ``seconds``; the counter steps by 1 every ``period_s`` (tick times jittered)."""
    rng = np.random.default_rng(seed)
    n_ticks = int(seconds / period_s) + 2
    ticks = phase_s + period_s * np.arange(n_ticks) + rng.uniform(-jitter_s, jitter_s, n_ticks)
    recorded, n_reads = [], 0
    for t in np.arange(0.0, seconds, poll_s):
        if reads.due(t):
            n_reads += 1
            value = float(np.searchsorted(ticks, t, side="right"))
            gap = reads.observe(t, value)
            if gap is not None:
                recorded.append((t, value, gap))
    return recorded, n_reads, ticks


def test_cheap_counters_are_read_every_poll():
    reads = CounterReads(anchor_s=0.0)
    recorded, n_reads, _ = simulate(reads, 2.0)
    assert n_reads == 200
    assert len(recorded) == 21  # the baseline and every tick
    assert not reads.locked


def test_locks_onto_the_tick_and_reads_far_less():
    reads = CounterReads(anchor_s=0.5)
    recorded, n_reads, ticks = simulate(reads, 30.0, jitter_s=0.004)
    assert reads.locked
    assert reads.period_s == pytest.approx(0.1, rel=0.01)
    times = np.array([t for t, _, _ in recorded[1:]])
    assert np.median(np.diff(times[5:])) == pytest.approx(0.5, abs=0.02)
    assert np.sum(np.diff(times[5:]) > 0.55) <= 1  # the first read almost always precedes the tick
    assert n_reads <= 3.5 * len(recorded) + 20  # about 3 reads an anchor instead of 50 polls
    assert n_reads < 0.08 * 3000
    for t, value, gap in recorded[1:]:
        assert 0 < gap <= TIGHT_S
        tick = ticks[int(value) - 1]  # the update this change point shows
        assert t - gap <= tick <= t  # it happened inside the recorded bracket


def test_values_are_cumulative_so_nothing_is_lost_between_anchors():
    reads = CounterReads(anchor_s=1.0)
    recorded, _, ticks = simulate(reads, 20.0)
    t_last, v_last, _ = recorded[-1]
    assert v_last == float(np.searchsorted(ticks, t_last, side="right"))


def test_a_missed_prediction_falls_back_to_every_poll():
    reads = CounterReads(anchor_s=0.5)
    simulate(reads, 3.0)
    assert reads.locked
    t = reads.next_tick_s
    assert t is not None
    value = 1000.0
    reads.observe(t - 0.005, value)
    for k in range(1, 40):  # the counter stops: no change for 0.4 s after the prediction
        reads.observe(t + 0.01 * k, value)
    assert not reads.locked and reads.due(t + 0.5)


def test_a_late_first_read_is_only_a_reference():
    reads = CounterReads(anchor_s=0.0)
    assert reads.observe(0.0, 1.0) == 0.0
    assert reads.observe(0.5, 2.0) is None  # changed, but we were not looking for 0.5 s
    assert reads.observe(0.51, 2.0) is None
    assert reads.observe(0.52, 3.0) == pytest.approx(0.01)
