"""Window energy: E(t0, t1) from a device's dense series, with an uncertainty. Pure functions.

The counter is the truth at its updates: between two consecutive updates τ₀ < τ₁ the energy is exactly
C(τ₁) − C(τ₀). A window edge t inside that step takes the share of the step's energy that the
instantaneous power puts before t:

    C(t) = C(τ₀) + (C(τ₁) − C(τ₀)) · ∫τ₀..t P / ∫τ₀..τ₁ P

so the window energy conserves the counter exactly at every update and follows the power's shape in
between. Without power samples in the step the share is linear in time.

Uncertainty (a standard uncertainty in joules; edges are independent and add in quadrature):

* update time: an update is seen at the first poll after it, so its time is known to within the poll
  gap g before it; the edge's error is about P̄·g/√12 (P̄ the step's mean power);
* shape: for an edge strictly inside a step of energy ΔE at energy fraction f, the larger of half the
  disagreement between the power-shaped and the time-linear split, ½·|f − f_lin|·ΔE, and a floor
  s·min(f, 1 − f)·ΔE, with s = 5 % when instantaneous power shapes the step and 50 % when it does not;
* after the last update (an open window end), the energy is extrapolated from instantaneous power, or
  from the last step's mean power, with the same 5 % / 50 % relative uncertainty;
* across a counter reset the energy between the two segments is unknown: it is estimated from power
  and carries 100 % uncertainty.

A window shorter than two counter update periods has no honest energy: it is flagged ``short_window``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from monitor.errors import WindowError
from monitor.series import SeriesView

SHAPE_FLOOR_POWERED = 0.05
SHAPE_FLOOR_LINEAR = 0.5
_SQRT12 = math.sqrt(12.0)


@dataclass(frozen=True, slots=True)
class WindowEnergy:
    """The energy of one device over one window, and how far to trust it."""

    start_s: float
    end_s: float
    energy_j: float
    uncertainty_j: float
    updates: int  # counter updates inside the window
    power_samples: int  # instantaneous power samples inside the window
    update_period_s: float  # median period of the counter's updates in the data read (NaN if unknown)
    short_window: bool  # shorter than two counter update periods
    covered_s: float  # the part of the window the recorded data covers
    extrapolated_s: float  # after the last counter update, extrapolated from power
    gap_s: float  # between counter segments (reset, driver reload): estimated
    segments: int  # counter segments the window touches

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def average_power_w(self) -> float:
        return self.energy_j / self.covered_s if self.covered_s > 0 else math.nan

    @classmethod
    def unread(cls, t0_s: float, t1_s: float) -> WindowEnergy:
        """A device with no reading in the window (stale across it): nothing covered, nothing counted."""
        return cls(t0_s, t1_s, 0.0, 0.0, 0, 0, math.nan, True, 0.0, 0.0, 0.0, 0)


class PowerIntegral:
    """∫P dt over instantaneous power samples, trapezoidal, held constant beyond the first and last.

    Sample times are moved back by the view's power lag, so the integral is on the counter's clock.
    """

    def __init__(self, t_s: np.ndarray, power_w: np.ndarray, lag_s: float = 0.0) -> None:
        ok = np.isfinite(power_w)
        self.t = t_s[ok] - lag_s
        self.p = power_w[ok]
        steps = 0.5 * (self.p[1:] + self.p[:-1]) * np.diff(self.t)
        self.q = np.concatenate(([0.0], np.cumsum(steps)))

    @classmethod
    def of(cls, view: SeriesView) -> PowerIntegral:
        return cls(view.power_t_s, view.power_w, view.power_lag_s)

    def _at(self, x: float) -> float:
        t, p, q = self.t, self.p, self.q
        if x <= t[0]:
            return float(-p[0] * (t[0] - x))
        if x >= t[-1]:
            return float(q[-1] + p[-1] * (x - t[-1]))
        return float(np.interp(x, t, q))

    def count(self, a: float, b: float) -> int:
        """Samples with a < t ≤ b."""
        return int(np.searchsorted(self.t, b, "right") - np.searchsorted(self.t, a, "right"))

    def integral(self, a: float, b: float) -> float:
        if len(self.t) == 0:
            return math.nan
        return self._at(b) - self._at(a)

    def integrals(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Vectorised ``integral`` over pairs of bounds inside the samples' span."""
        return np.interp(b, self.t, self.q) - np.interp(a, self.t, self.q)


def _segments(segment: np.ndarray) -> list[tuple[int, int]]:
    starts = [0, *(np.flatnonzero(np.diff(segment)) + 1).tolist(), len(segment)]
    return [(a, b) for a, b in itertools.pairwise(starts) if b > a]


