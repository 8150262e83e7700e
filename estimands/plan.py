"""How long a comparison took, phase by phase, and the plan that would give its premium a ±target interval.

**Timeline** (``timeline``): every span the run measured, in the order it ran: the device's idle (no vLLM),
vLLM's start (the device idle's end → the loaded idle's start: the engine's load, compile and graph capture),
the loaded idle, each saturated reference, each of the profile's closed loops and each load's replay of each
segment (their spans in ``energy.csv``: first send → last token). A phase's wall time runs from the end of
the one before it to its own end, so the replay's start-up and the drain waits are counted where they were
spent. The offline phase and the counterfactual keep no energy series: where they ran, they are not in it.

**Plan** (``segments_needed``, ``plan``): a load's premium is averaged over n segments; its interval is
±k·u_c on the log scale (``estimands.uncertainty.budget``), with u_c² = s²/n + Σ u_B², s the standard deviation of
ln(premium) over the run's valid segments and k Student's t at the Welch–Satterthwaite degrees of freedom.
The least n whose interval is within ±target (its upper side, exp(k·u_c) − 1, the wider) is the count of
segments with a premium this run's own spread asks for, and the segments to run are as many more as the run lost
to windows or references that were not valid (n × segments replayed ÷ segments with a premium). It is a point
estimate: s from a few segments is itself uncertain (from two, the 95 % range of σ runs from 0.45·s to 32·s),
so a plan meets the target about half the time when s is σ's own size; the type B terms are held at the run's
values (those independent across segments would shrink with n). With a premium in fewer than two segments
there is no spread and no plan. The plan's wall time is the run's fixed phases (idle, vLLM's start, the profile)
and n times its mean seconds a segment (its reference and one replay at each rung): the offline phase, where it
ran, is not in it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from estimands.uncertainty import coverage_factor

#: The interval a citable premium is planned for: ±10 % at 95 %.
TARGET = 0.10
#: The most segments a plan proposes.
MAX_SEGMENTS = 40


def timeline(
    spans: Mapping[tuple[float, int], tuple[float, float]],
    idle: Mapping[str, Any] | None,
    reference_rate: float,
    profile_segment: int,
    labels: Mapping[float, str],
) -> list[dict[str, Any]]:
    """The run's phases in the order they ran: name, kind, group (the references, the profile's loops, each
    rung's replays: what a segment repeats), segment, start, end and wall seconds (from the end of the phase
    before). ``spans``: (rate, segment) → (first send, last token), ``energy.csv``'s keys; ``labels``: each
    rung's name ("load 0.25")."""
    phases: list[tuple[float, float, str, str, str, int | None]] = []
    device, loaded = (idle or {}).get("device") or {}, (idle or {}).get("loaded") or {}
    if device.get("start_s") is not None:
        name = "device idle (no vLLM)"
        phases.append((device["start_s"], device["end_s"], "idle", name, name, None))
    if loaded.get("start_s") is not None:
        if device.get("end_s") is not None:
            phases.append((device["end_s"], loaded["start_s"], "start", "vLLM's start", "vLLM's start", None))
        name = "loaded idle (vLLM up, serving nothing)"
        phases.append((loaded["start_s"], loaded["end_s"], "idle", name, name, None))
    for (rate, segment), (a, b) in spans.items():
        if rate == reference_rate:
            group = "saturated references"
            phases.append((a, b, "reference", f"saturated reference, segment {segment + 1}", group, segment))
        elif segment == profile_segment:
            group = "the profile's closed loops"
            phases.append((a, b, "profile", f"profile, {rate:g} in flight", group, None))
        else:
            group = labels.get(rate, f"rate {rate:g}")
            phases.append((a, b, "load", f"{group}, segment {segment + 1}", group, segment))
    phases.sort(key=lambda p: (p[0], p[1]))
    out, before = [], None
    for a, b, kind, name, group, segment in phases:
        # from the end of the phase before (its start-up and waits are this phase's), never less than its span
        wall = b - (a if before is None else min(a, before))
        out.append({"name": name, "kind": kind, "group": group, "segment": segment, "start_s": a, "end_s": b,
                    "wall_s": wall})  # fmt: skip
        before = b
    return out


def segments_needed(s_log: float, type_b: float, target: float = TARGET) -> int | None:
    """The least n ≥ 2 whose 95 % interval (s_log/√n and ``type_b`` combined, Welch–Satterthwaite k) is
    within ±``target``; None where even ``MAX_SEGMENTS`` are not enough (the type B terms alone too wide)."""
    for n in range(2, MAX_SEGMENTS + 1):
        ua = s_log / math.sqrt(n)
        uc = math.sqrt(ua**2 + type_b**2)
        if math.exp(coverage_factor(ua, uc, n) * uc) - 1 <= target:
            return n
    return None


def plan(
    loads: Sequence[Mapping[str, Any]],
    phases: Sequence[Mapping[str, Any]],
    target: float = TARGET,
) -> dict[str, Any]:
    """The segment count each load's spread asks for (``segments_needed``, from its premium's budget: the run's
    per-load ``premium`` entries with ``n``, ``terms``) and the wall time of the plan that gives every load its
    count, at this run's pace (``phases``: ``timeline``)."""
    per_load = []
    for entry in loads:
        b = entry.get("premium") or {}
        terms = b.get("terms") or {}
        n, measured = int(b.get("n") or 0), len(entry.get("segments") or [])
        row: dict[str, Any] = {"rung": entry.get("label"), "segments": n, "measured": measured, "sd_log": None,
                               "type_b": None, "needed": None, "to_run": None, "reason": None}  # fmt: skip
        if n < 2 or "type_a" not in terms:
            row["reason"] = "a premium in fewer than two segments: no spread to plan from"
        else:
            row["sd_log"] = terms["type_a"] * math.sqrt(n)
            row["type_b"] = math.sqrt(sum(v * v for k, v in terms.items() if k != "type_a"))
            row["needed"] = segments_needed(row["sd_log"], row["type_b"], target)
            if row["needed"] is None:
                row["reason"] = f"its type B terms alone leave no ±{100 * target:.0f} % interval"
            else:  # as many more as this run lost to windows or references that were not valid
                row["to_run"] = math.ceil(row["needed"] * max(measured, n) / n)
        per_load.append(row)
    fixed = sum(p["wall_s"] for p in phases if p["kind"] in ("idle", "start", "profile"))
    # a segment's share: its reference and one replay at each rung, each the mean over the segments measured
    groups: dict[str, list[float]] = {}
    for p in phases:
        if p["kind"] in ("reference", "load"):
            groups.setdefault(p["group"], []).append(p["wall_s"])
    per_segment = sum(sum(v) / len(v) for v in groups.values()) if groups else None
    needed = [r["to_run"] for r in per_load if r["to_run"] is not None]
    n = max(needed) if needed and len(needed) == len(per_load) else None
    return {
        "target": target,
        "loads": per_load,
        "fixed_s": fixed,
        "per_segment_s": per_segment,
        "segments": n,
        "wall_s": fixed + n * per_segment if n is not None and per_segment is not None else None,
        "measured_wall_s": sum(p["wall_s"] for p in phases),
    }
