"""Steady-state windows: where a replay's online J/token is read, and whether the number means anything.

Pure functions over a replay's records and its energy slices, so ``joulebench report`` re-derives them.

A replay sends a fixed workload (the same N requests at every rate, only their times scaled). Its
*arrival phase* runs from the first to the last scheduled send; afterwards the system only drains. The
steady-state window is fixed in the workload's own order, so that every rate measures the same requests:

- it opens at the first arrival after the ⌈``warmup_share`` × N⌉ warm-up requests (in the order they are
  scheduled, the same at every rate): the requests before it are the warm-up, whatever the rate;
- it closes at the last scheduled send (a drain is not steady);
- its edges are on the energy slices' grid, so its energy is a sum of slices.

Where MSER-5 (White, 1997) would cut the requests-in-system series is kept beside it (``mser_s``), not used to
move the window: on a bursty trace MSER cuts at the trace's own bursts, a different place at each rate, and
the rates would then measure different requests. Whether the window is steady is the tests' business.

Steady state is tested, not assumed (``trend``): requests in the system and power must show no linear
trend that is both *significant* (two-sided 5 %) and *material* (a change across the window of more than
``IN_SYSTEM_CHANGE`` of the mean in-system count and more than one request, or more than ``POWER_CHANGE``
of the mean power). Both series are strongly autocorrelated: a request stays in the system for many
slices, so an ordinary t on the slope (or on a few block means, which stay correlated when a block is
not many residence times long) calls a steady queue's slow swings a trend. The test therefore takes its
variance from the series' own low frequencies, where a trend lives (Müller 2007, "A theory of robust
long-run variance estimation", J. Econometrics 141; Lazarus, Lewis, Stock and Watson 2018, "HAR inference:
recommendations for practice", JBES 36): the series' coefficients on the cosines cos(πj(i+½)/n) of its
length (a type II DCT) are nearly uncorrelated, each with variance the spectrum at frequency j/2T. The
first, a half cosine falling across the window, carries a linear trend with 99 % of a least-squares
slope's efficiency; cosines 2 … q+1 estimate the variance, and their ratio is Student's t with q degrees
of freedom — exact for a Gaussian series whose spectrum is known in shape, with no bandwidth to pick.
The shape is the M/G/∞ one of requests that arrive uncorrelated and stay the window's recorded residence
times S (shot noise of rectangular pulses: E[S² sinc²(fS)] / E[S²]), so each coefficient is divided by
it: the correlation time comes from the records, not from a rule of thumb. Power follows requests in
system (plus white noise and a cap, which only flatten its spectrum: the test is then conservative). Only
cosines where the shape keeps ``SHAPE_MIN`` of its zero-frequency level are used, at most ``Q_MAX``; a
window with fewer than ``Q_MIN`` (about four to five mean residence times, or ten slices) is *not
tested* — its own series cannot tell a trend from a swing — and so never valid. In such a window a
backlog that grows by more than ``SWING`` standard deviations of a stationary queue's change still names
the rate saturated. ``benchmarks/steadiness.py`` gives the test's false-alarm and detection rates on
windows simulated from the committed runs' residence times.

A rate is *saturated* when its window's completions fall short of its arrivals by more than a stationary
queue's swing (``SHORTFALL`` of the arrivals, two requests and twice the mean number in the system,
whichever is most), when requests in the system grow, or when more than ``FAILED`` of its requests
failed: a throughput figure, never an online premium.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from estimands.reference import steady_span
from estimands.tokens import end_of

IN_SYSTEM_CHANGE = 0.25
POWER_CHANGE = 0.10
SHORTFALL = 0.10
FAILED = 0.10
#: The records' and vLLM's requests in system (running + waiting) may differ by this much on average
#: (share of the larger, and at least ``AGREE_MIN`` requests) before the window is refused.
AGREE_SHARE = 0.25
AGREE_MIN = 2.0
#: The load generator's clock against the monitor's: beyond this the window's edges are not where the
#: energy was read.
CLOCK_OFFSET_MAX_S = 0.05
#: Clock-event reasons that mean the GPU ran slower than its configuration allows (NVML's names,
#: ``monitor.sources``): thermal and hardware slowdowns. ``sw_power_cap`` is not one: at the board's power
#: limit it is how the GPU regulates itself under load (an H200 reports it during vLLM's prefill bursts
#: at 0.5× the conversation trace's rate); it is reported per window, and a lowered limit is a sweep's
#: setting, recorded as such.
THROTTLED = ("hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake")

#: The trend test (``trend``): the variance of the trend comes from the series' cosines 2, 3, … up to the
#: last where the spectrum's shape is at least ``SHAPE_MIN`` of its level at zero frequency, at most
#: ``Q_MAX`` of them; with fewer than ``Q_MIN`` the window is too short, in residence times or in slices,
#: to be tested.
SHAPE_MIN = 0.1
Q_MIN = 4
Q_MAX = 16
#: In a window too short to test, requests in system that grow by more than this many standard deviations
#: of a stationary queue's change (at most √(2·mean) for Poisson arrivals) still mean a growing backlog.
SWING = 4.0

#: Student's t, two-sided 95 %, by degrees of freedom (1–30); 1.96 beyond.
T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t95(df: int) -> float:
    return T95[df - 1] if 1 <= df <= len(T95) else 1.96


def in_system(records: Sequence[Mapping[str, Any]], times_s: Sequence[float]) -> np.ndarray:
    """Requests scheduled by each time and not yet finished then (the queue plus those in service)."""
    t = np.asarray(times_s, dtype=float)
    if not records:
        return np.zeros(len(t))
    starts = np.sort([float(r["scheduled_s"]) for r in records])
    ends = np.sort([end_of(r) for r in records])
    return (np.searchsorted(starts, t, side="right") - np.searchsorted(ends, t, side="right")).astype(float)


@dataclass(frozen=True, slots=True)
class Trend:
    """A linear trend across a window, tested against the series' own low-frequency variance."""

    mean: float
    change: float  # the linear trend's change from the window's start to its end
    t_stat: float
    significant: bool  # |t| beyond Student's 95 % at ``df`` degrees of freedom
    tested: bool = True  # False: too short to test (``trend``); then never significant
    df: int = 0  # cosines that estimate the variance
    correlation_s: float = 0.0  # the residence times' correlation time, E[S²] / (2 E[S])
    slices: int = 0

    def material(self, share: float, floor: float = 0.0) -> bool:
        return abs(self.change) > max(share * abs(self.mean), floor)


