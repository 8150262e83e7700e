"""CPU package and DRAM energy from Linux powercap RAPL zones (Intel, and AMD Zen through the same driver).

A zone's ``energy_uj`` counts microjoules and wraps at ``max_energy_range_uj``; this source unwraps it
so callers see one monotone counter. At 10 ms polling the shortest wrap (tens of seconds at full
package power) is never missed. RAPL has no instantaneous power: its counter updates about every
millisecond, so every poll is a counter update and needs no shaping.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from monitor.errors import DeviceReadError, SourceUnavailable
from monitor.sources.base import Device, DeviceStatus, EnergyReading

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/sys/class/powercap")
_ZONE_DIR = re.compile(r"^(intel-rapl|amd-rapl)(-mmio)?:(\d+)(?::(\d+))?$")
#: Package zones and their DRAM subzones; core/uncore are parts of the package and would double-count.
_KEPT = re.compile(r"^(package|dram)")


@dataclass(slots=True)
class _Zone:
    path: Path
    max_range_uj: int
    last_raw_uj: int | None = None
    wraps: int = 0


class RaplSource:
    """Every package and DRAM zone under ``root`` (default ``/sys/class/powercap``)."""

    name = "rapl"
    costly_counter = False
    independent_counter = True

    def __init__(self, root: Path = DEFAULT_ROOT, read_text: Callable[[Path], str] = Path.read_text) -> None:
        self._root = Path(root)
        self._read_text = read_text
        self._zones: dict[str, _Zone] = {}
        self._devices: list[Device] = []

    def open(self) -> list[Device]:
        if not self._root.is_dir():
            raise SourceUnavailable(f"no RAPL: {self._root} does not exist")
        found: list[tuple[str, int, Path]] = []
        # MSR zones first: an mmio twin (same package, other interface) is then skipped
        for d in sorted(self._root.iterdir(), key=lambda d: ("-mmio" in d.name, d.name)):
            m = _ZONE_DIR.match(d.name)
            if not m or not (d / "energy_uj").exists():
                continue
            name = self._read(d / "name")
            if not _KEPT.match(name):
                continue
            found.append((name.split("-")[0], int(m.group(3)), d))
        if not found:
            raise SourceUnavailable(f"no RAPL package or DRAM zones under {self._root}")
        for kind, socket, d in found:
            key = f"{kind}-{socket}"
            if key in self._zones:  # an mmio twin of a zone already kept
                continue
            try:
                raw = int(self._read(d / "energy_uj"))
                max_range = int(self._read(d / "max_energy_range_uj"))
            except PermissionError as err:
                raise SourceUnavailable(
                    f"RAPL files exist but {d / 'energy_uj'} is not readable (permission denied): run "
                    "the monitor as root, or grant read access with "
                    f"`sudo chmod a+r {self._root}/*/energy_uj {self._root}/*/*/energy_uj`"
                ) from err
            except (OSError, ValueError) as err:
                raise SourceUnavailable(f"RAPL zone {d} could not be read: {err}") from err
            self._zones[key] = _Zone(path=d / "energy_uj", max_range_uj=max_range, last_raw_uj=raw)
            self._devices.append(Device(key=key, kind="cpu", source="rapl", index=socket, name=d.name))
        return list(self._devices)

    def describe(self) -> str:
        return f"rapl: {len(self._devices)} zone(s) ({', '.join(d.key for d in self._devices)})"

    def read(self, device: Device) -> EnergyReading:
        zone = self._zones[device.key]
        try:
            raw = int(self._read(zone.path))
        except (OSError, ValueError) as err:
            raise DeviceReadError("error", f"RAPL read of {zone.path} failed: {err}") from err
        if zone.last_raw_uj is not None and raw < zone.last_raw_uj:
            zone.wraps += 1
        zone.last_raw_uj = raw
        total_uj = raw + zone.wraps * zone.max_range_uj
        return EnergyReading(energy_j=total_uj / 1e6, power_w=math.nan)

    def read_power(self, device: Device) -> float:
        return math.nan  # RAPL has only its counter

    def status(self, device: Device) -> DeviceStatus:
        return DeviceStatus()

    def close(self) -> None:
        self._zones.clear()

    def _read(self, path: Path) -> str:
        return self._read_text(path).strip()
