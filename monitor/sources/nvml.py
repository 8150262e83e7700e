"""NVIDIA GPUs through NVML (package ``nvidia-ml-py``, module ``pynvml``).

The energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since the driver was loaded) is the
ground truth; on an H100 it updates every 100 ms. The instantaneous power (field 186) is read with it
to shape energy inside a counter step. The averaged power (``nvmlDeviceGetPowerUsage``, a 1 s mean on
H100) is exported for reference and never integrated.

Every ``pynvml.NVMLError`` is mapped here, once, to the monitor's errors; nothing above this module
sees pynvml.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable
from typing import Any, TypeVar

from monitor.errors import DeviceReadError, SourceUnavailable
from monitor.sources.base import THROTTLE_REASONS, Device, DeviceStatus, EnergyReading

log = logging.getLogger(__name__)

T = TypeVar("T")

_FROM_ENV = object()
_FI_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT; older pynvml releases lack the name


def _reason(lib: Any, err: Exception) -> str:
    code = getattr(err, "value", None)
    return {
        lib.NVML_ERROR_GPU_IS_LOST: "lost",
        lib.NVML_ERROR_TIMEOUT: "timeout",
        lib.NVML_ERROR_NOT_SUPPORTED: "not_supported",
        lib.NVML_ERROR_UNINITIALIZED: "uninitialized",
        lib.NVML_ERROR_DRIVER_NOT_LOADED: "uninitialized",
    }.get(code, "error")


def _mapped(what: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Turn any NVMLError raised by a per-device call into a DeviceReadError naming the device."""

    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def inner(self: NvmlSource, device: Device, *args: Any) -> T:
            try:
                return fn(self, device, *args)
            except self._lib.NVMLError as err:
                reason = _reason(self._lib, err)
                if reason in ("lost", "uninitialized", "error"):
                    self._handles.pop(device.key, None)  # re-acquired on the next read
                raise DeviceReadError(reason, f"NVML {what} failed on {device.key}: {err}") from err

        return inner

    return wrap


def parse_visible_devices(value: str | None, count: int, uuids: list[str]) -> list[int]:
    """NVML indices of the GPUs that ``CUDA_VISIBLE_DEVICES`` makes visible, in its order.

    Follows CUDA: entries are indices or (prefixes of) UUIDs; the list ends at the first entry that
    names no device. Indices are taken in NVML's (PCI bus) order, as with CUDA_DEVICE_ORDER=PCI_BUS_ID.
    """
    if value is None:
        return list(range(count))
    chosen: list[int] = []
    for token in (t.strip() for t in value.split(",")):
        if not token:
            break
        if token.startswith("MIG-"):
            raise SourceUnavailable(
                f"CUDA_VISIBLE_DEVICES names a MIG instance ({token}): MIG slices share their GPU's "
                "energy counter; make the parent GPU visible to the monitor instead"
            )
        if token.isdigit():
            index = int(token)
            if index >= count:
                break
        else:
            matches = [i for i, u in enumerate(uuids) if u.startswith(token)]
            if len(matches) != 1:
                break
            index = matches[0]
        if index in chosen:
            break
        chosen.append(index)
    return chosen