def _step_power(t: np.ndarray, c: np.ndarray, k: int) -> float:
    """Mean power of the step ending at update k (0 when there is none)."""
    if not 1 <= k < len(t):
        return 0.0
    return float((c[k] - c[k - 1]) / (t[k] - t[k - 1]))


def _cumulative(
    t: np.ndarray, c: np.ndarray, g: np.ndarray, power: PowerIntegral, x: float
) -> tuple[float, float, float]:
    """C(x) inside one segment (x ≥ its first update): value, standard uncertainty, seconds extrapolated."""
    n = len(t)
    if x >= t[-1]:
        timing = _step_power(t, c, n - 1) * g[-1] / _SQRT12
        dt = x - t[-1]
        if dt <= 0:
            return float(c[-1]), timing, 0.0
        if len(power.t) and power.t[-1] >= t[-1]:
            e = power.integral(t[-1], x)
            s = SHAPE_FLOOR_POWERED
        else:
            e = _step_power(t, c, n - 1) * dt
            s = SHAPE_FLOOR_LINEAR
        return float(c[-1] + e), math.hypot(e * s, timing), dt
    k = int(np.searchsorted(t, x, "right"))  # t[k-1] ≤ x < t[k]
    d = t[k] - t[k - 1]
    de = c[k] - c[k - 1]
    timing = de / d * g[k] / _SQRT12
    if x == t[k - 1]:
        return float(c[k - 1]), timing, 0.0
    f_lin = (x - t[k - 1]) / d
    q = power.integral(t[k - 1], t[k]) if power.count(t[k - 1], t[k]) > 0 else 0.0
    if q > 0:
        f = min(max(power.integral(t[k - 1], x) / q, 0.0), 1.0)
        floor = SHAPE_FLOOR_POWERED
    else:
        f, floor = f_lin, SHAPE_FLOOR_LINEAR
    shape = max(0.5 * abs(f - f_lin), floor * min(f, 1.0 - f)) * de
    return float(c[k - 1] + f * de), math.hypot(shape, timing), 0.0


def update_period_s(view: SeriesView) -> float:
    """Median time between consecutive counter updates of one segment (NaN with fewer than two)."""
    t, seg = view.update_t_s, view.update_segment
    same = np.diff(seg) == 0
    d = np.diff(t)[same]
    return float(np.median(d)) if len(d) else math.nan


def window_energy(view: SeriesView, t0_s: float, t1_s: float) -> WindowEnergy:
    """Energy over [t0, t1] from the view (see the module's docstring for the method)."""
    if not (math.isfinite(t0_s) and math.isfinite(t1_s)) or t1_s <= t0_s:
        raise WindowError(f"the window must have finite start < end, got start={t0_s}, end={t1_s}")
    t, c, g, seg = view.update_t_s, view.update_energy_j, view.update_gap_s, view.update_segment
    if len(t) == 0:
        raise WindowError("no energy has been recorded for this device yet")
    lo, hi = max(t0_s, float(t[0])), min(t1_s, view.last_t_s)
    if hi <= lo:
        raise WindowError(f"window {t0_s:.3f}..{t1_s:.3f} is outside the recorded data {t[0]:.3f}..{view.last_t_s:.3f}")
    power = PowerIntegral.of(view)
    segments = _segments(seg)
    energy = var = extrapolated = gap = 0.0
    touched = 0
    for i, (a, b) in enumerate(segments):
        last = i == len(segments) - 1
        s_end = view.last_t_s if last else float(t[b - 1])
        x0, x1 = max(lo, float(t[a])), min(hi, s_end)
        if x1 > x0:
            touched += 1
            e0, u0, _ = _cumulative(t[a:b], c[a:b], g[a:b], power, x0)
            e1, u1, x = _cumulative(t[a:b], c[a:b], g[a:b], power, x1)
            energy += e1 - e0
            var += u0 * u0 + u1 * u1
            extrapolated += x
        if not last:
            g0, g1 = float(t[b - 1]), float(t[b])
            overlap = min(hi, g1) - max(lo, g0)
            if overlap > 0:
                if power.count(g0, g1) > 0:
                    p_mean = power.integral(g0, g1) / (g1 - g0)
                else:
                    nb = segments[i + 1][1]
                    p_mean = 0.5 * (_step_power(t[a:b], c[a:b], b - a - 1) + _step_power(t[b:nb], c[b:nb], 1))
                e_gap = p_mean * overlap
                energy += e_gap
                var += e_gap * e_gap
                gap += overlap
    period = update_period_s(view)
    inside = (t >= t0_s) & (t <= t1_s)
    return WindowEnergy(
        start_s=t0_s,
        end_s=t1_s,
        energy_j=energy,
        uncertainty_j=math.sqrt(var),
        updates=int(inside.sum()),
        power_samples=power.count(t0_s, t1_s),
        update_period_s=period,
        short_window=not (t1_s - t0_s >= 2 * period),
        covered_s=hi - lo,
        extrapolated_s=extrapolated,
        gap_s=gap,
        segments=touched,
    )


