"""One device's dense energy series: the counter's change points and the instant power between them.

The series owns no thread. The sampler appends; readers take immutable ``SeriesView`` slices under a
lock. Memory is bounded: fixed-size ring buffers sized from the retention and the poll interval.
"""

from __future__ import annotations

import math
import threading
from array import array
from dataclasses import dataclass
from typing import Literal

import numpy as np


class _Ring:
    """A fixed-capacity ring of float64 columns whose first column (time) only grows; oldest rows go first.

    Columns are ``array('d')`` so an append is a few C-level stores (no numpy on the 10 ms hot path);
    queries view them zero-copy with ``np.frombuffer``.
    """

    def __init__(self, capacity: int, ncols: int) -> None:
        self._cap = max(capacity, 4)
        self._cols = [array("d", bytes(8 * self._cap)) for _ in range(ncols)]
        self._n = 0

    def __len__(self) -> int:
        return min(self._n, self._cap)

    def append2(self, a: float, b: float) -> None:
        i = self._n % self._cap
        c = self._cols
        c[0][i] = a
        c[1][i] = b
        self._n += 1

    def append4(self, a: float, b: float, c2: float, d: float) -> None:
        i = self._n % self._cap
        c = self._cols
        c[0][i] = a
        c[1][i] = b
        c[2][i] = c2
        c[3][i] = d
        self._n += 1

    def _start(self) -> int:
        return self._n % self._cap if self._n > self._cap else 0

    def _search(self, t: np.ndarray, x: float, side: Literal["left", "right"]) -> int:
        """Logical index (0 = oldest) where ``x`` would be inserted into the time column ``t``."""
        size, start = len(self), self._start()
        if start == 0:
            return int(np.searchsorted(t[:size], x, side=side))
        older = t[start:]
        i = int(np.searchsorted(older, x, side=side))
        if i < len(older):
            return i
        return len(older) + int(np.searchsorted(t[:start], x, side=side))

    def between(self, t0: float, t1: float, pad: int = 0) -> list[np.ndarray]:
        """Copies of each column over the rows with t0 ≤ t ≤ t1, plus ``pad`` rows on each side."""
        cols = [np.frombuffer(c, dtype=np.float64) for c in self._cols]
        size = len(self)
        lo = max(self._search(cols[0], t0, "left") - pad, 0)
        hi = min(self._search(cols[0], t1, "right") + pad, size)
        idx = (self._start() + np.arange(lo, max(hi, lo))) % self._cap
        return [c[idx] for c in cols]

    def first(self) -> float | None:
        return None if self._n == 0 else self._cols[0][self._start()]


