"""When the engine worked on which tokens, from a replay's records. Pure functions.

A request's prompt is prefilled in the ``n_in / rate`` seconds before its first token (never before it was
sent; without the engine's prefill rate, from its send), its output decoded at the times its chunks
arrived. The comparison's steady-state windows, its attribution and the stack's reference
(``estimands.reference``) all count the tokens of a span this one way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def prefill_interval(record: Mapping[str, Any], prefill_tokens_per_s: float | None) -> tuple[float, float] | None:
    """When the engine worked on the request's prompt: ``[max(sent, first − n_in / rate), first]``, or
    ``[sent, first]`` without a rate; None for a request with no first token."""
    sent, first = record.get("sent_s"), record.get("first_token_s")
    n_in = record.get("usage_input_tokens") or record.get("input_tokens") or 0
    if sent is None or first is None or not n_in:
        return None
    lo = sent if not prefill_tokens_per_s else max(sent, first - n_in / prefill_tokens_per_s)
    return min(lo, first), first  # of no length where the rate is too fast to resolve: all at the first token


def overlap(edges: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Seconds of [lo, hi] in each slice between consecutive ``edges``."""
    return np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)


def request_tokens(record: Mapping[str, Any], edges: np.ndarray, rate: float | None) -> tuple[np.ndarray, np.ndarray]:
    """A request's prefill and decode tokens in each slice."""
    prefill = np.zeros(len(edges) - 1)
    decode = np.zeros(len(edges) - 1)
    interval = prefill_interval(record, rate)
    if interval is not None:
        lo, hi = interval
        n_in = record.get("usage_input_tokens") or record.get("input_tokens") or 0
        if hi > lo:
            prefill += n_in * overlap(edges, lo, hi) / (hi - lo)
        elif 0 <= (k := int(np.searchsorted(edges, hi, side="right")) - 1) < len(prefill):
            prefill[k] += n_in  # at its first token, in the slice that holds it
    chunks = record.get("chunks") or ()
    if chunks:
        times = np.array([t for t, _ in chunks], dtype=float)
        counts = np.array([n for _, n in chunks], dtype=float)
        k = np.searchsorted(edges, times, side="right") - 1
        inside = (k >= 0) & (k < len(decode))
        np.add.at(decode, k[inside], counts[inside])
    return prefill, decode


def tokens_in_window(
    records: Sequence[Mapping[str, Any]], t0_s: float, t1_s: float, prefill_tokens_per_s: float | None = None
) -> tuple[float, float]:
    """Input and output tokens processed inside [t0, t1]: prefill spread over ``prefill_interval``, decode
    at each chunk's arrival. The steady-state window's J/token divides its energy by these."""
    edges = np.array([t0_s, t1_s])
    n_in = n_out = 0.0
    for r in records:
        p, d = request_tokens(r, edges, prefill_tokens_per_s)
        n_in += float(p[0])
        n_out += float(d[0])
    return n_in, n_out


def end_of(record: Mapping[str, Any]) -> float:
    """When a request left the system: its last token, else the last time it was seen."""
    times = [record.get(k) for k in ("last_token_s", "first_token_s", "sent_s", "scheduled_s")]
    return float(max(t for t in times if t is not None))
