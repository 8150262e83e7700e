"""``joulebench sweep`` (DVFS) through a fake NVML at the library boundary: the plan, the set and restore
calls, restore after a failure in the middle, after SIGTERM, and the restore guard after a SIGKILL."""

from __future__ import annotations

import os

import pynvml
import pytest
from fake_nvml import FakeNvml, make_gpus

from monitor.gpu_control import GpuControl, GpuSettingsError, RestoreGuard, Setting, parse_settings

WIDE = {**os.environ, "COLUMNS": "200"}  # rich wraps table cells to the terminal's width
FOUND = {"locked_sm_mhz": None, "power_limit_mw": 700_000}  # the fake GPU's settings before a sweep


@pytest.fixture
def control():
    lib = FakeNvml(make_gpus(2))
    return GpuControl(lib=lib).open(), lib


def test_settings_are_checked_against_what_the_gpus_support(control):
    ctl, _ = control
    gpus = ctl.limits()
    assert gpus[0].max_sm_clock_mhz == 1980 and gpus[0].min_power_limit_w == 200
    got = parse_settings("900,max,auto", "300,default", gpus)
    assert [s.label for s in got[:2]] == ["SM 900 MHz, 300 W", "SM 900 MHz, 700 W"]
    assert got[2] == Setting(1980, 300.0) and got[-1] == Setting(None, 700.0)
    assert parse_settings("", "450", gpus) == [Setting(None, 450.0)]
    for sm, power, message in (("5000", "", "supports 345–1980 MHz"), ("", "900", "allows 200–700 W"),
                               ("fast", "", "not a number"), ("900,900", "", "twice")):  # fmt: skip
        with pytest.raises(GpuSettingsError, match=message):
            parse_settings(sm, power, gpus)


def test_apply_then_restore_unlocks_clocks_and_puts_limits_back(control):
    ctl, lib = control
    original = ctl.limits()
    ctl.apply(Setting(1200, 300.0))
    assert [g.settings for g in lib.gpus] == [{"locked_sm_mhz": 1200, "power_limit_mw": 300_000}] * 2
    assert ctl.clocks() == [(1200, frozenset({"sw_power_cap"}))] * 2
    assert ctl.restore(original) == []
    assert [g.settings for g in lib.gpus] == [FOUND] * 2
    assert [c for c, _ in lib.gpus[0].set_calls] == ["lock", "limit", "unlock", "limit"]


def test_restore_tries_every_gpu_and_reports_what_failed(control):
    ctl, lib = control
    original = ctl.limits()
    ctl.apply(Setting(900, 250.0))
    lib.gpus[0].fail(pynvml.NVML_ERROR_GPU_IS_LOST)
    failures = ctl.restore(original)
    assert len(failures) == 2 and all("GPU 0" in f for f in failures)
    assert lib.gpus[1].settings == FOUND  # the other GPU was still restored


def test_no_permission_says_root(control):
    ctl, lib = control
    lib.gpus[0].set_error = pynvml.NVML_ERROR_NO_PERMISSION
    with pytest.raises(GpuSettingsError, match="needs root"):
        ctl.apply(Setting(900, None))
    assert not ctl.changed


def test_the_guard_restores_when_the_sweep_dies_and_not_when_disarmed(tmp_path):
    lib = FakeNvml(make_gpus(1))
    lib.gpus[0].settings_file = tmp_path / "gpu.json"
    ctl = GpuControl(lib=lib).open()
    original = ctl.limits()
    RestoreGuard(ctl, original).start().disarm()  # a clean end: the guard leaves the settings alone
    ctl.apply(Setting(900, 300.0))
    guard = RestoreGuard(ctl, original).start()
    assert lib.gpus[0].settings["locked_sm_mhz"] == 900
    os.close(guard._w)  # what the kernel does when the sweep dies: the pipe closes with no "done"
    os.waitpid(guard._pid, 0)
    assert lib.gpus[0].settings == FOUND
