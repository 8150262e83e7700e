"""Window energy for callers outside the monitor: over HTTP from a running monitor, or in-process.

Both answer the same question the same way (``/v1/energy`` calls the window function the in-process
sampler uses): the energy of the measured devices between two Unix times, with its uncertainty.
Devices are summed by kind in order of relevance: GPUs if there are any, else the share of the host
CPU's energy attributed to the server's processes where the monitor was told which they are
(``--attribute-*``), else CPU zones, else the host estimate; every device's own figure is kept too,
the host total with it.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from estimands.energy import measured_kind
from monitor.errors import MonitorError
from monitor.processes import CpuTime
from monitor.sampler import Sampler, state_json
from monitor.sources import open_sources
from monitor.sources.attributed import attribute
from monitor.window import slice_edges


def _chosen(devices: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]], str]:
    kind = measured_kind(devices)
    if kind is None:
        raise MonitorError("the monitor measures no device")
    chosen = [d for d in devices if d["kind"] == kind]
    return kind, chosen, ",".join(sorted({d.get("method") or "" for d in chosen} - {""}))


@dataclass(frozen=True, slots=True)
class MeterReading:
    start_s: float
    end_s: float
    energy_j: float  # summed over the measured kind's devices
    uncertainty_j: float
    kind: str  # "gpu", "attributed", "cpu" or "host"
    sources: list[str]
    short_window: bool
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # every device, the chosen kind's or not
    method: str = ""  # how an attributed share was taken ("cpu_time_share"); "" when measured or modelled
    # The summed devices whose counter does not reach across the window (stale at its end, or started
    # after its start): device → seconds of the window with no reading. Their sum is then too small.
    uncovered_s: dict[str, float] = field(default_factory=dict)

    @property
    def average_power_w(self) -> float:
        return self.energy_j / (self.end_s - self.start_s)

    @property
    def unread_s(self) -> float:
        """The most seconds of the window any summed device went unread (0: the sum covers the window)."""
        return max(self.uncovered_s.values(), default=0.0)

    @property
    def estimated(self) -> bool:
        return "estimate" in self.sources

    @property
    def attributed(self) -> bool:
        return self.kind == "attributed"

    def energy_by_kind_j(self) -> dict[str, float]:
        """Every kind's energy, each summed over its devices: the host total beside the attributed share,
        host CPU (RAPL) beside GPUs. Kinds are different things: never add them."""
        out: dict[str, float] = {}
        for d in self.devices.values():
            out[d["kind"]] = out.get(d["kind"], 0.0) + d["energy_j"]
        return out


#: Seconds of a window a device may miss before its energy counts as incomplete (the settle wait covers
#: the window's end on a healthy device; this is slack for the clocks' rounding).
UNCOVERED_TOLERANCE_S = 0.05


def uncovered(t0: float, t1: float, devices: list[dict[str, Any]]) -> dict[str, float]:
    """The devices (of those given) that were not read across [t0, t1]: device → seconds missed."""
    out = {}
    for d in devices:
        missed = (t1 - t0) - float(d.get("covered_s", t1 - t0))
        if missed > UNCOVERED_TOLERANCE_S:
            out[d["device"]] = missed
    return out


def _combine(t0: float, t1: float, devices: list[dict[str, Any]]) -> MeterReading:
    kind, chosen, method = _chosen(devices)
    return MeterReading(
        start_s=t0,
        end_s=t1,
        energy_j=sum(d["energy_j"] for d in chosen),
        uncertainty_j=math.sqrt(sum(d["uncertainty_j"] ** 2 for d in chosen)),
        kind=kind,
        sources=sorted({d["source"] for d in chosen}),
        short_window=any(d["short_window"] for d in chosen),
        devices={d["device"]: d for d in devices},
        method=method,
        uncovered_s=uncovered(t0, t1, chosen),
    )


@dataclass(frozen=True, slots=True)
class MeterSeries:
    """Energy in consecutive slices of a window, summed over the measured kind's devices."""

    edges: np.ndarray  # Unix seconds, one more than the slices
    energy_j: np.ndarray
    uncertainty_j: np.ndarray  # per slice; adjacent slices share an edge, so do not add these in quadrature
    kind: str
    sources: list[str]
    method: str = ""

    @property
    def estimated(self) -> bool:
        return "estimate" in self.sources


