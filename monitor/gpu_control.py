"""GPU clock and power-limit settings through NVML, for ``joulebench sweep`` (DVFS), and putting them back.

Reading is free; changing needs root and the sweep's ``--allow-gpu-settings``. Locked SM clocks go through
``nvmlDeviceSetGpuLockedClocks`` (min = max = the setting; ``nvmlDeviceResetGpuLockedClocks`` unlocks),
power limits through ``nvmlDeviceSetPowerManagementLimit``. NVML cannot tell whether clocks were locked
before: the sweep's restore unlocks them and sets each power limit back to what it read at the start.

Every exit path restores: the caller's ``finally`` (normal end, exception, SIGINT/SIGTERM raised as an
exception), and ``RestoreGuard`` for the one no ``finally`` sees, a SIGKILL: a process forked before the
sweep changes anything, in its own session, which waits on a pipe from the sweep. The pipe closes when
the sweep exits however it exits; if the sweep had not written "done" (it restored) first, the guard
restores the original settings itself.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from monitor.errors import MonitorError
from monitor.sources.nvml import throttle_reasons

log = logging.getLogger(__name__)


class GpuSettingsError(MonitorError):
    """A GPU setting that cannot be read, applied or restored; the message says what to do."""


@dataclass(frozen=True, slots=True)
class GpuLimits:
    """One GPU's settings as found, and what it allows."""

    index: int
    uuid: str
    name: str
    sm_clock_mhz: int
    memory_clock_mhz: int
    supported_sm_clocks_mhz: tuple[int, ...]  # at the highest memory clock, high to low
    power_limit_w: float
    default_power_limit_w: float
    min_power_limit_w: float
    max_power_limit_w: float

    @property
    def max_sm_clock_mhz(self) -> int:
        return max(self.supported_sm_clocks_mhz)

    @property
    def min_sm_clock_mhz(self) -> int:
        return min(self.supported_sm_clocks_mhz)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Setting:
    """One point of a sweep: locked SM clocks (None: the driver's choice) and a power limit (None: as found)."""

    sm_clock_mhz: int | None = None
    power_limit_w: float | None = None

    @property
    def label(self) -> str:
        sm = "SM auto" if self.sm_clock_mhz is None else f"SM {self.sm_clock_mhz} MHz"
        return sm + ("" if self.power_limit_w is None else f", {self.power_limit_w:g} W")


def parse_settings(sm_clocks: str, power_limits: str, gpus: Sequence[GpuLimits]) -> list[Setting]:
    """``--sm-clocks 900,1200,max`` × ``--power-limits 300,default``, checked against every GPU."""
    if not gpus:
        raise GpuSettingsError("NVML sees no GPU to sweep")

    def sm(token: str) -> int | None:
        if token == "auto":
            return None
        if token == "max":
            return min(g.max_sm_clock_mhz for g in gpus)
        mhz = _number(token, "--sm-clocks")
        for g in gpus:
            if not g.min_sm_clock_mhz <= mhz <= g.max_sm_clock_mhz:
                raise GpuSettingsError(
                    f"--sm-clocks {mhz:g}: GPU {g.index} supports {g.min_sm_clock_mhz}–{g.max_sm_clock_mhz} MHz"
                )
        return int(mhz)

    def power(token: str) -> float | None:
        if token == "default":
            defaults = {g.default_power_limit_w for g in gpus}
            if len(defaults) > 1:
                raise GpuSettingsError("--power-limits default: the GPUs' default limits differ; give watts")
            return defaults.pop()
        watts = _number(token, "--power-limits")
        for g in gpus:
            if not g.min_power_limit_w <= watts <= g.max_power_limit_w:
                raise GpuSettingsError(
                    f"--power-limits {watts:g}: GPU {g.index} allows {g.min_power_limit_w:g}–{g.max_power_limit_w:g} W"
                )
        return watts

    clocks = [sm(t.strip()) for t in sm_clocks.split(",") if t.strip()] or [None]
    limits = [power(t.strip()) for t in power_limits.split(",") if t.strip()] or [None]
    settings = [Setting(c, p) for c in clocks for p in limits]
    if len(set(settings)) != len(settings):
        raise GpuSettingsError("the sweep lists a setting twice")
    return settings


