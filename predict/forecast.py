"""Predictions at given arrival rates, with intervals, and the Little's-law baseline beside them.

Estimands (each per arrival rate, for the trace's length mix under the arrival process):

- **J/output-token** and **J/token**: the steady state's energy ÷ the output (input + output) tokens
  processed, all of the profile's power (attributional), read in the simulation from the arrival of the
  first ``WARMUP_SHARE`` of requests (the system fills from empty before) to the last arrival (after it
  the system only drains), as the comparison reads a replay's steady window;
- **the premium**: that J/output-token ÷ the saturated reference's (the same profile's closed loop at
  ``max_num_seqs`` over the same mix, in its steady part: the start cohort's last first token → the last
  send), so both sides price the same work by the same model;
- **TTFT / TPOT p50** of the requests arriving in that span;
- **capacity**: the saturated closed loop's completion rate (requests/s) in its steady part; **load** =
  arrival rate ÷ capacity;
- **the Little's-law baseline**: mean running requests L = λ × mean time in system (W from the same
  simulation), placed on the profile's P(n): J/output-token = P(L) ÷ (λ × mean output tokens).

Intervals: each replicate draws the profile from its uncertainty (``Profile.draw``) and the arrivals
from their own seed; the figure is the median over replicates and the interval their 2.5–97.5 %
percentiles (positive quantities stay positive).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from estimands.windows import WARMUP_SHARE  # the comparison's: its window opens after this share of arrivals
from predict.profile import Profile
from predict.simulate import Figures, Job, simulate, steady_part

#: A saturated closed loop serves at least this many times ``max_num_seqs`` requests (its steady part
#: then holds several turnovers of every slot).
SATURATED_TURNOVERS = 6


@dataclass(frozen=True, slots=True)
class Saturated:
    """The profile's saturated closed loop over a mix: its steady part's figures and completion rate."""

    figures: Figures
    completed_per_s: float


def saturated(profile: Profile, lengths: Sequence[tuple[int, int]]) -> Saturated:
    """The closed loop at ``max_num_seqs`` over ``lengths`` (input, output), repeated in order until it holds
    ``SATURATED_TURNOVERS`` × ``max_num_seqs`` requests."""
    if not lengths:
        raise ValueError("a saturated reference needs at least one request's lengths")
    c = profile.max_num_seqs
    total = max(len(lengths), SATURATED_TURNOVERS * c)
    jobs = [Job(0.0, *lengths[i % len(lengths)]) for i in range(total)]
    sim = simulate(profile, jobs, concurrency=c)
    span = steady_part(sim, c)
    if span is None:
        raise ValueError("the closed loop has no steady part")
    t0, t1 = span
    done = int(np.sum((sim.last_token_s >= t0) & (sim.last_token_s < t1)))
    return Saturated(sim.figures(t0, t1), done / (t1 - t0))


@dataclass(frozen=True, slots=True)
class Outcome:
    """One simulated replay at one arrival rate (see the module's estimands)."""

    rate_per_s: float
    j_per_token: float
    j_per_output_token: float
    ttft_p50_s: float
    tpot_p50_s: float
    running_mean: float
    little_running: float
    little_j_per_output_token: float


def replay(profile: Profile, jobs: Sequence[Job], window: tuple[float, float] | None = None) -> Outcome:
    """Serve ``jobs`` (open loop) and read the steady span: ``window`` (simulation seconds), else from the
    arrival of the first ``WARMUP_SHARE`` of them to the last arrival."""
    sim = simulate(profile, jobs)
    arrival = sim.arrival_s
    if window is None:
        window = (float(arrival[int(WARMUP_SHARE * (len(arrival) - 1))]), float(arrival[-1]))
    t0, t1 = window
    if t1 <= t0:
        raise ValueError("the steady span is empty: give more requests")
    f = sim.figures(t0, t1)
    inside = (arrival >= t0) & (arrival < t1)
    lam = int(inside.sum()) / (t1 - t0)
    w = float(np.mean(sim.e2e_s[inside])) if inside.any() else math.nan
    little = lam * w
    out_rate = lam * float(np.mean(sim.output_tokens[inside])) if inside.any() else math.nan
    many = inside & (sim.output_tokens > 1)
    tpot = (sim.last_token_s[many] - sim.first_token_s[many]) / (sim.output_tokens[many] - 1)
    return Outcome(
        lam, f.j_per_token, f.j_per_output_token, float(np.median(sim.ttft_s[inside])) if inside.any() else math.nan,
        float(np.median(tpot)) if len(tpot) else math.nan, f.running_mean, little,
        profile.power(min(little, profile.max_num_seqs)) / out_rate if out_rate > 0 else math.nan,
    )  # fmt: skip


def interval(values: Sequence[float]) -> dict[str, float]:
    """Median and 95 % percentile interval over replicates."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not len(v):
        return {"median": math.nan, "low": math.nan, "high": math.nan, "replicates": 0}
    lo, med, hi = np.percentile(v, [2.5, 50, 97.5])
    return {"median": float(med), "low": float(lo), "high": float(hi), "replicates": len(v)}


@dataclass(frozen=True, slots=True)
class Plan:
    """What to predict: the population's lengths, its arrivals at each rate, how many replicates."""

    lengths: Sequence[tuple[int, int]]
    rates_per_s: Sequence[float]
    arrivals: Callable[[float, int], Sequence[float]]  # (rate/s, seed) → sorted arrival times, one per length
    replicates: int
    seed: int


def predict(profile: Profile, plan: Plan) -> list[dict[str, object]]:
    """Per rate: each estimand's median and 95 % interval over replicates (each draws the profile and seeds
    its arrivals), the Little's-law baseline beside them. The point profile gives the capacity (the load
    axis), so every replicate serves the same arrival rate."""
    cap = saturated(profile, plan.lengths).completed_per_s
    rows: list[dict[str, list[float]]] = [{} for _ in plan.rates_per_s]
    for r in range(plan.replicates):
        drawn = profile.draw(np.random.default_rng([plan.seed, r]))
        ref = saturated(drawn, plan.lengths).figures.j_per_output_token
        for row, rate in zip(rows, plan.rates_per_s, strict=True):
            times = plan.arrivals(rate, plan.seed + r)
            jobs = [Job(float(t), i, o) for t, (i, o) in zip(times, plan.lengths, strict=True)]
            o = replay(drawn, jobs)
            for key, value in (
                ("j_per_token", o.j_per_token), ("j_per_output_token", o.j_per_output_token),
                ("premium", o.j_per_output_token / ref), ("ttft_p50_s", o.ttft_p50_s), ("tpot_p50_s", o.tpot_p50_s),
                ("running_mean", o.running_mean), ("reference_j_per_output_token", ref),
                ("little_j_per_output_token", o.little_j_per_output_token),
                ("little_premium", o.little_j_per_output_token / ref),
            ):  # fmt: skip
                row.setdefault(key, []).append(value)
    return [
        {"rate_per_s": rate, "load": rate / cap, "capacity_per_s": cap, **{k: interval(v) for k, v in row.items()}}
        for rate, row in zip(plan.rates_per_s, rows, strict=True)
    ]