def _combine_series(edges: np.ndarray, devices: list[dict[str, Any]]) -> MeterSeries:
    kind, chosen, method = _chosen(devices)
    return MeterSeries(
        edges=np.asarray(edges, dtype=float),
        energy_j=np.sum([np.asarray(d["energy_j"], dtype=float) for d in chosen], axis=0),
        uncertainty_j=np.sqrt(np.sum([np.asarray(d["uncertainty_j"], dtype=float) ** 2 for d in chosen], axis=0)),
        kind=kind,
        sources=sorted({d["source"] for d in chosen}),
        method=method,
    )


class EnergyMeter(Protocol):
    def now(self) -> float: ...

    def energy(self, t0_s: float, t1_s: float) -> MeterReading: ...

    def series(self, t0_s: float, t1_s: float, step_s: float) -> MeterSeries: ...

    def devices(self) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class MonitorClient:
    """A running monitor's ``/v1/energy``, e.g. ``MonitorClient("http://127.0.0.1:9400")``."""

    def __init__(self, url: str, settle_s: float = 1.5, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.settle_s = settle_s
        self.timeout_s = timeout_s

    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=self.timeout_s) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as err:
            detail = json.loads(err.read() or b"{}").get("error", err.reason)
            raise MonitorError(f"the monitor at {self.url} refused {path}: {detail}") from err
        except (urllib.error.URLError, OSError) as err:
            raise MonitorError(
                f"no monitor answers at {self.url} ({err}): start one with `joulebench monitor`"
            ) from err

    def now(self) -> float:
        return float(self._get("/v1/devices")["now_s"])

    def devices(self) -> list[dict[str, Any]]:
        return list(self._get("/v1/devices")["devices"])

    def _settle(self, t1_s: float) -> None:
        # Wait until the window's end is behind a counter update, not extrapolated.
        while (lag := t1_s + self.settle_s - self.now()) > 0:
            time.sleep(min(lag, 1.0))

    def energy(self, t0_s: float, t1_s: float) -> MeterReading:
        self._settle(t1_s)
        body = self._get("/v1/energy", start=repr(t0_s), end=repr(t1_s))
        return _combine(t0_s, t1_s, body["devices"])

    def series(self, t0_s: float, t1_s: float, step_s: float) -> MeterSeries:
        self._settle(t1_s)
        body = self._get("/v1/energy/series", start=repr(t0_s), end=repr(t1_s), step=repr(step_s))
        return _combine_series(np.asarray(body["edges"]), body["devices"])

    def close(self) -> None:
        pass


