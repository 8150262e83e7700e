"""Energy attributed to requests with a per-slice model fitted on the run's own data. Pure functions.

The run's time is cut into slices (edges t₀ < … < t_K) with the energy each cost (the monitor's window
energy). In each slice k the records give what the engine did: prefill tokens (a request's input spread
over ``estimands.tokens.prefill_interval``: the ``n_in / rate`` seconds before its first token, never before it
was sent, with the engine's prefill rate measured by the server itself or calibrated offline), decode tokens (at
the times its chunks arrived), and engine steps (each running request gets at most one token a step, so
the most decode tokens any request had in the slice). The model

    E_k − P_idle·Δt_k = c·steps_k + α·prefill_k + β·decode_k + ε_k

has a cost per engine step c (the weights streamed once per step, whatever the batch: decode energy per
token is then c/b + β at a running batch b, which is why it falls with the batch), per prefill token α
and per decode token β; it is fitted (non-negative least squares) on every online slice of the run and
the offline references' steady parts, whose steps are counted by the engine itself
(``fit_model``). Its parameters' uncertainty is the jackknife over replays; the offline sets it did not
see (the same requests at once, the calibration sets) check its predictions.

Each slice's measured dynamic energy (less loaded-idle power) is shared among the requests working in
it by their modelled cost there: the step cost split by their decode tokens, plus α·prefill and β·decode
(``attribute``). The idle rule, attributional view: the loaded-idle power of a slice's time during which
at least one request is in service (from its prefill's start to its last token) goes to the requests in
service then, by their time in service — the capacity they hold; idle power while none is in service,
and dynamic energy in a slice with no modelled work, stays unattributed. Both views conserve energy:
requests + unattributed = measured. The idle share is a union of intervals, not a count of slices, so
the attributed total does not move with the slice width.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from estimands.tokens import overlap, prefill_interval, request_tokens


@dataclass(frozen=True)
class Slices:
    """What one replay's requests did in each slice: per request (rows) and in all."""

    edges: np.ndarray
    prefill: np.ndarray  # requests × slices, tokens
    decode: np.ndarray  # requests × slices, tokens
    service: np.ndarray  # requests × slices, seconds in service (prefill's start to last token)
    busy_s: np.ndarray  # per slice: seconds with at least one request in service

    @property
    def steps(self) -> np.ndarray:
        """Engine steps per slice: the most decode tokens any request had in it."""
        return self.decode.max(axis=0) if len(self.decode) else np.zeros(len(self.edges) - 1)

    def features(self) -> np.ndarray:
        """(steps, prefill tokens, decode tokens) per slice: the model's regressors."""
        return np.column_stack([self.steps, self.prefill.sum(axis=0), self.decode.sum(axis=0)])


def slices(records: Sequence[Mapping[str, Any]], edges: Sequence[float], prefill_tokens_per_s: float | None) -> Slices:
    e = np.asarray(edges, dtype=float)
    if len(e) < 2 or np.any(np.diff(e) <= 0):
        raise ValueError("edges must be increasing, at least two")
    rows = [request_tokens(r, e, prefill_tokens_per_s) for r in records]
    shape = (len(records), len(e) - 1)
    prefill = np.array([p for p, _ in rows]).reshape(shape)
    decode = np.array([d for _, d in rows]).reshape(shape)
    service = np.zeros(shape)
    spans: list[tuple[float, float]] = []
    for i, r in enumerate(records):
        interval = prefill_interval(r, prefill_tokens_per_s)
        end = r.get("last_token_s") or r.get("first_token_s")
        if interval is None or end is None:
            continue
        lo, hi = interval[0], max(float(end), interval[1])
        service[i] = overlap(e, lo, hi)
        spans.append((lo, hi))
    busy = np.zeros(len(e) - 1)
    for lo, hi in _union(spans):
        busy += overlap(e, lo, hi)
    return Slices(e, prefill, decode, service, busy)


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


PARAMETERS = ("step_j", "prefill_j_per_token", "decode_j_per_token")


@dataclass(frozen=True)
class EnergyModel:
    """c, α, β (J per engine step, per prefill token, per decode token) with their jackknife errors."""

    step_j: float
    prefill_j_per_token: float
    decode_j_per_token: float
    se: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    r2: float = math.nan
    rows: int = 0
    groups: int = 0
    jackknife: list[tuple[float, ...]] = field(default_factory=list)  # the leave-one-group-out fits

    @property
    def theta(self) -> np.ndarray:
        return np.array([self.step_j, self.prefill_j_per_token, self.decode_j_per_token])

    def describe(self) -> str:
        parts = [f"{name} {v:.4g} ± {s:.2g}" for name, v, s in zip(("c (J/step)", "α (J/prefill token)",
                                                                    "β (J/decode token)"), self.theta, self.se,
                                                                   strict=True)]  # fmt: skip
        return (f"E − P_idle·Δt = c·steps + α·prefill + β·decode: {', '.join(parts)} (jackknife over {self.groups} "
                f"groups; R² {self.r2:.3f} on {self.rows} rows)")  # fmt: skip

    def record(self) -> dict[str, Any]:
        return {**{k: float(v) for k, v in zip(PARAMETERS, self.theta, strict=True)},
                "se": dict(zip(PARAMETERS, map(float, self.se), strict=True)), "r2": self.r2, "rows": self.rows,
                "groups": self.groups, "fit": self.describe()}  # fmt: skip

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=float) @ self.theta

    def replicas(self) -> list[EnergyModel]:
        """The jackknife's leave-one-group-out models (for the uncertainty of what the model attributes)."""
        return [EnergyModel(*theta) for theta in self.jackknife]


