"""The RAPL source on a powercap tree written under tmp_path (the file boundary, faked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.errors import SourceUnavailable
from monitor.sources import RaplSource

MAX_UJ = 262_143_328_850


def zone(root: Path, dirname: str, name: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    d = root / dirname
    d.mkdir(parents=True)
    (d / "name").write_text(f"{name}\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    zone(tmp_path, "intel-rapl:0:0", "core", 500_000)  # part of the package: not kept
    zone(tmp_path, "intel-rapl:0:1", "dram", 2_000_000)
    zone(tmp_path, "intel-rapl:1", "package-1", 3_000_000)
    zone(tmp_path, "intel-rapl-mmio:0", "package-0", 7)  # the mmio twin of package-0
    (tmp_path / "intel-rapl").mkdir()  # the control type directory itself
    return tmp_path


def test_finds_package_and_dram_zones(powercap: Path):
    src = RaplSource(root=powercap)
    devices = src.open()
    assert [d.key for d in devices] == ["package-0", "dram-0", "package-1"]
    assert {d.kind for d in devices} == {"cpu"}
    assert src.read(devices[0]).energy_j == pytest.approx(1.0)
    assert "3 zone" in src.describe()


def test_wraparound_is_unwrapped(tmp_path: Path):
    d = zone(tmp_path, "intel-rapl:0", "package-0", 900, max_uj=1000)
    src = RaplSource(root=tmp_path)
    (dev,) = src.open()
    readings = []
    for raw in (950, 990, 20, 400, 10):  # wraps twice
        (d / "energy_uj").write_text(str(raw))
        readings.append(src.read(dev).energy_j * 1e6)
    assert readings == pytest.approx([950, 990, 1020, 1400, 2010])


def test_amd_zone_names(tmp_path: Path):
    zone(tmp_path, "amd-rapl:0", "package-0", 10)
    assert [d.key for d in RaplSource(root=tmp_path).open()] == ["package-0"]


def test_no_powercap_says_so(tmp_path: Path):
    with pytest.raises(SourceUnavailable, match="does not exist"):
        RaplSource(root=tmp_path / "nope").open()
    with pytest.raises(SourceUnavailable, match="no RAPL package or DRAM zones"):
        RaplSource(root=tmp_path).open()


def test_unreadable_counter_says_how_to_fix(powercap: Path):
    def read_text(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text()

    with pytest.raises(SourceUnavailable, match=r"not readable \(permission denied\).*chmod a\+r"):
        RaplSource(root=powercap, read_text=read_text).open()


def test_a_failing_read_is_a_device_error(powercap: Path):
    from monitor.errors import DeviceReadError

    src = RaplSource(root=powercap)
    dev = src.open()[0]
    (powercap / "intel-rapl:0" / "energy_uj").write_text("garbage")
    with pytest.raises(DeviceReadError, match="RAPL read"):
        src.read(dev)