@dataclass(frozen=True, slots=True)
class SeriesView:
    """An immutable slice of one device's series: what the window math reads.

    ``update_*`` are the counter's change points: the time of the first poll that saw a new value, the
    value (J), the time since the poll before it (how well the update's time is known) and the segment
    (a new one after every counter reset). ``power_*`` are instantaneous power samples (W).
    ``last_t_s`` is the last poll's time: the data reaches that far. ``power_lag_s`` is how late the
    power samples are against the counter (learnt by ``monitor.window.estimate_power_lag``); the window
    math reads a power sample stamped t as the power at t − lag.
    """

    update_t_s: np.ndarray
    update_energy_j: np.ndarray
    update_gap_s: np.ndarray
    update_segment: np.ndarray
    power_t_s: np.ndarray
    power_w: np.ndarray
    last_t_s: float
    power_lag_s: float = 0.0

    @classmethod
    def from_arrays(
        cls,
        update_t_s: np.ndarray | list[float],
        update_energy_j: np.ndarray | list[float],
        power_t_s: np.ndarray | list[float] = (),  # type: ignore[assignment]
        power_w: np.ndarray | list[float] = (),  # type: ignore[assignment]
        *,
        update_gap_s: np.ndarray | list[float] | None = None,
        update_segment: np.ndarray | list[int] | None = None,
        last_t_s: float | None = None,
        power_lag_s: float = 0.0,
    ) -> SeriesView:
        """Build a view from plain arrays (synthetic series in tests, recorded logs in analysis)."""
        t = np.asarray(update_t_s, dtype=np.float64)
        n = len(t)
        pt = np.asarray(power_t_s, dtype=np.float64)
        return cls(
            update_t_s=t,
            update_energy_j=np.asarray(update_energy_j, dtype=np.float64),
            update_gap_s=np.zeros(n) if update_gap_s is None else np.asarray(update_gap_s, dtype=np.float64),
            update_segment=np.zeros(n) if update_segment is None else np.asarray(update_segment, dtype=np.float64),
            power_t_s=pt,
            power_w=np.asarray(power_w, dtype=np.float64),
            last_t_s=float(
                last_t_s if last_t_s is not None else max(t[-1] if n else -math.inf, pt[-1] if len(pt) else -math.inf)
            ),
            power_lag_s=power_lag_s,
        )


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest reading of a device, for the exporter."""

    t_s: float
    energy_total_j: float  # since the series began, monotone across counter resets
    power_w: float
    segments: int


class DeviceSeries:
    """Appends readings, keeps change points and power samples, answers views. Thread-safe."""

    def __init__(self, capacity: int) -> None:
        self._updates = _Ring(capacity, 4)  # t_s, energy_j, gap_s, segment
        self._power = _Ring(capacity, 2)  # t_s, power_w
        self._lock = threading.Lock()
        self._last_energy_j: float | None = None
        self._last_poll_t_s = -math.inf
        self._last_power_w = math.nan
        self._segment = 0
        self._offset_j = 0.0

    def append(self, t_s: float, energy_j: float, power_w: float = math.nan, gap_s: float = 0.0) -> None:
        """Record a counter change point seen at ``t_s`` (the update happened within ``gap_s`` before it).

        Which reads are change points is the caller's decision (``monitor.ticks.CounterReads``). A value
        below the last one is a counter reset (driver reload) and starts a new segment.
        """
        with self._lock:
            last = self._last_energy_j
            if last is None:
                self._offset_j = -energy_j
            elif energy_j < last:
                # The monotone total goes on from where it was, plus what the new counter already holds
                # (energy spent since the reload).
                self._segment += 1
                self._offset_j = last + self._offset_j
            self._updates.append4(t_s, energy_j, gap_s, self._segment)
            self._last_energy_j = energy_j
            self._append_power(t_s, power_w)

    def append_power(self, t_s: float, power_w: float) -> None:
        """Record a poll that brought no counter change point: its power, and how far the data reaches."""
        with self._lock:
            self._append_power(t_s, power_w)

    def _append_power(self, t_s: float, power_w: float) -> None:
        if power_w == power_w:  # not NaN
            self._power.append2(t_s, power_w)
        self._last_poll_t_s = t_s
        self._last_power_w = power_w

    def latest(self) -> Latest | None:
        with self._lock:
            if self._last_energy_j is None:
                return None
            return Latest(
                t_s=self._last_poll_t_s,
                energy_total_j=self._last_energy_j + self._offset_j,
                power_w=self._last_power_w,
                segments=self._segment + 1,
            )

    def first_t_s(self) -> float | None:
        with self._lock:
            return self._updates.first()

    def view(self, t0_s: float, t1_s: float) -> SeriesView:
        """The change points in [t0, t1] with two more on each side, and the power samples they span."""
        with self._lock:
            ut, ue, ug, us = self._updates.between(t0_s, t1_s, pad=2)
            last_t = self._last_poll_t_s
            if len(ut):
                pt, pw = self._power.between(ut[0], max(ut[-1], min(t1_s, last_t)), pad=1)
            else:
                pt, pw = self._power.between(t0_s, t1_s, pad=1)
        return SeriesView(
            update_t_s=ut,
            update_energy_j=ue,
            update_gap_s=ug,
            update_segment=us,
            power_t_s=pt,
            power_w=pw,
            last_t_s=last_t,
        )
