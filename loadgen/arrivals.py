"""Arrival processes: seeded, pure functions from a trace to a schedule of absolute send times.

Every process returns a ``Schedule``: sorted send times (seconds from the start of the run) and, for
each, the index of the trace request it sends, so the token lengths always come from the trace. A
process is registered by name and labels itself compactly (``poisson@4.00``, ``trace×0.50``).

Changing a trace's rate two ways:

* ``compress`` scales time: the same requests, the same shape, every gap multiplied by 1/factor;
* ``resample`` keeps the trace's own burstiness at a new rate: thinning (each arrival kept with
  probability factor) to slow down, superposing time-shifted copies of the trace to speed up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from loadgen.errors import LoadgenError
from loadgen.traces import Trace


@dataclass(frozen=True, slots=True)
class Schedule:
    times_s: np.ndarray  # sorted send times from the run's start
    index: np.ndarray  # the trace request each one sends
    label: str

    def __len__(self) -> int:
        return len(self.times_s)

    def until(self, duration_s: float) -> Schedule:
        keep = self.times_s < duration_s
        return Schedule(self.times_s[keep], self.index[keep], self.label)

    @property
    def rate_per_s(self) -> float:
        span = self.times_s[-1] - self.times_s[0] if len(self) > 1 else 0.0
        return (len(self) - 1) / span if span > 0 else 0.0


def _trace_times(trace: Trace) -> np.ndarray:
    if not trace.requests:
        raise LoadgenError(f"trace {trace.name} has no requests")
    return np.array([r.arrival_s for r in trace.requests])


def _sorted(times: np.ndarray, index: np.ndarray, label: str) -> Schedule:
    order = np.argsort(times, kind="stable")
    return Schedule(times[order], index[order].astype(np.int64), label)


def compress(trace: Trace, factor: float = 1.0, seed: int = 0) -> Schedule:
    """The trace's own timestamps, time divided by ``factor`` (2.0: twice as fast)."""
    if factor <= 0:
        raise LoadgenError(f"time scale must be positive, got {factor}")
    t = _trace_times(trace)
    return Schedule(t / factor, np.arange(len(t)), f"trace×{factor:.2f}")


def resample(trace: Trace, factor: float = 1.0, seed: int = 0) -> Schedule:
    """The trace at ``factor`` times its rate, keeping its burstiness (thinning or superposition)."""
    if factor <= 0:
        raise LoadgenError(f"rate factor must be positive, got {factor}")
    rng = np.random.default_rng(seed)
    t = _trace_times(trace)
    span = t[-1] - t[0] if len(t) > 1 else 1.0
    whole, part = int(factor), factor - int(factor)
    times, index = [], []
    for k in range(whole):
        # each copy shifted by a random offset, wrapped around the trace's span
        shift = 0.0 if k == 0 else rng.uniform(0, span)
        times.append((t - t[0] + shift) % span + t[0])
        index.append(np.arange(len(t)))
    if part > 0:
        keep = rng.random(len(t)) < part
        shift = rng.uniform(0, span) if whole else 0.0
        times.append((t[keep] - t[0] + shift) % span + t[0])
        index.append(np.flatnonzero(keep))
    return _sorted(np.concatenate(times), np.concatenate(index), f"trace~{factor:.2f}")


def _draw(trace: Trace, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, len(trace.requests), n)


def poisson(trace: Trace, rate_per_s: float, duration_s: float, seed: int = 0) -> Schedule:
    """Poisson arrivals at ``rate_per_s``; requests drawn from the trace at random."""
    return gamma(trace, rate_per_s, duration_s, cv=1.0, seed=seed, label=f"poisson@{rate_per_s:.2f}")


def constant(trace: Trace, rate_per_s: float, duration_s: float, seed: int = 0) -> Schedule:
    """One request every 1/rate seconds."""
    _check_rate(rate_per_s, duration_s)
    rng = np.random.default_rng(seed)
    times = np.arange(0.0, duration_s, 1.0 / rate_per_s)
    return Schedule(times, _draw(trace, len(times), rng), f"constant@{rate_per_s:.2f}")


def gamma(
    trace: Trace, rate_per_s: float, duration_s: float, cv: float = 1.0, seed: int = 0, label: str | None = None
) -> Schedule:
    """Gamma-distributed gaps with mean 1/rate and coefficient of variation ``cv`` (1: Poisson)."""
    _check_rate(rate_per_s, duration_s)
    if cv <= 0:
        raise LoadgenError(f"cv must be positive, got {cv}")
    rng = np.random.default_rng(seed)
    shape = 1.0 / cv**2
    n = int(rate_per_s * duration_s * 1.2 + 10 * np.sqrt(rate_per_s * duration_s) + 10)
    times = np.cumsum(rng.gamma(shape, 1.0 / (rate_per_s * shape), n))
    while times[-1] < duration_s:  # rare: draw more
        times = np.concatenate([times, times[-1] + np.cumsum(rng.gamma(shape, 1.0 / (rate_per_s * shape), n))])
    times = times[times < duration_s]
    return Schedule(times, _draw(trace, len(times), rng), label or f"gamma@{rate_per_s:.2f},cv{cv:.2f}")