def _number(token: str, flag: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise GpuSettingsError(f"{flag}: {token!r} is not a number") from None
    if not value > 0:
        raise GpuSettingsError(f"{flag}: {token!r} must be positive")
    return value


class GpuControl:
    """NVML's settings calls on the visible GPUs; ``lib`` defaults to the real pynvml."""

    def __init__(self, lib: Any = None, indices: Sequence[int] | None = None) -> None:
        if lib is None:
            import pynvml as lib
        self._lib = lib
        self._indices = indices
        self._handles: list[tuple[int, Any]] = []
        self.changed = False  # whether a settings call was made: only then is there anything to restore

    def open(self) -> GpuControl:
        try:
            self._lib.nvmlInit()
            count = self._lib.nvmlDeviceGetCount()
            indices = range(count) if self._indices is None else self._indices
            self._handles = [(i, self._lib.nvmlDeviceGetHandleByIndex(i)) for i in indices]
        except self._lib.NVMLError as err:
            raise GpuSettingsError(f"NVML could not start ({err}): sweeps need NVIDIA GPUs and their driver") from None
        return self

    def close(self) -> None:
        try:
            self._lib.nvmlShutdown()
        except self._lib.NVMLError as err:
            log.debug("nvmlShutdown: %s", err)

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._lib.NVMLError as err:
            code = getattr(err, "value", None)
            if code == self._lib.NVML_ERROR_NO_PERMISSION:
                raise GpuSettingsError(f"{what}: no permission ({err}); changing GPU settings needs root") from None
            if code == self._lib.NVML_ERROR_NOT_SUPPORTED:
                raise GpuSettingsError(f"{what}: this GPU or driver does not support it ({err})") from None
            raise GpuSettingsError(f"{what}: NVML failed ({err})") from None

    def limits(self) -> list[GpuLimits]:
        lib, out = self._lib, []
        for i, h in self._handles:
            mem_clocks = self._call(f"GPU {i}: supported memory clocks", lib.nvmlDeviceGetSupportedMemoryClocks, h)
            sm_clocks = self._call(
                f"GPU {i}: supported SM clocks", lib.nvmlDeviceGetSupportedGraphicsClocks, h, max(mem_clocks)
            )
            low, high = self._call(f"GPU {i}: power limit range", lib.nvmlDeviceGetPowerManagementLimitConstraints, h)
            out.append(GpuLimits(
                index=i, uuid=_text(self._call(f"GPU {i}: UUID", lib.nvmlDeviceGetUUID, h)),
                name=_text(self._call(f"GPU {i}: name", lib.nvmlDeviceGetName, h)),
                sm_clock_mhz=int(self._call(f"GPU {i}: SM clock", lib.nvmlDeviceGetClockInfo, h, lib.NVML_CLOCK_SM)),
                memory_clock_mhz=int(
                    self._call(f"GPU {i}: memory clock", lib.nvmlDeviceGetClockInfo, h, lib.NVML_CLOCK_MEM)
                ),
                supported_sm_clocks_mhz=tuple(sorted((int(c) for c in sm_clocks), reverse=True)),
                power_limit_w=self._call(f"GPU {i}: power limit", lib.nvmlDeviceGetPowerManagementLimit, h) / 1000,
                default_power_limit_w=self._call(
                    f"GPU {i}: default power limit", lib.nvmlDeviceGetPowerManagementDefaultLimit, h
                ) / 1000,
                min_power_limit_w=low / 1000, max_power_limit_w=high / 1000,
            ))  # fmt: skip
        return out

    def _set(self, what: str, fn: Any, *args: Any) -> None:
        self._call(what, fn, *args)
        self.changed = True

    def apply(self, setting: Setting) -> None:
        lib = self._lib
        for i, h in self._handles:
            if setting.sm_clock_mhz is None:
                self._set(f"GPU {i}: unlock SM clocks", lib.nvmlDeviceResetGpuLockedClocks, h)
            else:
                mhz = setting.sm_clock_mhz
                self._set(f"GPU {i}: lock SM clocks at {mhz} MHz", lib.nvmlDeviceSetGpuLockedClocks, h, mhz, mhz)
            if setting.power_limit_w is not None:
                mw = round(setting.power_limit_w * 1000)
                self._set(f"GPU {i}: power limit {setting.power_limit_w:g} W",
                          lib.nvmlDeviceSetPowerManagementLimit, h, mw)  # fmt: skip

    def restore(self, original: Sequence[GpuLimits]) -> list[str]:
        """Unlock clocks and put each power limit back; every GPU is tried. The failures, as messages."""
        lib, failures = self._lib, []
        by_index = {g.index: g for g in original}
        for i, h in self._handles:
            steps = [(f"GPU {i}: unlock SM clocks", lib.nvmlDeviceResetGpuLockedClocks, (h,))]
            if i in by_index:
                mw = round(by_index[i].power_limit_w * 1000)
                steps.append((f"GPU {i}: power limit back to {mw / 1000:g} W",
                              lib.nvmlDeviceSetPowerManagementLimit, (h, mw)))  # fmt: skip
            for what, fn, args in steps:
                try:
                    self._call(what, fn, *args)
                except GpuSettingsError as err:
                    failures.append(str(err))
        return failures

    def clocks(self) -> list[tuple[int, frozenset[str]]]:
        """Each GPU's SM clock (MHz) now and its active clock event (throttle) reasons."""
        lib = self._lib
        return [
            (int(self._call(f"GPU {i}: SM clock", lib.nvmlDeviceGetClockInfo, h, lib.NVML_CLOCK_SM)),
             self._call(f"GPU {i}: throttle reasons", throttle_reasons, lib, h))
            for i, h in self._handles
        ]  # fmt: skip


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RestoreGuard:
    """A forked process that restores ``original`` if the sweep dies without saying it restored them.

    Start it before any thread (a fork copies only the calling thread; a lock another thread held would
    stay held in the child) and before changing anything; ``disarm()`` once the sweep has restored.
    """

    def __init__(self, control: GpuControl, original: Sequence[GpuLimits]) -> None:
        self._control = control
        self._original = list(original)
        self._pid: int | None = None
        self._w: int | None = None

    def start(self) -> RestoreGuard:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the guard
            code = 0
            try:
                os.close(w)
                os.setsid()  # out of the terminal's process group: Ctrl-C there is for the sweep, not for it
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_IGN)
                said = b""
                while chunk := os.read(r, 64):
                    said += chunk
                if said != b"done":
                    failures = self._control.open().restore(self._original)
                    log.warning("the sweep ended without restoring GPU settings: the guard restored them%s",
                                "; " + "; ".join(failures) if failures else "")  # fmt: skip
                    code = 1 if failures else 0
            finally:
                os._exit(code)
        os.close(r)
        self._pid, self._w = pid, w
        return self

    def disarm(self) -> None:
        """The sweep restored the settings itself: the guard exits without touching them."""
        if self._w is not None:
            os.write(self._w, b"done")
            os.close(self._w)
            self._w = None
        if self._pid is not None:
            os.waitpid(self._pid, 0)
            self._pid = None
