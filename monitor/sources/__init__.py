"""Power sources behind one interface, and the choice among them."""

from __future__ import annotations

import logging
from collections.abc import Callable

from monitor.errors import MonitorError, SourceUnavailable
from monitor.sources.base import THROTTLE_REASONS, Device, DeviceStatus, EnergyReading, PowerSource
from monitor.sources.estimate import EstimateSource
from monitor.sources.nvml import NvmlSource
from monitor.sources.rapl import RaplSource

__all__ = [
    "SOURCE_NAMES",
    "THROTTLE_REASONS",
    "Device",
    "DeviceStatus",
    "EnergyReading",
    "EstimateSource",
    "NvmlSource",
    "OpenedSource",
    "PowerSource",
    "RaplSource",
    "open_sources",
]

log = logging.getLogger(__name__)

SOURCE_NAMES = ("nvml", "rapl", "estimate")

OpenedSource = tuple[PowerSource, list[Device]]


def open_sources(
    spec: str = "auto",
    factories: dict[str, Callable[[], PowerSource]] | None = None,
) -> tuple[list[OpenedSource], str]:
    """Open the sources that ``spec`` names; return them with their devices and a line saying why.

    ``spec`` is ``auto`` or a comma list of ``nvml``, ``rapl``, ``estimate``. ``auto`` takes NVML and
    RAPL wherever they open (GPU and CPU energy side by side), and the estimate only when neither does.
    A source named explicitly must open, or this raises with its reason.
    """
    makers: dict[str, Callable[[], PowerSource]] = {
        "nvml": NvmlSource,
        "rapl": RaplSource,
        "estimate": EstimateSource,
        **(factories or {}),
    }
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in (*SOURCE_NAMES, "auto")]
    if unknown or not names or ("auto" in names and len(names) > 1):
        raise MonitorError(f"unknown power source {spec!r}: use auto, or a comma list of {', '.join(SOURCE_NAMES)}")

    opened: list[OpenedSource] = []
    skipped: list[str] = []

    def try_open(name: str, required: bool) -> None:
        source = makers[name]()
        try:
            devices = source.open()
        except SourceUnavailable as err:
            if required:
                raise
            skipped.append(f"{name}: {err}")
            return
        opened.append((source, devices))

    if names == ["auto"]:
        try_open("nvml", required=False)
        try_open("rapl", required=False)
        if not opened:
            try_open("estimate", required=True)
    else:
        try:
            for name in names:
                try_open(name, required=True)
        except SourceUnavailable:
            for source, _ in opened:
                source.close()
            raise
    why = "; ".join(s.describe() for s, _ in opened)
    if skipped:
        why += f" [not used: {'; '.join(skipped)}]"
    return opened, why