def mix(conv: Schedule, code: Schedule, conv_share: float, code_offset: int, seed: int = 0) -> Schedule:
    """Two streams at a given share: each thinned so ``conv_share`` of the arrivals are conversation.

    ``code_offset`` is where the code trace's requests start in the merged request list.
    """
    if not 0 <= conv_share <= 1:
        raise LoadgenError(f"the conversation share must be in [0, 1], got {conv_share}")
    rng = np.random.default_rng(seed)
    n_conv, n_code = len(conv), len(code)
    # keep as many as possible of each stream while meeting the share
    total = min(n_conv / conv_share if conv_share else np.inf, n_code / (1 - conv_share) if conv_share < 1 else np.inf)
    keep_conv = rng.random(n_conv) < min(1.0, conv_share * total / max(n_conv, 1))
    keep_code = rng.random(n_code) < min(1.0, (1 - conv_share) * total / max(n_code, 1))
    return _sorted(
        np.concatenate([conv.times_s[keep_conv], code.times_s[keep_code]]),
        np.concatenate([conv.index[keep_conv], code.index[keep_code] + code_offset]),
        f"mix(conv {conv_share:.0%})",
    )


def workload(process: str, population: Trace, rate: float, seed: int = 0, cv: float = 1.0) -> Schedule:
    """Every request of ``population`` sent exactly once, in its order, at the times ``process`` gives.

    The requests (and so the token multiset) are the same at every rate; only their times change (the
    first is sent at 0):
    ``trace`` scales the population's own times by 1/rate; ``trace-resample`` takes the times of its
    resampling at ``rate`` (the population's arrivals repeated as often as needed); the others draw
    their times at ``rate`` requests/s.
    """
    n = len(population.requests)
    if n == 0:
        raise LoadgenError(f"trace {population.name} has no requests")
    if process not in PROCESSES:
        raise LoadgenError(f"unknown arrival process {process!r}: use one of {', '.join(PROCESSES)}")
    if process == CLOSED_LOOP:
        return saturate(population)
    if process == "trace":
        times = compress(population, rate).times_s
    elif process == "trace-resample":
        if rate <= 0:
            raise LoadgenError(f"rate factor must be positive, got {rate}")
        t = _trace_times(population)
        span = t[-1] - t[0] + (t[-1] - t[0]) / max(n - 1, 1) if n > 1 else 1.0
        copies = int(np.ceil(1.0 / min(rate, 1.0))) + 1  # enough arrivals that thinning leaves n
        tiled = [replace(r, arrival_s=r.arrival_s + k * span) for k in range(copies) for r in population.requests]
        times = resample(replace(population, requests=tiled), rate, seed).times_s
    else:
        duration = (2.0 * n + 10.0) / rate if rate > 0 else 0.0  # about 2n + 10 arrivals at any rate
        times = PROCESSES[process](population, rate, duration, seed, cv).times_s
        while len(times) < n:  # rare: draw over a longer span
            duration *= 2
            times = PROCESSES[process](population, rate, duration, seed, cv).times_s
    if len(times) < n:
        raise LoadgenError(f"{process} at {rate:g} gave {len(times)} arrivals for {n} requests")
    label = {"trace": f"trace×{rate:.2f}", "trace-resample": f"trace~{rate:.2f}"}.get(process, f"{process}@{rate:.2f}")
    times = np.asarray(times[:n], dtype=float)
    return Schedule(times - times[0], np.arange(n, dtype=np.int64), f"{label}, {n} requests")


def saturate(trace: Trace) -> Schedule:
    """Closed loop: every request of the trace, each sent as soon as one of the ``--concurrency`` in flight
    ends (the way ML.ENERGY drives a server to its saturated throughput). No times: they are all 0 and the
    dispatcher sends each when a slot frees."""
    n = len(trace.requests)
    return Schedule(np.zeros(n), np.arange(n, dtype=np.int64), f"saturate, {n} requests")


#: The process that is a closed loop, not a schedule of times.
CLOSED_LOOP = "saturate"


def _check_rate(rate_per_s: float, duration_s: float) -> None:
    if not (rate_per_s > 0 and duration_s > 0):
        raise LoadgenError(f"rate and duration must be positive, got {rate_per_s}/s for {duration_s} s")


#: Processes by name, for the CLI and Locust's web UI. Each takes (trace, rate or factor, duration, seed,
#: cv); only gamma uses cv.
PROCESSES: dict[str, Callable[..., Schedule]] = {
    "trace": lambda trace, factor, duration_s, seed, cv=1.0: compress(trace, factor, seed).until(duration_s),
    "trace-resample": lambda trace, factor, duration_s, seed, cv=1.0: resample(trace, factor, seed).until(duration_s),
    "poisson": lambda trace, rate, duration_s, seed, cv=1.0: poisson(trace, rate, duration_s, seed),
    "constant": lambda trace, rate, duration_s, seed, cv=1.0: constant(trace, rate, duration_s, seed),
    "gamma": lambda trace, rate, duration_s, seed, cv=1.0: gamma(trace, rate, duration_s, cv, seed),
    CLOSED_LOOP: lambda trace, rate, duration_s, seed, cv=1.0: saturate(trace),
}
