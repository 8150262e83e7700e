"""A run over time, in fixed bins from its first scheduled send: power per device, the schedule's target
rate against the rate achieved, TTFT and TPOT p50/p99, schedule lag. Pure: events come with their own
times (a worker's report arrives seconds late and still lands in the right bin).

A request counts for the target in the bin of its scheduled time, for the achieved rate in the bin of its
send, for TTFT and TPOT in the bin it ended in. Rates are trailing means over ``RATE_WINDOW_S``. A bin's
latencies are reduced to their percentiles once it is ``CLOSE_AFTER_S`` old, so memory grows with the
run's length, not its request count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BIN_S = 2.0
RATE_WINDOW_S = 10.0
CLOSE_AFTER_S = 30.0
#: The most points a series sends to the browser; longer runs merge neighbouring bins.
MAX_POINTS = 720
LATENCIES = ("ttft", "tpot", "lag")


@dataclass(slots=True)
class _Bin:
    scheduled: int = 0
    sent: int = 0
    finished: int = 0
    power_w: dict[str, float] = field(default_factory=dict)
    raw: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in LATENCIES})
    reduced: dict[str, tuple[float, float] | None] | None = None  # name → (p50, p99), once closed


def _p50_p99(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    p50, p99 = np.percentile(np.asarray(values), [50, 99])
    return float(p50), float(p99)


class Timeline:
    def __init__(self, origin_s: float, bin_s: float = BIN_S) -> None:
        self.origin_s = origin_s
        self.bin_s = bin_s
        self._bins: dict[int, _Bin] = {}
        self._latest_s = origin_s

    def _bin(self, t_s: float) -> _Bin:
        self._latest_s = max(self._latest_s, t_s)
        return self._bins.setdefault(max(0, int((t_s - self.origin_s) // self.bin_s)), _Bin())

    def edge(self, k: int) -> float:
        return self.origin_s + k * self.bin_s

    def add_sends(self, sends: Iterable[tuple[float, float]]) -> None:
        """(scheduled, sent) Unix seconds of requests sent."""
        for scheduled_s, sent_s in sends:
            self._bin(scheduled_s).scheduled += 1
            b = self._bin(sent_s)
            b.sent += 1
            self._observe(b, "lag", max(0.0, sent_s - scheduled_s))

    def add_ends(self, ends: Iterable[Mapping[str, Any]]) -> None:
        """Requests ended: ``end_s`` and, when known, ``ttft_s`` and ``tpot_s``."""
        for e in ends:
            b = self._bin(e["end_s"])
            b.finished += 1
            for name in ("ttft", "tpot"):
                if (v := e.get(f"{name}_s")) is not None:
                    self._observe(b, name, v)

    def _observe(self, b: _Bin, name: str, value: float) -> None:
        if b.reduced is None:
            b.raw[name].append(value)
        # A value for a bin already closed is late by more than CLOSE_AFTER_S: it is left out.

    def add_power(self, start_s: float, power_w: Mapping[str, float]) -> None:
        """Average power per device over the poll interval starting at ``start_s`` (one bin)."""
        self._bin(start_s + 1e-9).power_w = dict(power_w)

    def close_old(self) -> None:
        for k, b in self._bins.items():
            if b.reduced is None and self.edge(k + 1) < self._latest_s - CLOSE_AFTER_S:
                b.reduced = {name: _p50_p99(values) for name, values in b.raw.items()}
                b.raw = {k: [] for k in LATENCIES}

    def series(self, max_points: int = MAX_POINTS) -> dict[str, Any]:
        """Columns for the charts: ``t_s`` (each bin's end) and one list per line (None where empty)."""
        self.close_old()
        if not self._bins:
            return {"t_s": []}
        n = max(self._bins) + 1
        bins = [self._bins.get(k) or _Bin() for k in range(n)]
        devices = sorted({d for b in bins for d in b.power_w})
        window = max(1, round(RATE_WINDOW_S / self.bin_s))
        out: dict[str, Any] = {"t_s": [self.edge(k + 1) for k in range(n)]}
        for name in ("scheduled", "sent", "finished"):
            counts = np.array([getattr(b, name) for b in bins], dtype=float)
            sums = np.convolve(counts, np.ones(window))[:n]
            spans = np.minimum(np.arange(1, n + 1), window) * self.bin_s
            out[f"{name}_per_s"] = (sums / spans).tolist()
        for name in LATENCIES:
            pcts = [b.reduced[name] if b.reduced is not None else _p50_p99(b.raw[name]) for b in bins]
            out[f"{name}_p50_s"] = [None if p is None else p[0] for p in pcts]
            out[f"{name}_p99_s"] = [None if p is None else p[1] for p in pcts]
        out["power_w"] = {d: [b.power_w.get(d) for b in bins] for d in devices}
        return _merge(out, math.ceil(n / max_points)) if n > max_points else out


def _merge(series: dict[str, Any], factor: int) -> dict[str, Any]:
    """Neighbouring bins merged ``factor`` at a time: means, but the p99 lines keep their maximum."""

    def merged(values: list[float | None], how: Any) -> list[float | None]:
        out = []
        for i in range(0, len(values), factor):
            chunk = [v for v in values[i : i + factor] if v is not None]
            out.append(float(how(chunk)) if chunk else None)
        return out

    result: dict[str, Any] = {"t_s": series["t_s"][factor - 1 :: factor]}
    if len(series["t_s"]) % factor:
        result["t_s"].append(series["t_s"][-1])
    for key, values in series.items():
        if key == "t_s":
            continue
        if key == "power_w":
            result[key] = {d: merged(v, np.mean) for d, v in values.items()}
        else:
            result[key] = merged(values, np.max if key.endswith("p99_s") else np.mean)
    return result
