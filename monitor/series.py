"""One device's dense energy series: the counter's change points and the instant power between them.

The series owns no thread. The sampler appends; readers take immutable ``SeriesView`` slices under a
lock. Memory is bounded: fixed-size ring buffers sized from the retention and the poll interval.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np


class _Ring:
    """A fixed-capacity ring of float64 rows whose first column (time) only grows; oldest rows go first."""

    def __init__(self, capacity: int, ncols: int) -> None:
        self._a = np.empty((max(capacity, 4), ncols), dtype=np.float64)
        self._n = 0

    def __len__(self) -> int:
        return min(self._n, len(self._a))

    def append(self, *row: float) -> None:
        self._a[self._n % len(self._a)] = row
        self._n += 1

    def _start(self) -> int:
        return self._n % len(self._a) if self._n > len(self._a) else 0

    def _search(self, t: float, side: str) -> int:
        """Logical index (0 = oldest) where ``t`` would be inserted."""
        size, start, cap = len(self), self._start(), len(self._a)
        if start == 0:
            return int(np.searchsorted(self._a[:size, 0], t, side=side))  # type: ignore[call-overload]
        older = self._a[start:cap, 0]
        i = int(np.searchsorted(older, t, side=side))  # type: ignore[call-overload]
        if i < len(older):
            return i
        return len(older) + int(np.searchsorted(self._a[:start, 0], t, side=side))  # type: ignore[call-overload]

    def between(self, t0: float, t1: float, pad: int = 0) -> np.ndarray:
        """A copy of the rows with t0 ≤ t ≤ t1, plus ``pad`` rows on each side where there are any."""
        size = len(self)
        lo = max(self._search(t0, "left") - pad, 0)
        hi = min(self._search(t1, "right") + pad, size)
        if hi <= lo:
            return self._a[:0].copy()
        idx = (self._start() + np.arange(lo, hi)) % len(self._a)
        return self._a[idx]

    def first(self) -> np.ndarray | None:
        return None if self._n == 0 else self._a[self._start()].copy()


@dataclass(frozen=True, slots=True)
class SeriesView:
    """An immutable slice of one device's series: what the window math reads.

    ``update_*`` are the counter's change points: the time of the first poll that saw a new value, the
    value (J), the time since the poll before it (how well the update's time is known) and the segment
    (a new one after every counter reset). ``power_*`` are instantaneous power samples (W).
    ``last_t_s`` is the last poll's time: the data reaches that far.
    """

    update_t_s: np.ndarray
    update_energy_j: np.ndarray
    update_gap_s: np.ndarray
    update_segment: np.ndarray
    power_t_s: np.ndarray
    power_w: np.ndarray
    last_t_s: float

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

    def append(self, t_s: float, energy_j: float, power_w: float = math.nan) -> bool:
        """Record one poll. Returns True when it was a counter update (a change point)."""
        with self._lock:
            last = self._last_energy_j
            changed = last is None or energy_j != last
            if last is None:
                self._offset_j = -energy_j
                gap = 0.0
            else:
                gap = t_s - self._last_poll_t_s
                if energy_j < last:
                    # A reset (driver reload): a new segment. The monotone total goes on from where it
                    # was, plus what the new counter already holds (energy spent since the reload).
                    self._segment += 1
                    self._offset_j = last + self._offset_j
            if changed:
                self._updates.append(t_s, energy_j, gap, self._segment)
                self._last_energy_j = energy_j
            if not math.isnan(power_w):
                self._power.append(t_s, power_w)
            self._last_poll_t_s = t_s
            self._last_power_w = power_w
            return changed

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
            row = self._updates.first()
            return None if row is None else float(row[0])

    def view(self, t0_s: float, t1_s: float) -> SeriesView:
        """The change points in [t0, t1] with two more on each side, and the power samples they span."""
        with self._lock:
            u = self._updates.between(t0_s, t1_s, pad=2)
            last_t = self._last_poll_t_s
            if len(u):
                p = self._power.between(u[0, 0], max(u[-1, 0], min(t1_s, last_t)), pad=1)
            else:
                p = self._power.between(t0_s, t1_s, pad=1)
        return SeriesView(
            update_t_s=u[:, 0],
            update_energy_j=u[:, 1],
            update_gap_s=u[:, 2],
            update_segment=u[:, 3],
            power_t_s=p[:, 0],
            power_w=p[:, 1],
            last_t_s=last_t,
        )
