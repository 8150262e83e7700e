"""On a real NVIDIA GPU (skipped elsewhere, saying why): NVML as the monitor reads it."""

from __future__ import annotations

import time

import pytest

from monitor.sampler import Sampler
from monitor.sources import NvmlSource

pytestmark = pytest.mark.gpu


def test_nvml_reads_a_real_counter_and_power():
    src = NvmlSource()
    devices = src.open()
    try:
        assert devices and all(d.uuid.startswith("GPU-") for d in devices)
        dev = devices[0]
        first = src.read(dev)
        time.sleep(0.5)
        second = src.read(dev)
        status = src.status(dev)
        assert second.energy_j > first.energy_j  # even an idle GPU draws tens of watts
        assert status.power_limit_w is not None and status.power_limit_w > 0
        assert 0 < second.power_w < 2 * status.power_limit_w
        assert status.sm_clock_hz is not None and status.sm_clock_hz > 1e8
        assert status.memory_used_bytes is not None and status.memory_used_bytes >= 0
        assert status.throttle_reasons is not None
    finally:
        src.close()


def test_the_counter_ticks_and_agrees_with_instant_power():
    src = NvmlSource()
    sampler = Sampler([(src, src.open()[:1])], interval_s=0.01, status_interval_s=0.5, counter_anchor_s=0.0)
    with sampler:
        time.sleep(3.0)
        end = sampler.now() - 0.2
        w = sampler.energy(end - 2.0, end)[sampler.devices[0].key]
        (state,) = sampler.states()
    assert 0.02 <= w.update_period_s <= 0.5
    assert w.energy_j > 0 and w.uncertainty_j < 0.02 * w.energy_j
    assert not w.short_window
    assert state.validation_ratio is not None and 0.8 < state.validation_ratio < 1.25


def test_anchored_reading_reads_the_counter_rarely():
    src = NvmlSource()
    sampler = Sampler([(src, src.open()[:1])], interval_s=0.01, counter_anchor_s=0.5)
    with sampler:
        time.sleep(5.0)
        end = sampler.now() - 0.6
        w = sampler.energy(end - 3.0, end)[sampler.devices[0].key]
        (state,) = sampler.states()
        polls = sampler.stats().polls_total
    assert state.counter_reads < 0.25 * polls
    assert w.updates >= 4 and w.uncertainty_j < 0.05 * w.energy_j
