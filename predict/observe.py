"""What measured runs say the engine did, as the profile's fit reads it. Pure functions over a replay's
records (``requests.jsonl`` rows) and its energy slices.

A request's prompt is prefilled in the ``n_in × τ`` seconds before its first token, never before it was
sent (``estimands.tokens``, the convention the comparison's windows count tokens by); its output at each
chunk's arrival. It runs in the engine (vLLM's ``running``) from its admission — the start of the step
that began its prompt, one step before its prefill starts, never before its send — to its last token:
vLLM v1 admits a waiting request as soon as a slot and the step's token budget allow, so at light load
it runs from its send, and in a burst of prompts from when the engine reached it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from estimands.tokens import prefill_interval, request_tokens


@dataclass(frozen=True)
class Run:
    """One measured run for the fit: its records and its energy slices (edges in Unix seconds, joules);
    ``span``: the part the fit reads (a closed loop's steady part: its start cohort's burst of prompts is
    a transient the records cannot place), None for all of it."""

    label: str
    records: Sequence[Mapping[str, Any]]
    edges: np.ndarray
    energy_j: np.ndarray
    span: tuple[float, float] | None = None

    def slices(self) -> tuple[np.ndarray, np.ndarray]:
        """The edges and energies of the slices inside ``span``."""
        e, j = np.asarray(self.edges, dtype=float), np.asarray(self.energy_j, dtype=float)
        if self.span is None:
            return e, j
        inside = (e[:-1] >= self.span[0] - 1e-9) & (e[1:] <= self.span[1] + 1e-9)
        k = np.flatnonzero(inside)
        if not len(k):
            return e[:1], j[:0]
        return e[k[0] : k[-1] + 2], j[k[0] : k[-1] + 1]


def served(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in records if r.get("status") == "ok" and r.get("first_token_s") and r.get("last_token_s")]


def typical_step_s(records: Sequence[Mapping[str, Any]]) -> float:
    """The run's median interval between two chunks per token: a step's typical time."""
    gaps = [(b[0] - a[0]) / max(b[1], 1) for r in served(records) for a, b in zip(r.get("chunks") or [],
            (r.get("chunks") or [])[1:], strict=False)]  # fmt: skip
    return float(np.median(gaps)) if gaps else 0.0


def intervals(records: Sequence[Mapping[str, Any]], tau_s: float | None) -> tuple[np.ndarray, ...]:
    """(admitted, prefill start, first token, last token, prompt tokens) of each served request; the
    prefill starts ``n_in × τ`` before the first token (without τ: at the send), the admission one typical
    step before that."""
    rate = 1.0 / tau_s if tau_s else None
    step = typical_step_s(records)
    rows = []
    for r in served(records):
        lo, first = prefill_interval(r, rate) or (r["first_token_s"], r["first_token_s"])
        n_in = float(r.get("usage_input_tokens") or r["input_tokens"])
        admitted = max(float(r.get("sent_s") or lo), lo - step)
        rows.append((admitted, lo, first, float(r["last_token_s"]), n_in))
    a = np.array(rows, dtype=float).reshape(-1, 5)
    return a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4]


def running_at(start: np.ndarray, end: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Requests in the engine at each time (started by it, not yet ended)."""
    return np.searchsorted(np.sort(start), times, side="right") - np.searchsorted(np.sort(end), times, side="right")


def seconds_at(start: np.ndarray, end: np.ndarray, edges: np.ndarray, max_n: int) -> np.ndarray:
    """slices × (0 … max_n): the seconds each slice spent at each number of running requests (capped)."""
    inside = np.concatenate([start, end])
    points = np.unique(np.concatenate([edges, inside[(inside > edges[0]) & (inside < edges[-1])]]))
    mids = 0.5 * (points[1:] + points[:-1])
    n = np.minimum(running_at(start, end, mids), max_n)
    k = np.searchsorted(edges, mids, side="right") - 1
    out = np.zeros((len(edges) - 1, max_n + 1))
    np.add.at(out, (k, n), np.diff(points))
    return out


def prompt_per_slice(records: Sequence[Mapping[str, Any]], edges: np.ndarray, tau_s: float | None) -> np.ndarray:
    """Prompt tokens prefilled in each slice."""
    rate = 1.0 / tau_s if tau_s else None
    total = np.zeros(len(edges) - 1)
    for r in served(records):
        total += request_tokens(r, edges, rate)[0]
    return total


def prefilled_by(lo: np.ndarray, hi: np.ndarray, n_in: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Prompt tokens prefilled by each time: each request's spread evenly over [lo, hi]."""
    hi = np.maximum(hi, lo + 1e-9)  # a prompt at an instant: over a nanosecond
    slope = n_in / (hi - lo)
    points = np.concatenate([lo, hi])
    change = np.concatenate([slope, -slope])
    order = np.argsort(points, kind="stable")
    points, change = points[order], change[order]
    rate_after = np.cumsum(change)
    at_points = np.concatenate([[0.0], np.cumsum(rate_after[:-1] * np.diff(points))])
    k = np.searchsorted(points, times, side="right") - 1
    before = k < 0
    k = np.clip(k, 0, len(points) - 1)
    out = at_points[k] + rate_after[k] * (times - points[k])
    return np.where(before, 0.0, out)


@dataclass(frozen=True)
class Chunks:
    """Every interval between two chunks of a request: its seconds, the tokens of the later chunk (the
    steps it spans), the running requests at its middle and the prompt tokens prefilled during it."""

    seconds: np.ndarray
    tokens: np.ndarray
    running: np.ndarray
    prompt: np.ndarray
    group: np.ndarray  # the request it belongs to (consecutive intervals are correlated)


def chunk_intervals(
    records: Sequence[Mapping[str, Any]],
    tau_s: float | None,
    max_n: int,
    group0: int = 0,
    span: tuple[float, float] | None = None,
) -> Chunks:
    """The chunk intervals of every served request (inside ``span`` when given)."""
    admitted, lo, first, last, n_in = intervals(records, tau_s)
    a, b, c, g = [], [], [], []
    for i, r in enumerate(served(records)):
        ch = r.get("chunks") or []
        if len(ch) < 2:
            continue
        t = np.array([x[0] for x in ch], dtype=float)
        a.append(t[:-1])
        b.append(t[1:])
        c.append(np.array([x[1] for x in ch[1:]], dtype=float))
        g.append(np.full(len(ch) - 1, group0 + i))
    if not a:
        empty = np.zeros(0)
        return Chunks(empty, empty, empty.astype(int), empty, empty.astype(int))
    t0, t1 = np.concatenate(a), np.concatenate(b)
    c_all, g_all = np.concatenate(c), np.concatenate(g)
    if span is not None:
        keep = (t0 >= span[0]) & (t1 <= span[1])
        t0, t1, c_all, g_all = t0[keep], t1[keep], c_all[keep], g_all[keep]
    prompt = prefilled_by(lo, first, n_in, t1) - prefilled_by(lo, first, n_in, t0)
    n = np.clip(running_at(admitted, last, 0.5 * (t0 + t1)), 1, max_n)
    return Chunks(t1 - t0, c_all, n, prompt, g_all)