def shape(residence_s: Sequence[float], frequency_hz: np.ndarray) -> np.ndarray:
    """The spectrum of requests in system relative to its value at zero frequency when requests arrive
    without correlation and stay ``residence_s`` (M/G/∞ shot noise of rectangular pulses):
    E[S² sinc²(f S)] / E[S²]."""
    s = np.asarray(residence_s, dtype=float)
    s = s[s > 0]
    if not s.size:
        return np.ones(len(frequency_hz))
    w = s**2
    return (w * np.sinc(np.outer(frequency_hz, s)) ** 2).sum(axis=1) / w.sum()


def trend(times_s: Sequence[float], values: Sequence[float], residence_s: Sequence[float]) -> Trend:
    """The linear trend of ``values`` (equally spaced at ``times_s``) and its t, which allows for the
    correlation that requests staying ``residence_s`` in the system give the series (module docstring).
    Not tested when fewer than ``Q_MIN`` cosines are left to estimate the variance."""
    t, y = np.asarray(times_s, dtype=float), np.asarray(values, dtype=float)
    n = len(y)
    mean = float(y.mean()) if n else math.nan
    s = np.asarray(residence_s, dtype=float)
    tau = float((s**2).mean() / (2 * s.mean())) if s.size and s.mean() > 0 else 0.0
    if n < 2 * (Q_MIN + 1) or t[-1] <= t[0]:
        return Trend(mean, 0.0, 0.0, False, False, 0, tau, n)
    span = (t[-1] - t[0]) * n / (n - 1)
    j = np.arange(1, min(Q_MAX + 1, n // 2) + 1)
    h = shape(s, j / (2 * span))
    usable = int(np.argmin(h >= SHAPE_MIN)) if (h < SHAPE_MIN).any() else len(j)
    q = usable - 1
    if q < Q_MIN:
        return Trend(mean, 0.0, 0.0, False, False, max(q, 0), tau, n)
    j, h = j[:usable], h[:usable]
    u = (np.arange(n) + 0.5) / n
    basis = np.sqrt(2.0 / n) * np.cos(np.pi * np.outer(j, u))
    c = basis @ y
    a = float(basis[0] @ (u - 0.5))  # the first cosine's coefficient of a unit change across the window
    change = float(c[0] / a)
    level = float((c[1:] ** 2 / h[1:]).mean())  # the spectrum at zero frequency, from the higher cosines
    se = math.sqrt(level * h[0]) / abs(a)
    t_stat = change / se if se > 0 else (math.inf if change else 0.0)
    return Trend(mean, change, t_stat, abs(t_stat) > t95(q), True, q, tau, n)


def mser(values: Sequence[float], batch: int = 5) -> int:
    """MSER-m truncation (White 1997): how many leading values to drop so that the rest's mean has the
    smallest standard error, searched over the first half, in batches of ``batch``."""
    y = np.asarray(values, dtype=float)
    k = len(y) // batch
    if k < 4:
        return 0
    b = y[: k * batch].reshape(k, batch).mean(axis=1)
    best, best_d = math.inf, 0
    for d in range(k // 2 + 1):
        rest = b[d:]
        score = float(((rest - rest.mean()) ** 2).sum()) / len(rest) ** 2
        if score < best - 1e-12:
            best, best_d = score, d
    return best_d * batch


#: The share of each workload's requests whose arrivals are the warm-up (``choose_window``).
WARMUP_SHARE = 0.2


@dataclass(frozen=True, slots=True)
class Window:
    start_s: float
    end_s: float
    warmup_s: float  # from the first send to the window's start
    mser_s: float  # where MSER-5 alone would open it (from the first send)
    arrival_end_s: float  # the last scheduled send

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def record(self) -> dict[str, float]:
        return {**asdict(self), "duration_s": self.duration_s}


def choose_window(
    records: Sequence[Mapping[str, Any]], edges: Sequence[float], warmup_share: float = WARMUP_SHARE
) -> Window | None:
    """The steady-state window of one replay, its edges on ``edges`` (the energy slices): from the arrival of
    first request after the ⌈``warmup_share`` × N⌉ warm-up requests to the last arrival. None when that holds no
    slice."""
    e = np.asarray(edges, dtype=float)
    sched = np.sort([float(r["scheduled_s"]) for r in records])
    if len(sched) < 2 or len(e) < 2:
        return None
    first, last = float(sched[0]), float(sched[-1])
    opened = float(sched[min(math.ceil(warmup_share * len(sched)), len(sched) - 1)])
    mids = 0.5 * (e[1:] + e[:-1])
    arrival = (mids >= first) & (mids <= last)
    n = in_system(records, mids[arrival])
    mser_t = float(mids[arrival][mser(n)]) if n.size else first
    lo = int(np.searchsorted(e, opened, side="left"))
    hi = int(np.searchsorted(e, last, side="right")) - 1
    if lo >= len(e) or hi <= lo:
        return None
    return Window(float(e[lo]), float(e[hi]), float(e[lo]) - first, mser_t - first, last)


def measured_requests(records: Sequence[Mapping[str, Any]], window: Window | None) -> set[int]:
    """The workload's requests (by their place in the schedule) that arrive in the window."""
    if window is None:
        return set()
    order = sorted(range(len(records)), key=lambda i: (records[i]["scheduled_s"], i))
    return {rank for rank, i in enumerate(order) if window.start_s <= records[i]["scheduled_s"] < window.end_s}


def overlap(sets: Sequence[set[int]]) -> float | None:
    """The smallest Jaccard index between any two of ``sets``: 1 when every rate measured the same requests."""
    pairs = [len(a & b) / len(a | b) for i, a in enumerate(sets) for b in sets[i + 1 :] if a | b]
    return min(pairs) if pairs else None


def saturated_window(records: Sequence[Mapping[str, Any]], edges: Sequence[float], concurrency: int) -> Window | None:
    """The steady part of a closed-loop (saturate) replay (``estimands.reference.steady_span``: from when the
    start cohort has all ended to the last send), its edges on ``edges``. None when there is no such part."""
    span = steady_span(records, concurrency)
    if span is None:
        return None
    e = np.asarray(edges, dtype=float)
    opened, last = span
    first = min(r["sent_s"] for r in records if r.get("sent_s") is not None)
    lo = int(np.searchsorted(e, opened, side="left"))
    hi = int(np.searchsorted(e, last, side="right")) - 1
    if lo >= len(e) or hi <= lo:
        return None
    return Window(float(e[lo]), float(e[hi]), float(e[lo]) - first, opened - first, last)


def slices_in(edges: Sequence[float], window: Window) -> slice:
    e = np.asarray(edges, dtype=float)
    lo = int(np.searchsorted(e, window.start_s - 1e-9, side="left"))
    hi = int(np.searchsorted(e, window.end_s + 1e-9, side="right")) - 1
    return slice(lo, hi)


def steadiness(
    records: Sequence[Mapping[str, Any]],
    edges: Sequence[float],
    slice_energy_j: Sequence[float],
    window: Window,
    server_in_system: tuple[Sequence[float], Sequence[float]] | None = None,
) -> dict[str, Any]:
    """The window's tests: trends of requests in system and of power, arrivals against completions,
    failures, and (when vLLM's gauges were polled) the records' in-system count against vLLM's."""
    e = np.asarray(edges, dtype=float)
    k = slices_in(e, window)
    mids = 0.5 * (e[1:] + e[:-1])[k]
    power = np.asarray(slice_energy_j, dtype=float)[k] / np.diff(e)[k]
    n = in_system(records, mids)
    t0, t1 = window.start_s, window.end_s
    stays = residence(records, t0, t1)
    n_trend, p_trend = trend(mids, n, stays), trend(mids, power, stays)
    arrivals = sum(1 for r in records if t0 <= r["scheduled_s"] < t1)
    completed = sum(1 for r in records if r["status"] == "ok" and t0 <= (r.get("last_token_s") or -math.inf) < t1)
    failed = sum(1 for r in records if r["status"] != "ok" and t0 <= r["scheduled_s"] < t1)
    out: dict[str, Any] = {
        "arrivals": arrivals,
        "completed": completed,
        "failed": failed,
        "arrival_rate_per_s": arrivals / window.duration_s,
        "completion_rate_per_s": completed / window.duration_s,
        "in_system": {"start": float(in_system(records, [t0])[0]), "end": float(in_system(records, [t1])[0]),
                      **_trend_json(n_trend)},
        "power_w": _trend_json(p_trend),
        "not_steady": [],
        "not_tested": [],
        "saturated": [],
    }  # fmt: skip
    if not n_trend.tested:
        stay = float(np.mean(stays)) if stays else 0.0
        out["not_tested"].append(
            f"{n_trend.slices} slices ({window.duration_s:.1f} s, {window.duration_s / stay if stay else 0:.1f} "
            f"times the {stay:.2f} s its requests stay on average) leave {n_trend.df} of the {Q_MIN} cosines "
            "a trend test needs"
        )
        start, end = out["in_system"]["start"], out["in_system"]["end"]
        if end - start > max(IN_SYSTEM_CHANGE * n_trend.mean, 1.0, SWING * math.sqrt(2 * n_trend.mean)):
            out["saturated"].append(f"the backlog grows from {start:.0f} to {end:.0f} requests across the window")
    if n_trend.significant and n_trend.material(IN_SYSTEM_CHANGE, 1.0):
        out["not_steady"].append(
            f"requests in system trend from {max(0.0, n_trend.mean - n_trend.change / 2):.1f} to "
            f"{max(0.0, n_trend.mean + n_trend.change / 2):.1f} across the window (t = {n_trend.t_stat:.1f})"
        )
        if n_trend.change > 0:
            out["saturated"].append("the backlog grows")
    if p_trend.significant and p_trend.material(POWER_CHANGE):
        out["not_steady"].append(
            f"power trends from {max(0.0, p_trend.mean - p_trend.change / 2):.0f} to "
            f"{max(0.0, p_trend.mean + p_trend.change / 2):.0f} W "
            f"across the window (t = {p_trend.t_stat:.1f})"
        )
    if arrivals - completed > max(SHORTFALL * arrivals, 2, 2 * n_trend.mean):
        out["saturated"].append(
            f"completions ({out['completion_rate_per_s']:.2f}/s) fall short of arrivals "
            f"({out['arrival_rate_per_s']:.2f}/s)"
        )
    if arrivals and failed > FAILED * arrivals:
        out["saturated"].append(f"{failed} of {arrivals} requests failed")
    if server_in_system is not None and len(server_in_system[0]):
        ts, ns = (np.asarray(x, dtype=float) for x in server_in_system)
        inside = (ts >= t0) & (ts <= t1)
        if inside.any():
            ours, theirs = float(in_system(records, ts[inside]).mean()), float(ns[inside].mean())
            out["in_system"]["server_mean"] = theirs
            out["in_system"]["records_mean_at_polls"] = ours
            if abs(ours - theirs) > max(AGREE_SHARE * max(ours, theirs), AGREE_MIN):
                out["not_steady"].append(
                    f"the records count {ours:.1f} requests in the system on average, vLLM's gauges {theirs:.1f}"
                )
    return out


def residence(records: Sequence[Mapping[str, Any]], t0: float, t1: float) -> list[float]:
    """How long the window's requests stayed in the system (scheduled to their end): those scheduled in the
    window, else those in the system during it."""
    inside = [r for r in records if t0 <= r["scheduled_s"] < t1]
    inside = inside or [r for r in records if r["scheduled_s"] < t1 and end_of(r) > t0]
    return [end_of(r) - float(r["scheduled_s"]) for r in inside]


def _trend_json(t: Trend) -> dict[str, Any]:
    return {"mean": t.mean, "change": t.change, "t_stat": t.t_stat, "significant": t.significant,
            "tested": t.tested, "df": t.df, "correlation_s": t.correlation_s}  # fmt: skip


def verdict(
    steady: Mapping[str, Any],
    min_requests: int,
    short_window: bool = False,
    throttled: Sequence[str] = (),
    clock_offset_s: float | None = None,
    uncovered_s: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Valid, or every reason it is not: saturated, not steady, too few requests, too short for the
    energy counter, clocks throttled, the load generator's clock too far from the monitor's, a summed
    device not read across the window (``uncovered_s``: device → seconds missed; its sum is too small)."""
    reasons = [f"saturated: {r}" for r in steady["saturated"]]
    reasons += [f"not steady: {r}" for r in steady["not_steady"] if f"saturated: {r}" not in reasons]
    reasons += [f"not tested for steadiness: {r}" for r in steady.get("not_tested", [])]
    if steady["completed"] < min_requests:
        reasons.append(f"too few requests: {steady['completed']} completed in the window, {min_requests} needed")
    if short_window:
        reasons.append("shorter than two updates of the energy counter")
    bad = sorted(set(throttled) & set(THROTTLED))
    if bad:
        reasons.append(f"clocks throttled ({', '.join(bad)})")
    if clock_offset_s is not None and abs(clock_offset_s) > CLOCK_OFFSET_MAX_S:
        reasons.append(
            f"the load generator's clock is {1000 * clock_offset_s:+.0f} ms off the monitor's "
            f"(bound {1000 * CLOCK_OFFSET_MAX_S:.0f} ms)"
        )
    for device, missed in sorted((uncovered_s or {}).items()):
        reasons.append(f"energy incomplete: {device} was not read for {missed:.1f} s of it (stale)")
    return {"valid": not reasons, "saturated": bool(steady["saturated"]), "reasons": reasons}
