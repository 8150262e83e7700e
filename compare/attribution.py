"""Energy attributed to requests. Pure functions over records and energy slices.

Attribution: the run's time is cut into slices (edges t₀ < … < t_K) with the energy each slice cost
(from the monitor's window energy). Within a slice, the requests active in it share the slice's energy
in proportion to the tokens each processed there, prefill and decode weighted:

    w(r, k) = α · prefill_tokens(r, k) + β · decode_tokens(r, k)

A request's prefill (its input tokens) is spread evenly over the time the engine spent on it: the
``n_in / rate`` seconds before its first token (``prefill_interval``: never before it was sent), with
the engine's prefill rate measured by the server itself (vLLM's ``request_prefill_time_seconds``
histogram over the replay) or calibrated offline; without a rate, from send to first token (which
charges a queued request with work the engine has not done yet). Its decode tokens fall at the times
its chunks arrived. α and β come from offline runs (``fit_weights``):
the least-squares fit of dynamic energy = α · input tokens + β · output tokens.

Two views, both conserving energy exactly: *attributional* shares all of a slice's energy; *dynamic*
shares only what exceeds loaded-idle power × slice length. Energy in slices where no request worked,
and the idle part in the dynamic view, stays unattributed ("idle"): requests + idle = measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Weights:
    prefill_j_per_token: float  # α
    decode_j_per_token: float  # β
    fit: str  # how they were obtained, for the report


def fit_weights(runs: Sequence[tuple[int, int, float]]) -> Weights:
    """α, β from offline runs (input tokens, output tokens, dynamic energy J): least squares, no intercept."""
    if len(runs) < 2:
        raise ValueError("fitting prefill and decode weights needs at least two offline runs")
    a = np.array([[i, o] for i, o, _ in runs], dtype=float)
    e = np.array([x for _, _, x in runs], dtype=float)
    (alpha, beta), *_ = np.linalg.lstsq(a, e, rcond=None)
    pred = a @ np.array([alpha, beta])
    r2 = 1 - float(np.sum((e - pred) ** 2) / np.sum((e - e.mean()) ** 2)) if len(runs) > 2 else math.nan
    if alpha < 0 or beta <= 0:
        raise ValueError(f"the fit gives non-physical weights (α={alpha:.3g}, β={beta:.3g}): vary the runs' lengths")
    return Weights(
        float(alpha), float(beta), f"E_dyn = {alpha:.4g}·input + {beta:.4g}·output J (n={len(runs)}, R²={r2:.3f})"
    )


def prefill_interval(record: Mapping[str, Any], prefill_tokens_per_s: float | None) -> tuple[float, float] | None:
    """When the engine worked on the request's prompt: ``[max(sent, first − n_in / rate), first]``, or
    ``[sent, first]`` without a rate; None for a request with no first token."""
    sent, first = record.get("sent_s"), record.get("first_token_s")
    n_in = record.get("usage_input_tokens") or record.get("input_tokens") or 0
    if sent is None or first is None or not n_in:
        return None
    lo = sent if not prefill_tokens_per_s else max(sent, first - n_in / prefill_tokens_per_s)
    return lo, max(first, lo + 1e-9)


def _work(record: Mapping[str, Any], edges: np.ndarray, w: Weights, prefill_tokens_per_s: float | None) -> np.ndarray:
    """The request's weighted token work in each slice: α × its prefill tokens there + β × its decode tokens."""
    work = np.zeros(len(edges) - 1)
    n_in = record.get("usage_input_tokens") or record.get("input_tokens") or 0
    interval = prefill_interval(record, prefill_tokens_per_s)
    if interval is not None:
        lo, hi = interval
        overlap = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)
        work += w.prefill_j_per_token * n_in * overlap / (hi - lo)
    for t, n in record.get("chunks") or ():
        k = int(np.searchsorted(edges, t, side="right")) - 1
        if 0 <= k < len(work):
            work[k] += w.decode_j_per_token * n
    return work


def token_work(
    records: Sequence[Mapping[str, Any]],
    edges: Sequence[float],
    weights: Weights,
    prefill_tokens_per_s: float | None = None,
) -> np.ndarray:
    """Each request's weighted token work in each slice (requests × slices)."""
    t = np.asarray(edges, dtype=float)
    if not records:
        return np.zeros((0, len(t) - 1))
    return np.array([_work(r, t, weights, prefill_tokens_per_s) for r in records])


#: Weights that count tokens: prefill tokens alone, decode tokens alone.
PREFILL_TOKENS = Weights(1.0, 0.0, "prefill tokens")
DECODE_TOKENS = Weights(0.0, 1.0, "decode tokens")


def tokens_in_window(
    records: Sequence[Mapping[str, Any]], t0_s: float, t1_s: float, prefill_tokens_per_s: float | None = None
) -> tuple[float, float]:
    """Input and output tokens processed inside [t0, t1]: prefill spread over ``prefill_interval``, decode
    at each chunk's arrival. The steady-state window's J/token divides its energy by these."""
    edges = [t0_s, t1_s]
    prefill = token_work(records, edges, PREFILL_TOKENS, prefill_tokens_per_s).sum()
    return float(prefill), float(token_work(records, edges, DECODE_TOKENS).sum())


@dataclass(frozen=True, slots=True)
class Attribution:
    per_request_j: np.ndarray  # in the order of the records given
    idle_j: float  # not attributed: slices with no work, and (dynamic) the loaded-idle part
    total_j: float  # what was measured over the slices


def attribute(
    records: Sequence[Mapping[str, Any]],
    edges: Sequence[float],
    slice_energy_j: Sequence[float],
    weights: Weights,
    idle_power_w: float = 0.0,
    prefill_tokens_per_s: float | None = None,
) -> Attribution:
    """Share each slice's energy (less ``idle_power_w`` × its length: the dynamic view) among requests."""
    t = np.asarray(edges, dtype=float)
    e = np.asarray(slice_energy_j, dtype=float)
    if len(t) != len(e) + 1 or np.any(np.diff(t) <= 0):
        raise ValueError("edges must be increasing and one more than the slices")
    idle = np.minimum(idle_power_w * np.diff(t), e)
    shareable = e - idle
    work = token_work(records, t, weights, prefill_tokens_per_s)
    total_work = work.sum(axis=0)
    active = total_work > 0
    share = np.zeros_like(work)
    share[:, active] = work[:, active] / total_work[active] * shareable[active]
    per_request = share.sum(axis=1)
    unattributed = float(idle.sum() + shareable[~active].sum())
    return Attribution(per_request_j=per_request, idle_j=unattributed, total_j=float(e.sum()))
