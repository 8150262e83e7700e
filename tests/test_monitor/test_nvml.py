"""The NVML source against a fake NVML library (the hardware boundary)."""

from __future__ import annotations

import math

import pynvml
import pytest
from fake_nvml import FakeGpu, FakeNvml, make_gpus

from monitor.errors import DeviceReadError, SourceUnavailable
from monitor.sources import NvmlSource, RaplSource, open_sources
from monitor.sources.nvml import parse_visible_devices

UUIDS = ["GPU-aaaa1111", "GPU-bbbb2222", "GPU-aaab3333"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, [0, 1, 2]),
        ("", []),
        ("1", [1]),
        ("2,0", [2, 0]),
        ("0,7,1", [0]),  # CUDA stops at the first entry naming no device
        ("GPU-bbbb2222", [1]),
        ("GPU-bbbb", [1]),  # a unique UUID prefix
        ("GPU-aaa", []),  # an ambiguous prefix names no device
        ("1, GPU-aaab3333", [1, 2]),
        ("-1,0", []),
        ("0,0", [0]),
    ],
)
def test_cuda_visible_devices(value, expected):
    assert parse_visible_devices(value, 3, UUIDS) == expected


def test_mig_devices_are_refused_with_advice():
    with pytest.raises(SourceUnavailable, match="MIG"):
        parse_visible_devices("MIG-abcd", 3, UUIDS)


def test_opens_visible_gpus_and_reads_joules():
    lib = FakeNvml(make_gpus(3, power_w=250.0))
    src = NvmlSource(lib=lib, visible_devices="2,0")
    devices = src.open()
    assert [d.key for d in devices] == ["gpu2", "gpu0"]
    assert devices[0].uuid == lib.gpus[2].uuid and devices[0].name == "NVIDIA H100 80GB HBM3"
    r = src.read(devices[0])
    assert r.energy_j == pytest.approx(lib.gpus[2].energy_mj() / 1000.0)  # mJ → J at the source
    assert r.power_w == pytest.approx(250.0)
    assert "2 GPU(s)" in src.describe()
    src.close()
    assert not lib.initialized


def test_a_library_that_simulates_its_gpus_is_reported_so_and_hardware_is_not():
    assert NvmlSource(lib=FakeNvml(make_gpus(1))).open()[0].simulated == ""  # no word from the library: hardware
    lib = FakeNvml(make_gpus(1))
    lib.SIMULATED = "power follows the CPU load"
    src = NvmlSource(lib=lib)
    assert src.open()[0].simulated == "power follows the CPU load"
    assert "(simulated: power follows the CPU load)" in src.describe()
    src.close()


def test_status_is_in_si_units():
    lib = FakeNvml(make_gpus(1, power_w=321.0))
    src = NvmlSource(lib=lib, visible_devices=None)
    (dev,) = src.open()
    st = src.status(dev)
    assert st.power_average_w == pytest.approx(321.0)
    assert st.power_limit_w == pytest.approx(700.0)
    assert st.sm_clock_hz == pytest.approx(1.98e9)
    assert st.memory_clock_hz == pytest.approx(2.619e9)
    assert st.temperature_c == 45
    assert st.utilization_ratio == pytest.approx(0.87)
    assert st.memory_utilization_ratio == pytest.approx(0.40)
    assert st.memory_used_bytes == 12 * 2**30
    assert st.throttle_reasons == frozenset({"sw_power_cap"})


def test_missing_instant_power_field_gives_nan():
    lib = FakeNvml([FakeGpu(instant_supported=False)])
    src = NvmlSource(lib=lib, visible_devices=None)
    (dev,) = src.open()
    assert math.isnan(src.read(dev).power_w)
    assert math.isnan(src.read(dev).power_w)


def test_honours_the_environment(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [d.key for d in NvmlSource(lib=FakeNvml(make_gpus(2))).open()] == ["gpu1"]


def test_no_driver_says_so():
    lib = FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(SourceUnavailable, match="NVML could not start"):
        NvmlSource(lib=lib).open()


def test_no_visible_gpu_says_so():
    with pytest.raises(SourceUnavailable, match="no GPU is visible"):
        NvmlSource(lib=FakeNvml(make_gpus(2)), visible_devices="").open()


def test_gpu_without_energy_counter_is_refused():
    gpu = FakeGpu(name="Tesla K80")
    gpu.energy_supported = False
    lib = FakeNvml([gpu])
    with pytest.raises(SourceUnavailable, match=r"Tesla K80.*no energy counter"):
        NvmlSource(lib=lib, visible_devices=None).open()
    assert not lib.initialized  # shut down again on the way out


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (pynvml.NVML_ERROR_GPU_IS_LOST, "lost"),
        (pynvml.NVML_ERROR_TIMEOUT, "timeout"),
        (pynvml.NVML_ERROR_NOT_SUPPORTED, "not_supported"),
        (pynvml.NVML_ERROR_UNKNOWN, "error"),
    ],
)
def test_nvml_errors_are_mapped_once(code, reason):
    lib = FakeNvml(make_gpus(1))
    src = NvmlSource(lib=lib, visible_devices=None)
    (dev,) = src.open()
    lib.gpus[0].fail(code)
    with pytest.raises(DeviceReadError, match="gpu0") as info:
        src.read(dev)
    assert info.value.reason == reason
    assert not isinstance(info.value, pynvml.NVMLError)
    lib.gpus[0].heal()
    assert src.read(dev).energy_j > 0


def test_lost_gpu_handle_is_reacquired():
    lib = FakeNvml(make_gpus(1))
    src = NvmlSource(lib=lib, visible_devices=None)
    (dev,) = src.open()
    lib.gpus[0].fail(pynvml.NVML_ERROR_GPU_IS_LOST)
    for _ in range(3):
        with pytest.raises(DeviceReadError):
            src.read(dev)
    lib.gpus[0].heal()
    src.read(dev)
    assert lib.calls["nvmlDeviceGetHandleByUUID"] >= 1


def test_reinitialises_after_the_driver_comes_back():
    lib = FakeNvml(make_gpus(1))
    src = NvmlSource(lib=lib, visible_devices=None)
    (dev,) = src.open()
    lib.nvmlShutdown()  # as if the driver went away: every call is now "uninitialized"
    with pytest.raises(DeviceReadError) as info:
        src.read(dev)
    assert info.value.reason == "uninitialized"
    assert src.read(dev).energy_j > 0
    assert lib.initialized


def test_auto_prefers_nvml_and_says_which(tmp_path):
    opened, why = open_sources(
        "auto",
        factories={
            "nvml": lambda: NvmlSource(lib=FakeNvml(make_gpus(2)), visible_devices=None),
            "rapl": lambda: RaplSource(tmp_path),
        },
    )
    assert [s.name for s, _ in opened] == ["nvml"]
    assert why.startswith("nvml: 2 GPU(s)") and "not used: rapl: no RAPL" in why
