"""The uncertainty budget of a figure averaged over independent trace segments (GUM's way, JCGM 100:2008).

- **Type A**: the spread of the per-segment values, s/√n with n − 1 degrees of freedom: the workload's own
  variation (a different stretch of the trace) and re-measurement noise together. One segment: none, and
  so **no interval**: the figure and its type B terms are given, never a 95 % interval that leaves out
  the spread nobody measured.
- **Type B**, each a relative standard uncertainty per segment, independent across segments or common to
  all of them (``correlated``): the monitor's counter interpolation, where prefill tokens fall at the
  window's edges, the loaded-idle power (dynamic figures; one measurement for every window, so common),
  the offline reference's own terms (premiums), and the sensor's accuracy (``SENSOR``: a gain error
  common to every reading of one sensor, so it cancels in a ratio of two of them).

Combined: u_c = √(u_A² + Σ u_B²); the 95 % interval is ±k·u_c with k Student's t at the
Welch–Satterthwaite degrees of freedom (type B terms taken as exactly known, ν = ∞). Ratios are
budgeted on the log scale (geometric mean, relative terms add in quadrature, interval symmetric in the
log; positive quantities are budgeted so too, so that their intervals stay positive). Every term is reported
relative to the mean, with the one that dominates named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from estimands.windows import t95

#: The sensor's accuracy as its vendor documents it: (bound, where it is documented). A bound b is taken
#: as a uniform distribution: standard uncertainty b / √3.
SENSOR = {
    "nvml": (0.05, "NVML API reference, nvmlDeviceGetPowerUsage: 'accurate to within +/- 5% of current power "
             "draw' (stated for Fermi and Kepler GPUs; NVIDIA publishes no figure for newer ones, so that bound "
             "is taken here)"),
    "rapl": (0.10, "Intel documents no accuracy for RAPL's energy counters: ±10 % is taken as the bound"),
    "estimate": (0.50, "a utilization model, not a measurement: ±50 % is taken as the bound"),
}  # fmt: skip


def sensor_term(sources: Sequence[str]) -> float:
    """The relative standard uncertainty of the sensor (the worst of the sources read)."""
    bounds = [SENSOR[s][0] for s in sources if s in SENSOR]
    return max(bounds) / math.sqrt(3) if bounds else 0.0


def idle_uncertainty_w(idle: Mapping[str, Any] | None) -> float:
    """The standard uncertainty of a loaded-idle power (``monitor.meter.StablePower`` as JSON): its
    agreeing blocks taken as uniform over their spread; half the spread when it did not settle."""
    if not idle:
        return 0.0
    spread = float(idle.get("spread_w") or 0.0)
    return spread / math.sqrt(12) if idle.get("stable", True) else spread / 2


def coverage_factor(u_a: float, u_c: float, n: int) -> float:
    """k of the 95 % interval ±k·u_c: Student's t at the Welch–Satterthwaite degrees of freedom of a type A
    term ``u_a`` from ``n`` segments within ``u_c`` (type B terms exactly known: ν = ∞, k = 1.96)."""
    nu = u_c**4 / (u_a**4 / (n - 1)) if u_a > 0 and n >= 2 else math.inf
    return t95(int(nu)) if math.isfinite(nu) else 1.96


def budget(
    values: Sequence[float | None],
    terms: Mapping[str, tuple[Sequence[float], bool]] | None = None,
    log: bool = False,
) -> dict[str, Any]:
    """The mean of ``values`` (one per segment) with its budget. ``terms``: name → (each segment's relative
    standard uncertainty, whether the term is common to all segments)."""
    keep = [i for i, v in enumerate(values) if v is not None and math.isfinite(v) and (v > 0 or not log)]
    x = np.array([values[i] for i in keep], dtype=float)
    n = len(x)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    y = np.log(x) if log else x
    centre = float(y.mean())
    scale = 1.0 if log else abs(centre) or 1.0  # terms as relative uncertainties of the mean
    u: dict[str, float] = {}
    if n >= 2:
        u["type_a"] = float(y.std(ddof=1)) / math.sqrt(n) / scale
    for name, (rel, common) in (terms or {}).items():
        r = np.array([rel[i] for i in keep], dtype=float)
        size = r if log else r * np.abs(x) / scale
        u[name] = float(size.sum() / n) if common else float(math.sqrt(float((size**2).sum())) / n)
    uc = math.sqrt(sum(v * v for v in u.values()))
    k = coverage_factor(u.get("type_a", 0.0), uc, n)
    half = k * uc * scale
    mean = math.exp(centre) if log else centre
    low, high = (math.exp(centre - half), math.exp(centre + half)) if log else (centre - half, centre + half)
    out: dict[str, Any] = {"mean": mean, "n": n, "k": k, "u_combined": uc, "terms": u}
    out["dominant"] = max(u, key=lambda name: u[name]) if u else None
    if uc > 0 and n >= 2:
        out.update(low=low, high=high)
    else:
        out.update(low=None, high=None)
    if n == 1:
        out["note"] = "one segment: no type A term (the spread over trace segments was not measured), so no interval"
    return out
