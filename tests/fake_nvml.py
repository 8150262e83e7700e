"""A fake NVML library: the hardware boundary, faked. Constants and error classes are the real pynvml's.

Each ``FakeGpu`` has an energy counter in mJ that advances in steps of ``period_s`` at its current power
(like an H100's 100 ms updates), an instantaneous power field, and the slow readings. Faults are injected
with ``fail`` / ``heal``; ``reload`` resets the counter like a driver reload.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml


class FakeGpu:
    def __init__(
        self,
        name: str = "NVIDIA H100 80GB HBM3",
        uuid: str = "GPU-00000000-0000-0000-0000-000000000000",
        power_w: float = 100.0,
        period_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        instant_supported: bool = True,
    ) -> None:
        self.name = name
        self.uuid = uuid
        self.power_w = power_w
        self.period_s = period_s
        self.clock = clock
        self.instant_supported = instant_supported
        self.energy_supported = True
        self.error: int | None = None
        self.throttle_mask = pynvml.nvmlClocksEventReasonSwPowerCap
        self._t0 = clock()
        self._step = 0
        self._energy_mj = 5_000_000.0  # energy since the driver loaded, before the test began
        # Settings (the sweep's): kept in ``settings_file`` when given, so another process (the restore
        # guard, a test) sees the same GPU. ``fail_set_call``: the one set call (1 = the first) that fails;
        # ``set_error``: every set call fails with this NVML error code.
        self.settings_file: Path | None = None
        self._settings = {"locked_sm_mhz": None, "power_limit_mw": 700_000}
        self.fail_set_call: int | None = None
        self.set_error: int | None = None
        self.set_attempts = 0
        self.set_calls: list[tuple[str, Any]] = []

    @property
    def settings(self) -> dict[str, Any]:
        if self.settings_file is not None and self.settings_file.exists():
            return json.loads(self.settings_file.read_text())[self.uuid]
        return dict(self._settings)

    def change(self, call: str, **values: Any) -> None:
        self.set_attempts += 1
        if self.set_error is not None:
            raise pynvml.NVMLError(self.set_error)
        if self.set_attempts == self.fail_set_call:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        self.set_calls.append((call, values))
        settings = self.settings | values
        self._settings = settings
        if self.settings_file is not None:
            everything = json.loads(self.settings_file.read_text()) if self.settings_file.exists() else {}
            everything[self.uuid] = settings
            self.settings_file.write_text(json.dumps(everything))

    def _advance(self) -> None:
        n = math.floor((self.clock() - self._t0) / self.period_s)
        if n > self._step:
            self._energy_mj += (n - self._step) * self.period_s * self.power_w * 1000.0
            self._step = n

    def energy_mj(self) -> int:
        self._advance()
        return int(self._energy_mj)

    def set_power(self, power_w: float) -> None:
        self._advance()
        self.power_w = power_w

    def reload(self) -> None:
        """A driver reload: the counter starts again near zero."""
        self._advance()
        self._energy_mj = 1000.0

    def fail(self, code: int) -> None:
        self.error = code

    def heal(self) -> None:
        self.error = None


class FakeNvml:
    """Stands in for the ``pynvml`` module; pass it as ``NvmlSource(lib=FakeNvml([...]))``."""

    def __init__(self, gpus: list[FakeGpu], init_error: int | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.initialized = False
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        value = getattr(pynvml, name)
        if callable(value) and name.startswith("nvml"):
            raise AttributeError(f"the fake NVML has no {name}")
        return value

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _check(self, h: FakeGpu) -> FakeGpu:
        if not self.initialized:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if h.error is not None:
            raise pynvml.NVMLError(h.error)
        return h

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.initialized = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self._check(self.gpus[index])

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu:
        self._count("nvmlDeviceGetHandleByUUID")
        for g in self.gpus:
            if g.uuid == uuid:
                return self._check(g)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return self._check(h).uuid

    def nvmlDeviceGetName(self, h: FakeGpu) -> str:
        return self._check(h).name

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGpu) -> int:
        self._count("nvmlDeviceGetTotalEnergyConsumption")
        if not self._check(h).energy_supported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return h.energy_mj()

    def nvmlDeviceGetFieldValues(self, h: FakeGpu, field_ids: list[int]) -> list[Any]:
        self._check(h)
        out = []
        for fid in field_ids:
            fv = pynvml.c_nvmlFieldValue_t()
            fv.fieldId = fid
            if fid == pynvml.NVML_FI_DEV_POWER_INSTANT and h.instant_supported:
                fv.nvmlReturn = pynvml.NVML_SUCCESS
                fv.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
                fv.value.uiVal = int(h.power_w * 1000)
            else:
                fv.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
            out.append(fv)
        return out

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        return int(self._check(h).power_w * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGpu) -> int:
        return self._check(h).settings["power_limit_mw"]

    def nvmlDeviceGetPowerManagementLimit(self, h: FakeGpu) -> int:
        return self._check(h).settings["power_limit_mw"]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: FakeGpu) -> int:
        self._check(h)
        return 700_000

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h: FakeGpu) -> list[int]:
        self._check(h)
        return [200_000, 700_000]

    def nvmlDeviceGetSupportedMemoryClocks(self, h: FakeGpu) -> list[int]:
        self._check(h)
        return [2619]

    def nvmlDeviceGetSupportedGraphicsClocks(self, h: FakeGpu, memory_mhz: int) -> list[int]:
        self._check(h)
        return list(range(1980, 344, -15))

    def nvmlDeviceSetGpuLockedClocks(self, h: FakeGpu, low_mhz: int, high_mhz: int) -> None:
        self._check(h).change("lock", locked_sm_mhz=high_mhz)

    def nvmlDeviceResetGpuLockedClocks(self, h: FakeGpu) -> None:
        self._check(h).change("unlock", locked_sm_mhz=None)

    def nvmlDeviceSetPowerManagementLimit(self, h: FakeGpu, limit_mw: int) -> None:
        if not 200_000 <= limit_mw <= 700_000:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self._check(h).change("limit", power_limit_mw=limit_mw)

    def nvmlDeviceGetClockInfo(self, h: FakeGpu, kind: int) -> int:
        locked = self._check(h).settings["locked_sm_mhz"]
        return (locked or 1980) if kind == pynvml.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        self._check(h)
        return 45

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> Any:
        self._check(h)
        return SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> Any:
        self._check(h)
        return SimpleNamespace(used=12 * 2**30, total=80 * 2**30, free=68 * 2**30)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeGpu) -> int:
        return self._check(h).throttle_mask


def make_gpus(n: int, **kwargs: Any) -> list[FakeGpu]:
    return [FakeGpu(uuid=f"GPU-{i:08x}-aaaa-bbbb-cccc-dddddddddddd", **kwargs) for i in range(n)]
