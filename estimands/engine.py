"""What the engine says about itself during a replay, read from the polls of its metrics (``polls.jsonl``).

vLLM's own counters and gauges, polled beside a replay (``compare.polls.Poller``): its prefill rate over the
replay (Σ prompt tokens ÷ Σ prefill time), its requests in system (running + waiting) over time, and the
clock-event (throttle) reasons the monitor saw in a window. Pure functions over the poll records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def prefill_rate(polls: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The engine's prefill rate over the polls (tokens/s): Σ prompt tokens ÷ Σ prefill time, from the
    change of vLLM's counters between the first and the last poll; None without them."""
    server = [p["server"] for p in polls if "server" in p]
    need = ("prefill_s_sum", "prefill_count", "prompt_tokens")
    server = [s for s in server if all(k in s for k in need)]
    if len(server) < 2:
        return None
    a, b = server[0], server[-1]
    seconds, tokens, count = (b[k] - a[k] for k in ("prefill_s_sum", "prompt_tokens", "prefill_count"))
    if seconds <= 0 or tokens <= 0 or count <= 0:
        return None
    queue = (b.get("queue_s_sum", 0.0) - a.get("queue_s_sum", 0.0)) / count if "queue_s_sum" in b else None
    return {
        "tokens_per_s": tokens / seconds,
        "requests": count,
        "mean_prefill_s": seconds / count,
        "mean_queue_s": queue,
        "method": "the server's own timing: Σ prompt tokens ÷ Σ vllm:request_prefill_time_seconds over the replay",
    }


def server_in_system(polls: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    """(times, running + waiting) from vLLM's gauges."""
    rows = [(p["t"], p["server"]["running"] + p["server"]["waiting"]) for p in polls
            if "running" in p.get("server", {}) and "waiting" in p.get("server", {})]  # fmt: skip
    return [t for t, _ in rows], [n for _, n in rows]


def throttle_reasons(polls: Sequence[Mapping[str, Any]], t0_s: float, t1_s: float) -> list[str]:
    """Every clock-event reason any device reported between t0 and t1."""
    return sorted(throttle_shares(polls, t0_s, t1_s))


def throttle_shares(polls: Sequence[Mapping[str, Any]], t0_s: float, t1_s: float) -> dict[str, float]:
    """Each clock-event reason seen between t0 and t1: the share of the polls (of any device) that had it."""
    inside = [p for p in polls if t0_s <= p["t"] <= t1_s and p.get("devices")]
    counts: dict[str, int] = {}
    for p in inside:
        for reason in {r for d in p["devices"].values() for r in d.get("throttle_reasons") or ()}:
            counts[reason] = counts.get(reason, 0) + 1
    return {r: n / len(inside) for r, n in sorted(counts.items())}