#: Equal costs per token and no step cost: the fallback when no fit is possible, and what it says.
TOKENS_ONLY = EnergyModel(0.0, 1.0, 1.0)


def nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient ≥ 0, by trying each subset of the (few) columns."""
    best, best_sse = np.zeros(x.shape[1]), float(y @ y)
    for size in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), size):
            sub = x[:, cols]
            coef, *_ = np.linalg.lstsq(sub, y, rcond=None)
            if np.any(coef < 0):
                continue
            resid = y - sub @ coef
            if (sse := float(resid @ resid)) < best_sse - 1e-12 * max(1.0, best_sse):
                best_sse = sse
                best = np.zeros(x.shape[1])
                best[list(cols)] = coef
    return best


def fit_model(
    x: np.ndarray, y: np.ndarray, groups: Sequence[int], weights: Sequence[float] | None = None
) -> EnergyModel:
    """Fit c, α, β ≥ 0 on rows (steps, prefill tokens, decode tokens) → dynamic energy, weighted; the
    jackknife over ``groups`` (one per replay, one per offline set) gives their standard errors."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    w = np.ones(len(y)) if weights is None else np.sqrt(np.asarray(weights, dtype=float))
    if len(y) < 3:
        raise ValueError("fitting the energy model needs at least three rows")
    xs, ys = x * w[:, None], y * w
    theta = nnls(xs, ys)
    resid = ys - xs @ theta
    total = float(((ys - ys.mean()) ** 2).sum())
    r2 = 1 - float(resid @ resid) / total if total > 0 else math.nan
    g = np.asarray(groups)
    labels = sorted(set(g.tolist()))
    jack: list[tuple[float, ...]] = []
    if len(labels) >= 3:
        for label in labels:
            keep = g != label
            jack.append(tuple(float(v) for v in nnls(xs[keep], ys[keep])))
        j = np.array(jack)
        se = np.sqrt((len(labels) - 1) / len(labels) * ((j - j.mean(axis=0)) ** 2).sum(axis=0))
    else:
        se = np.full(3, math.nan)
    c, a, b = (float(v) for v in theta)
    return EnergyModel(c, a, b, se=(float(se[0]), float(se[1]), float(se[2])), r2=r2, rows=len(y), groups=len(labels),
                       jackknife=jack)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Attribution:
    attributional_j: np.ndarray  # per request, in the order of the records
    dynamic_j: np.ndarray
    unattributed_idle_j: float  # loaded-idle energy while no request was in service
    unattributed_dynamic_j: float  # dynamic energy in slices with no modelled work
    total_j: float  # what was measured over the slices

    @property
    def unattributed_j(self) -> float:
        return self.unattributed_idle_j + self.unattributed_dynamic_j


def attribute(s: Slices, slice_energy_j: Sequence[float], idle_power_w: float, model: EnergyModel) -> Attribution:
    """Each request's energy in both views (see the module's docstring); conserving exactly."""
    e = np.asarray(slice_energy_j, dtype=float)
    if len(e) != len(s.edges) - 1:
        raise ValueError("one energy per slice")
    dt = np.diff(s.edges)
    dynamic = e - idle_power_w * dt
    decode_all = s.decode.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        step_share = np.where(decode_all > 0, s.decode / decode_all, 0.0)
    work = (model.step_j * s.steps * step_share + model.prefill_j_per_token * s.prefill
            + model.decode_j_per_token * s.decode)  # fmt: skip
    total_work = work.sum(axis=0)
    active = total_work > 0
    dyn = np.zeros_like(work)
    dyn[:, active] = work[:, active] / total_work[active] * dynamic[active]
    service_all = s.service.sum(axis=0)
    idle_j = idle_power_w * s.busy_s
    idle = np.zeros_like(work)
    held = service_all > 0
    idle[:, held] = s.service[:, held] / service_all[held] * idle_j[held]
    per_dyn = dyn.sum(axis=1)
    return Attribution(
        attributional_j=per_dyn + idle.sum(axis=1),
        dynamic_j=per_dyn,
        unattributed_idle_j=float(idle_power_w * dt.sum() - idle.sum()),
        unattributed_dynamic_j=float(dynamic[~active].sum()),
        total_j=float(e.sum()),
    )


def token_terms_j(records: list[dict[str, Any]], every: int, alpha: float, beta: float) -> float:
    """α·input + β·output of the requests left out of run B (every ``every``-th of run A)."""
    return float(sum(alpha * (r.get("usage_input_tokens") or 0) + beta * (r.get("usage_output_tokens") or 0)
                     for r in records if int(r["request_id"]) % every == every - 1))  # fmt: skip