class LocalMeter:
    """An in-process sampler, for runs with no monitor running (``open_sources`` picks the source).

    ``attribute_to`` names processes to attribute the host CPU's energy to, as ``--attribute-*`` does.
    """

    def __init__(self, source: str = "auto", settle_s: float = 1.5, attribute_to: CpuTime | None = None) -> None:
        opened, self.description = open_sources(source)
        if attribute_to is not None:
            opened, how = attribute(opened, attribute_to)
            self.description += f"; {how}"
        self.sampler = Sampler(opened).start()
        self.settle_s = settle_s

    def now(self) -> float:
        return self.sampler.now()

    def devices(self) -> list[dict[str, Any]]:
        return [state_json(s) for s in self.sampler.states()]

    def _settle(self, t1_s: float) -> None:
        while (lag := t1_s + self.settle_s - self.now()) > 0:
            time.sleep(min(lag, 1.0))

    def energy(self, t0_s: float, t1_s: float) -> MeterReading:
        self._settle(t1_s)
        windows = self.sampler.energy(t0_s, t1_s)
        stale = {s.device.key: s.stale for s in self.sampler.states()}
        devices = []
        for d in self.sampler.devices:
            w = windows[d.key]
            devices.append(
                {
                    "device": d.key,
                    "kind": d.kind,
                    "source": d.source,
                    "method": d.method or None,
                    "simulated": d.simulated or None,
                    "energy_j": w.energy_j,
                    "uncertainty_j": w.uncertainty_j,
                    "short_window": w.short_window,
                    "covered_s": w.covered_s,
                    "gap_s": w.gap_s,
                    "stale": stale[d.key],
                }
            )
        return _combine(t0_s, t1_s, devices)

    def series(self, t0_s: float, t1_s: float, step_s: float) -> MeterSeries:
        self._settle(t1_s)
        edges = slice_edges(t0_s, t1_s, step_s)
        by_key = {d.key: d for d in self.sampler.devices}
        devices = [
            {
                "device": k,
                "kind": by_key[k].kind,
                "source": by_key[k].source,
                "method": by_key[k].method or None,
                "energy_j": e,
                "uncertainty_j": u,
            }
            for k, (e, u) in self.sampler.energy_series(edges).items()
        ]
        return _combine_series(edges, devices)

    def close(self) -> None:
        self.sampler.stop()


@dataclass(frozen=True, slots=True)
class StablePower:
    """Power measured in consecutive blocks until the last ``need`` agree (see ``stable_power``)."""

    power_w: float  # mean of the agreeing blocks
    spread_w: float  # max − min of the agreeing blocks
    stable: bool  # False when ``max_s`` ran out first (the last blocks are used anyway)
    blocks_w: list[float]
    start_s: float
    end_s: float
    kind: str
    sources: list[str]
    devices_w: dict[str, float] = field(default_factory=dict)  # each summed device's mean over those blocks


def settled(blocks_w: list[float], need: int, rel_tol: float, abs_tol_w: float) -> bool:
    """Whether the last ``need`` block powers agree: spread ≤ max(rel_tol × mean, abs_tol_w)."""
    if len(blocks_w) < need:
        return False
    last = blocks_w[-need:]
    mean = sum(last) / need
    return max(last) - min(last) <= max(rel_tol * abs(mean), abs_tol_w)


def stable_power(
    meter: EnergyMeter,
    block_s: float = 2.0,
    need: int = 3,
    max_s: float = 60.0,
    rel_tol: float = 0.03,
    abs_tol_w: float = 0.5,
    tick: Callable[[list[float]], None] | None = None,
) -> StablePower:
    """Measure power in ``block_s`` blocks until ``need`` consecutive blocks agree, or ``max_s`` runs out.

    Idle power drifts after a load (clocks step down, fans, temperature), so a fixed sleep measures the
    drift; this waits it out and says whether it settled.
    """
    blocks: list[float] = []
    starts: list[float] = []
    per_device: list[dict[str, float]] = []
    t0 = start = meter.now()
    kind, sources = "", []
    while True:
        time.sleep(max(0.0, t0 + block_s - meter.now()))
        t1 = meter.now()
        reading = meter.energy(t0, t1)
        kind, sources = reading.kind, reading.sources
        blocks.append(reading.average_power_w)
        starts.append(t0)
        per_device.append(
            {k: d["energy_j"] / (t1 - t0) for k, d in reading.devices.items() if d.get("kind") == reading.kind}
        )
        if tick is not None:
            tick(blocks)
        ok = settled(blocks, need, rel_tol, abs_tol_w)
        if ok or t1 - start >= max_s:
            last = blocks[-need:]
            return StablePower(
                power_w=sum(last) / len(last),
                spread_w=max(last) - min(last),
                stable=ok,
                blocks_w=blocks,
                start_s=starts[-len(last)],
                end_s=t1,
                kind=kind,
                sources=sources,
                devices_w={k: sum(b.get(k, 0.0) for b in per_device[-need:]) / len(last) for k in per_device[-1]},
            )
        t0 = t1
