"""The in-process meter over two fake GPUs at the NVML boundary: summed, broken down, one going stale."""

from __future__ import annotations

import sys
import time

import pynvml
import pytest
from fake_nvml import FakeNvml, make_gpus

from monitor.meter import LocalMeter, stable_power


@pytest.fixture
def two_gpus(monkeypatch):
    lib = FakeNvml(make_gpus(2, power_w=100.0, period_s=0.05))
    lib.gpus[1].set_power(300.0)
    monkeypatch.setitem(sys.modules, "pynvml", lib)  # what NvmlSource imports when opened
    meter = LocalMeter("nvml", settle_s=0.2)
    time.sleep(0.4)
    yield meter, lib
    meter.close()


def span(meter: LocalMeter, seconds: float) -> tuple[float, float]:
    t0 = meter.now()
    time.sleep(seconds)
    return t0, meter.now()


def wait_stale(meter: LocalMeter, key: str, stale: bool = True) -> None:
    deadline = time.monotonic() + 5.0
    while next(s.stale for s in meter.sampler.states() if s.device.key == key) is not stale:
        assert time.monotonic() < deadline, f"{key} never became {'stale' if stale else 'fresh'}"
        time.sleep(0.01)


def test_two_gpus_are_summed_and_each_is_kept(two_gpus):
    meter, _ = two_gpus
    t0, t1 = span(meter, 1.0)
    r = meter.energy(t0, t1)
    assert r.kind == "gpu" and set(r.devices) == {"gpu0", "gpu1"} and r.uncovered_s == {}
    dur = t1 - t0
    assert r.devices["gpu0"]["energy_j"] == pytest.approx(100.0 * dur, rel=0.1)
    assert r.devices["gpu1"]["energy_j"] == pytest.approx(300.0 * dur, rel=0.1)
    assert r.energy_j == pytest.approx(sum(d["energy_j"] for d in r.devices.values()))
    idle = stable_power(meter, block_s=0.3, need=3, max_s=5.0, rel_tol=0.1)
    assert idle.power_w == pytest.approx(400.0, rel=0.1)
    assert idle.devices_w == pytest.approx({"gpu0": 100.0, "gpu1": 300.0}, rel=0.1)  # idle per GPU


def test_a_gpu_that_goes_stale_makes_the_sum_incomplete_and_says_so(two_gpus):
    meter, lib = two_gpus
    before = meter.now()
    lib.gpus[1].fail(pynvml.NVML_ERROR_GPU_IS_LOST)
    wait_stale(meter, "gpu1")
    t0, t1 = span(meter, 1.0)
    after = meter.energy(t0, t1)  # gpu1 read nothing in this window: it is there, counted as unread
    assert after.devices["gpu1"]["stale"] and after.devices["gpu1"]["covered_s"] == 0.0
    assert after.uncovered_s.keys() == {"gpu1"} and after.uncovered_s["gpu1"] == pytest.approx(t1 - t0)
    assert after.energy_j == pytest.approx(after.devices["gpu0"]["energy_j"])
    across = meter.energy(before - 0.3, t1)  # read until it failed, then not
    assert 0.0 < across.devices["gpu1"]["covered_s"] < t1 - before + 0.3
    assert across.uncovered_s["gpu1"] == pytest.approx(t1 - before + 0.3 - across.devices["gpu1"]["covered_s"])
    series = meter.series(before - 0.3, t1, 0.25)  # the dense series still answers: the unread slices count 0
    assert len(series.energy_j) > 0

    lib.gpus[1].heal()  # it comes back: its counter ran on, so the window across the spell is whole again
    wait_stale(meter, "gpu1", stale=False)
    healed = meter.energy(t0, meter.now() - 0.1)
    assert healed.uncovered_s == {}
    assert healed.devices["gpu1"]["energy_j"] == pytest.approx(300.0 * (healed.end_s - healed.start_s), rel=0.15)