class NvmlSource:
    """Every GPU that CUDA_VISIBLE_DEVICES makes visible. ``lib`` defaults to the real pynvml."""

    name = "nvml"
    costly_counter = True
    independent_counter = True

    def __init__(self, lib: Any = None, visible_devices: str | object | None = _FROM_ENV) -> None:
        self._lib_arg = lib
        self._visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible_devices is _FROM_ENV else visible_devices
        self._lib: Any = None
        self._initialized = False
        self._handles: dict[str, Any] = {}
        self._devices: list[Device] = []
        self._instant_supported: dict[str, bool] = {}
        self._unsupported: dict[str, set[str]] = {}

    def open(self) -> list[Device]:
        lib = self._lib_arg
        if lib is None:
            import pynvml as lib
        self._lib = lib
        try:
            lib.nvmlInit()
        except lib.NVMLError as err:
            raise SourceUnavailable(f"NVML could not start ({err}): no NVIDIA driver on this host?") from err
        self._initialized = True
        try:
            count = lib.nvmlDeviceGetCount()
            handles = [lib.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            uuids = [_text(lib.nvmlDeviceGetUUID(h)) for h in handles]
            visible = parse_visible_devices(self._visible, count, uuids)
            if not visible:
                raise SourceUnavailable(
                    f"no GPU is visible (CUDA_VISIBLE_DEVICES={self._visible!r}, NVML sees {count})"
                )
            for i in visible:
                h = handles[i]
                dev = Device(
                    key=f"gpu{i}",
                    kind="gpu",
                    source="nvml",
                    index=i,
                    name=_text(lib.nvmlDeviceGetName(h)),
                    uuid=uuids[i],
                    simulated=str(getattr(lib, "SIMULATED", "") or ""),  # a library that simulates says so
                )
                try:
                    lib.nvmlDeviceGetTotalEnergyConsumption(h)
                except lib.NVMLError as err:
                    raise SourceUnavailable(
                        f"GPU {i} ({dev.name}) has no energy counter ({err}); joulebench needs one (Volta or newer)"
                    ) from err
                self._handles[dev.key] = h
                self._devices.append(dev)
                self._instant_supported[dev.key] = True
                self._unsupported[dev.key] = set()
        except lib.NVMLError as err:
            self.close()
            raise SourceUnavailable(f"NVML failed while listing GPUs: {err}") from err
        except SourceUnavailable:
            self.close()
            raise
        return list(self._devices)

    def describe(self) -> str:
        names = ", ".join(f"{d.key} {d.name}" + (f" (simulated: {d.simulated})" if d.simulated else "")
                          for d in self._devices)  # fmt: skip
        return f"nvml: {len(self._devices)} GPU(s) ({names})"

    def _handle(self, device: Device) -> Any:
        h = self._handles.get(device.key)
        if h is None:
            lib = self._lib
            try:
                h = lib.nvmlDeviceGetHandleByUUID(device.uuid)
            except lib.NVMLError as err:
                if _reason(lib, err) != "uninitialized":
                    raise
                lib.nvmlInit()  # the driver came back: NVML must be initialised again
                h = lib.nvmlDeviceGetHandleByUUID(device.uuid)
            self._handles[device.key] = h
            log.info("NVML handle for %s re-acquired", device.key)
        return h

    @_mapped("energy read")
    def read(self, device: Device) -> EnergyReading:
        h = self._handle(device)
        energy_j = self._lib.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0
        return EnergyReading(energy_j=energy_j, power_w=self._instant(device, h))

    @_mapped("power read")
    def read_power(self, device: Device) -> float:
        return self._instant(device, self._handle(device))

    def _instant(self, device: Device, h: Any) -> float:
        lib = self._lib
        if not self._instant_supported[device.key]:
            return math.nan
        (fv,) = lib.nvmlDeviceGetFieldValues(h, [_FI_POWER_INSTANT])
        if fv.nvmlReturn == lib.NVML_SUCCESS:
            return _field_number(lib, fv) / 1000.0
        if fv.nvmlReturn == lib.NVML_ERROR_NOT_SUPPORTED:
            self._instant_supported[device.key] = False
            log.warning(
                "%s has no instantaneous power field: energy inside a counter step is interpolated linearly in time",
                device.key,
            )
        return math.nan

    @_mapped("status read")
    def status(self, device: Device) -> DeviceStatus:
        lib = self._lib
        h = self._handle(device)
        skip = self._unsupported[device.key]

        def get(name: str, fn: Callable[[], Any]) -> Any:
            if name in skip:
                return None
            try:
                return fn()
            except lib.NVMLError as err:
                if _reason(lib, err) != "not_supported":
                    raise
                skip.add(name)
                return None

        util = get("util", lambda: lib.nvmlDeviceGetUtilizationRates(h))
        mem = get("mem", lambda: lib.nvmlDeviceGetMemoryInfo(h))
        reasons = get("throttle", lambda: throttle_reasons(lib, h))
        return DeviceStatus(
            power_average_w=_scaled(get("avg", lambda: lib.nvmlDeviceGetPowerUsage(h)), 1e-3),
            power_limit_w=_scaled(get("limit", lambda: lib.nvmlDeviceGetEnforcedPowerLimit(h)), 1e-3),
            sm_clock_hz=_scaled(get("sm", lambda: lib.nvmlDeviceGetClockInfo(h, lib.NVML_CLOCK_SM)), 1e6),
            memory_clock_hz=_scaled(get("memclk", lambda: lib.nvmlDeviceGetClockInfo(h, lib.NVML_CLOCK_MEM)), 1e6),
            temperature_c=_scaled(get("temp", lambda: lib.nvmlDeviceGetTemperature(h, lib.NVML_TEMPERATURE_GPU)), 1.0),
            utilization_ratio=None if util is None else util.gpu / 100.0,
            memory_utilization_ratio=None if util is None else util.memory / 100.0,
            memory_used_bytes=None if mem is None else float(mem.used),
            throttle_reasons=reasons,
        )

    def close(self) -> None:
        if self._initialized:
            self._initialized = False
            try:
                self._lib.nvmlShutdown()
            except self._lib.NVMLError as err:
                log.debug("nvmlShutdown: %s", err)
        self._handles.clear()


def throttle_reasons(lib: Any, handle: Any) -> frozenset[str]:
    """The active clock event (throttle) reasons, by joulebench's names (``THROTTLE_REASONS``, bit order)."""
    fn = getattr(lib, "nvmlDeviceGetCurrentClocksEventReasons", None) or (lib.nvmlDeviceGetCurrentClocksThrottleReasons)
    mask = int(fn(handle))
    return frozenset(name for bit, name in enumerate(THROTTLE_REASONS) if mask & (1 << bit))


def _field_number(lib: Any, fv: Any) -> float:
    attr = {
        lib.NVML_VALUE_TYPE_DOUBLE: "dVal",
        lib.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
        lib.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
        lib.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
        lib.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
        lib.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
    }.get(fv.valueType, "uiVal")
    return float(getattr(fv.value, attr))


def _scaled(value: Any, factor: float) -> float | None:
    return None if value is None else float(value) * factor


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