def counter_power_ratio(view: SeriesView, t0_s: float, t1_s: float, min_updates: int = 2) -> float | None:
    """Counter energy ÷ ∫ instantaneous power between the first and last update in [t0, t1].

    Both are measured over the same interval of the newest segment; a ratio near 1 says the
    instantaneous power is a faithful shape for the counter. None with fewer than ``min_updates``
    updates: over a few steps the update-time jitter dominates.
    """
    t, c, seg = view.update_t_s, view.update_energy_j, view.update_segment
    inside = np.flatnonzero((t >= t0_s) & (t <= t1_s) & (seg == seg[-1])) if len(t) else np.array([], int)
    if len(inside) < max(min_updates, 2):
        return None
    a, b = int(inside[0]), int(inside[-1])
    power = PowerIntegral.of(view)
    if power.count(t[a], t[b]) < (b - a):
        return None
    q = power.integral(float(t[a]), float(t[b]))
    return float((c[b] - c[a]) / q) if q > 0 else None


#: Power lags tried by ``estimate_power_lag``: the H100's instantaneous power field runs ~60 ms late.
LAG_CANDIDATES_S = np.round(np.arange(-0.05, 0.2001, 0.005), 3)


def estimate_power_lag(view: SeriesView, min_steps: int = 10, min_gain: float = 0.1) -> float | None:
    """How late the power samples run against the counter, in seconds, or None if the data cannot tell.

    Tries each candidate lag and keeps the one whose power integral best matches the counter's steps
    (least squares over the steps of the newest segment). Flat power cannot tell lags apart, so a lag is
    returned only when it beats no lag by ``min_gain`` (relative RMS) over at least ``min_steps`` steps.
    """
    t, c, seg = view.update_t_s, view.update_energy_j, view.update_segment
    keep = seg == seg[-1] if len(seg) else np.zeros(0, bool)
    t, c = t[keep], c[keep]
    ok = np.isfinite(view.power_w)
    pt = view.power_t_s[ok]
    if len(t) < min_steps + 1 or len(pt) < 2:
        return None
    margin = float(LAG_CANDIDATES_S.max())
    inside = (t[:-1] - margin > pt[0] - LAG_CANDIDATES_S.min()) & (t[1:] + margin < pt[-1])
    if inside.sum() < min_steps:
        return None
    a, b, de = t[:-1][inside], t[1:][inside], np.diff(c)[inside]
    rms = []
    for lag in LAG_CANDIDATES_S:
        q = PowerIntegral(view.power_t_s, view.power_w, float(lag)).integrals(a, b)
        rms.append(float(np.sqrt(np.mean((de - q) ** 2))))
    best = int(np.argmin(rms))
    at_zero = rms[int(np.argmin(np.abs(LAG_CANDIDATES_S)))]
    if not rms[best] < (1 - min_gain) * at_zero:
        return None
    return float(LAG_CANDIDATES_S[best])


def slice_edges(t0_s: float, t1_s: float, step_s: float) -> np.ndarray:
    """Edges t0, t0 + step, …, t1 (the last slice is shorter when step does not divide the window)."""
    if not step_s > 0 or t1_s <= t0_s:
        raise WindowError(f"slices need start < end and a positive step, got {t0_s}..{t1_s} by {step_s}")
    inner = t0_s + step_s * np.arange(1, math.ceil((t1_s - t0_s) / step_s - 1e-9))
    return np.concatenate(([t0_s], inner, [t1_s]))


def window_series(view: SeriesView, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energy and uncertainty of each slice between consecutive ``edges``, all read off one view.

    Adjacent slices share their edge's cumulative energy, so the slices sum to the window's energy.
    """
    if len(view.update_t_s) == 0:
        raise WindowError("no energy has been recorded for this device yet")
    if len(edges) < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise WindowError("the slice edges must be finite and increasing")

    def one(a: float, b: float) -> WindowEnergy:
        try:
            return window_energy(view, a, b)
        except WindowError:  # a slice the device was not read in (stale): nothing counted
            return WindowEnergy.unread(a, b)

    out = [one(float(a), float(b)) for a, b in itertools.pairwise(edges)]
    return np.array([w.energy_j for w in out]), np.array([w.uncertainty_j for w in out])
