"""The energy monitor: power sources, the dense sampler, window energy, the Prometheus exporter."""

from monitor.errors import DeviceReadError, MonitorError, SourceUnavailable, WindowError
from monitor.sampler import DeviceState, Sampler, SamplerStats
from monitor.series import DeviceSeries, SeriesView
from monitor.sources import Device, DeviceStatus, EnergyReading, PowerSource, open_sources
from monitor.window import WindowEnergy, counter_power_ratio, window_energy

__all__ = [
    "Device",
    "DeviceReadError",
    "DeviceSeries",
    "DeviceState",
    "DeviceStatus",
    "EnergyReading",
    "MonitorError",
    "PowerSource",
    "Sampler",
    "SamplerStats",
    "SeriesView",
    "SourceUnavailable",
    "WindowEnergy",
    "WindowError",
    "counter_power_ratio",
    "open_sources",
    "window_energy",
]
