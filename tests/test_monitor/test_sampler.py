"""The sampler thread over fake hardware: change points, stale devices, recovery, resets, the log."""

from __future__ import annotations

import time

import numpy as np
import pynvml
import pytest
from fake_nvml import FakeNvml, make_gpus

from monitor.errors import MonitorError
from monitor.sampler import Sampler
from monitor.sources import NvmlSource
from monitor.ticks import TIGHT_S


def wait_for(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def nvml_sampler(n_gpus: int = 1, counter_anchor_s: float = 0.0, **kwargs) -> tuple[Sampler, FakeNvml]:
    """Fake GPUs whose counters tick every 50 ms; by default the counter is read on every 5 ms poll."""
    lib = FakeNvml(make_gpus(n_gpus, power_w=200.0, period_s=0.05))
    src = NvmlSource(lib=lib, visible_devices=None)
    sampler = Sampler(
        [(src, src.open())],
        interval_s=0.005,
        status_interval_s=0.1,
        retry_s=0.05,
        counter_anchor_s=counter_anchor_s,
        **kwargs,
    )
    return sampler, lib


def test_records_counter_steps_and_window_energy():
    sampler, _ = nvml_sampler(2)
    with sampler:
        t0 = sampler.now()
        time.sleep(0.8)
        t1 = sampler.now() - 0.1
        energy = sampler.energy(t0 + 0.1, t1)
    assert set(energy) == {"gpu0", "gpu1"}
    for w in energy.values():
        assert w.energy_j == pytest.approx(200.0 * (t1 - t0 - 0.1), rel=0.15)
        assert w.update_period_s == pytest.approx(0.05, rel=0.3)
        assert w.power_samples > w.updates > 5
    assert sampler.stats().polls_total > 50
    assert not sampler.running and sampler.failure is None


def test_a_costly_counter_is_read_only_around_anchor_ticks():
    sampler, lib = nvml_sampler(counter_anchor_s=0.25)
    with sampler:
        time.sleep(2.0)
        end = sampler.now() - 0.3
        view = sampler.view("gpu0", end - 1.0, end)
        w = sampler.energy(end - 1.0, end)["gpu0"]
        polls = sampler.stats().polls_total
        (state,) = sampler.states()
    energy_reads = lib.calls["nvmlDeviceGetTotalEnergyConsumption"]
    assert energy_reads < 0.3 * polls  # the power field is read on the other polls
    assert state.counter_reads == energy_reads - 1  # less the read made when opening
    steps = np.diff(view.update_t_s[2:-2])
    assert np.median(steps) == pytest.approx(0.25, abs=0.03)
    assert (view.update_gap_s[1:] <= TIGHT_S).all()  # every change point is bracketed by two reads
    assert w.energy_j == pytest.approx(200.0, rel=0.1)


def test_status_and_validation_ratio_are_refreshed():
    sampler, _ = nvml_sampler()
    with sampler:
        wait_for(lambda: sampler.states()[0].validation_ratio is not None)
        (state,) = sampler.states()
    assert state.status.sm_clock_hz == pytest.approx(1.98e9)
    assert state.validation_ratio == pytest.approx(1.0, rel=0.15)
    assert state.counter_power_w == pytest.approx(200.0, rel=0.2)


def test_an_nvml_error_marks_the_device_stale_and_it_recovers():
    sampler, lib = nvml_sampler(2)
    with sampler:
        time.sleep(0.2)
        lib.gpus[1].fail(pynvml.NVML_ERROR_GPU_IS_LOST)
        wait_for(lambda: sampler.states()[1].stale)
        polls = sampler.stats().polls_total
        wait_for(lambda: sampler.stats().polls_total > polls + 10)  # it keeps polling the others
        states = sampler.states()
        assert not states[0].stale
        assert "GPU is lost" in states[1].last_error
        lib.gpus[1].heal()
        wait_for(lambda: not sampler.states()[1].stale)
        assert sampler.states()[1].errors_total >= 1
        t = sampler.now()
        time.sleep(0.3)
        w = sampler.energy(t - 0.8, sampler.now() - 0.05, ["gpu1"])["gpu1"]
        assert w.energy_j > 0  # the counter kept counting while the device was unreadable
    assert sampler.failure is None


def test_a_driver_reload_never_gives_negative_energy():
    sampler, lib = nvml_sampler()
    with sampler:
        time.sleep(0.3)
        lib.gpus[0].reload()
        time.sleep(0.3)
        (state,) = sampler.states()
        assert state.latest.segments == 2
        end = sampler.now()
        w = sampler.energy(end - 0.55, end - 0.02)["gpu0"]
    assert w.segments == 2
    assert w.energy_j > 0
    assert state.latest.energy_total_j > 0


def test_sample_log_is_appended(tmp_path):
    log = tmp_path / "sub" / "samples.csv"
    sampler, _ = nvml_sampler(sample_log=log)
    with sampler:
        time.sleep(0.3)
    lines = log.read_text().splitlines()
    assert lines[0] == "t_s,device,energy_j,power_w"
    assert len(lines) > 20
    _t, dev, e, p = lines[-1].split(",")
    assert dev == "gpu0" and float(e) > 0 and float(p) == pytest.approx(200.0)


def test_unwritable_sample_log_is_refused_before_sampling(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    sampler, _ = nvml_sampler(sample_log=blocker / "samples.csv")
    with pytest.raises(MonitorError, match="cannot write the sample log"):
        sampler.start()
    assert not sampler.running


def test_bad_settings_and_unknown_device():
    lib = FakeNvml(make_gpus(1))
    src = NvmlSource(lib=lib, visible_devices=None)
    opened = [(src, src.open())]
    with pytest.raises(MonitorError, match="must be positive"):
        Sampler(opened, interval_s=0)
    with pytest.raises(MonitorError, match="share a key"):
        Sampler(opened + opened)
    with pytest.raises(MonitorError, match="no device 'gpu9'"):
        Sampler(opened).view("gpu9", 0.0, 1.0)


def test_a_dropped_sampler_stops_its_thread():
    import gc
    import threading

    sampler, _ = nvml_sampler()
    sampler.start()
    thread = next(t for t in threading.enumerate() if t.name == "joulebench-sampler")
    del sampler
    gc.collect()
    thread.join(timeout=2.0)
    assert not thread.is_alive()
