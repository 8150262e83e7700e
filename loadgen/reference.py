"""The stack's reference: a saturate run's steady-state energy per token, measured against the running server.

A closed loop (``--process saturate``) keeps ``--concurrency`` requests in flight, each sent as one ends, the
way ML.ENERGY drives a server to its saturated throughput. Its **steady part** runs from when the start
cohort (the first ``concurrency`` sends) has all had its first token — the synchronised prefill burst of the
start is over, the batch is full and refilled as requests end — to the last send, after which the batch can
no longer be refilled (``steady_span``; the comparison's ``compare.windows.saturated_window`` snaps the same
span to its energy slices). Over it:

- **energy**: the monitor's, all of the measured devices (attributional, as every J/token here);
- **tokens**: those processed inside the span (``loadgen.tokens.tokens_in_window``): output at each chunk,
  prompt tokens spread from the send to the first token — without vLLM's prefill rate, the bound that
  puts them earliest; where they fall at the span's edges (between there and all at the first token) is a
  type B term of the uncertainty;
- **J/token** = energy ÷ (input + output tokens), **J/output token** = energy ÷ output tokens, with the
  standard uncertainty of the monitor's interpolation and of the edges' prompt tokens combined. The
  sensor's own accuracy (NVML ±5 %) is a gain error: it cancels in the premium, so it is not in it.

The live **premium** is the live J/token over this reference (the recording rules
``joulebench:premium_*:rate1m``, the Energy tab): how much more online serving costs per token than the
same stack saturated. A reference is **valid** when its steady part is at least two counter updates long,
every device was read across it, at least ``MIN_COMPLETED`` requests ended in it and none failed; only a
valid one replaces the stored one (``save``). It is kept in the runs folder (``REFERENCE_FILE``: the
compose stack's runs volume), so it outlives the process that measured it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loadgen.errors import LoadgenError
from loadgen.tokens import tokens_in_window

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.json"
#: Requests that must end inside the steady part for a reference to be valid.
MIN_COMPLETED = 20
#: A prefill rate so high that every prompt token falls at its request's first token (the other bound).
AT_FIRST_TOKEN = 1e15


def steady_span(records: Sequence[Mapping[str, Any]], concurrency: int) -> tuple[float, float] | None:
    """The closed loop's steady part, (start, end) Unix seconds: the start cohort's last first token → the
    last send. None when there is none (no more sends than the cohort, or the cohort outlasts the sends)."""
    sent = sorted((r for r in records if r.get("sent_s") is not None), key=lambda r: r["sent_s"])
    if concurrency < 1 or len(sent) <= concurrency:
        return None
    # a cohort request with no first token (it failed) counts from the last time it was seen
    opened = max(r.get("first_token_s") or max(r.get("last_token_s") or 0.0, r["sent_s"]) for r in sent[:concurrency])
    last = sent[-1]["sent_s"]
    return (opened, last) if last > opened else None


def measure(
    records: Sequence[Mapping[str, Any]],
    meter: Any,
    concurrency: int,
    workload: Mapping[str, Any],
    run_id: str = "",
) -> dict[str, Any]:
    """The reference of a saturate run's records, its energy from ``meter`` (a ``monitor.meter`` meter).

    ``workload`` says what was replayed (trace, requests, mix); it is kept beside the figures, since a
    premium against a reference of another mix compares workloads, not serving modes.
    """
    from monitor.errors import MonitorError

    out: dict[str, Any] = {
        "run_id": run_id, "measured_at_s": time.time(), "concurrency": concurrency, "workload": dict(workload),
        "definition": "saturate run, --concurrency in flight; steady part: the start cohort's last first token → "
                      "the last send; all energy of the measured devices ÷ the tokens processed in it",
        "monitor": getattr(meter, "url", None),
    }  # fmt: skip
    span = steady_span(records, concurrency)
    if span is None:
        why = f"no steady part: it needs more than {concurrency} requests sent, the last after the cohort's first token"
        return out | {"valid": False, "reasons": [why]}
    t0, t1 = span
    try:
        reading = meter.energy(t0, t1)
    except MonitorError as err:
        return out | {"valid": False, "reasons": [f"no energy for the steady part: {err}"], "start_s": t0, "end_s": t1}
    n_in, n_out = tokens_in_window(records, t0, t1)
    n_in_late = tokens_in_window(records, t0, t1, AT_FIRST_TOKEN)[0]
    u_in = abs(n_in_late - n_in) / 2
    n_in = (n_in + n_in_late) / 2  # the middle of the two bounds, ± half their distance
    e, u_e = reading.energy_j, reading.uncertainty_j
    ended = [r for r in records if t0 <= (r.get("last_token_s") or -math.inf) < t1]
    failed = [r for r in records if r.get("status") != "ok"]
    reasons = []
    if reading.short_window:
        reasons.append("the steady part is shorter than two updates of the energy counter: send more requests")
    for device, missed in sorted(getattr(reading, "uncovered_s", {}).items()):
        reasons.append(f"energy incomplete: {device} was not read for {missed:.1f} s of it (stale)")
    if len(ended) < MIN_COMPLETED:
        reasons.append(f"too few requests: {len(ended)} ended in the steady part, {MIN_COMPLETED} needed")
    if failed:
        reasons.append(f"{len(failed)} request(s) did not finish ok: a reference needs every one served")

    def per(tokens: float, u_tokens: float) -> tuple[float | None, float | None]:
        if tokens <= 0 or e <= 0:
            return None, None
        return e / tokens, e / tokens * math.hypot(u_e / e, u_tokens / tokens)

    jt, ujt = per(n_in + n_out, u_in)
    jo, ujo = per(n_out, 0.0)
    return out | {
        "valid": not reasons and jt is not None, "reasons": reasons or ([] if jt is not None else ["no tokens"]),
        "start_s": t0, "end_s": t1, "duration_s": t1 - t0, "energy_j": e, "uncertainty_j": u_e,
        "kind": reading.kind, "sources": list(reading.sources), "input_tokens": n_in, "input_tokens_uncertainty": u_in,
        "output_tokens": n_out, "completed": len(ended), "average_power_w": e / (t1 - t0),
        "j_per_token": jt, "uncertainty_j_per_token": ujt, "j_per_output_token": jo,
        "uncertainty_j_per_output_token": ujo,
    }  # fmt: skip


def workload_of(records: Sequence[Mapping[str, Any]], options: Any) -> dict[str, Any]:
    """What a run replayed, as a reference keeps it: the trace, which of its requests, their mean lengths."""
    ok = [r for r in records if r.get("status") == "ok"]

    def mean(key: str) -> float | None:
        values = [r.get(key) or 0 for r in ok]
        return sum(values) / len(values) if values else None

    return {
        "trace": str(getattr(options, "jb_trace", "") or ""), "start_s": getattr(options, "jb_start", 0.0),
        "first": getattr(options, "jb_first", 0), "requests": len(records),
        "input_tokens_mean": mean("usage_input_tokens"), "output_tokens_mean": mean("usage_output_tokens"),
    }  # fmt: skip


def save(folder: Path, reference: Mapping[str, Any]) -> Path | None:
    """Keep a valid reference as the stack's (``folder/REFERENCE_FILE``, replaced atomically); an invalid
    one is not kept there (the run's own directory still has it). The path written, or None."""
    if not reference.get("valid"):
        return None
    path = folder / REFERENCE_FILE
    tmp = path.with_suffix(".tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(dict(reference), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as err:
        raise LoadgenError(f"cannot keep the reference in {path}: {err.strerror or err}") from None
    return path


def load(folder: Path | None) -> dict[str, Any] | None:
    """The stack's stored reference, or None (none yet; a file that is not one is said in the log)."""
    if folder is None:
        return None
    path = folder / REFERENCE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("%s is not a reference (%s): no reference until the next saturate run", path, err)
        return None
    if not isinstance(data, dict) or not data.get("valid") or not data.get("j_per_token"):
        log.warning("%s holds no valid reference: none until the next saturate run", path)
        return None
    return data


def premiums(figures: Mapping[str, Any] | None, reference: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A run's J/token and J/output token over the reference's, with their combined relative uncertainty."""
    if not figures or not reference:
        return None
    out: dict[str, Any] = {"reference_run_id": reference.get("run_id"), "workload": reference.get("workload")}
    for key in ("j_per_token", "j_per_output_token"):
        value, ref = figures.get(key), reference.get(key)
        if not value or not ref:
            out[key] = out[f"uncertainty_{key}"] = None
            continue
        ratio = value / ref
        rel = math.hypot((figures.get(f"uncertainty_{key}") or 0.0) / value,
                         (reference.get(f"uncertainty_{key}") or 0.0) / ref)  # fmt: skip
        out[key], out[f"uncertainty_{key}"] = ratio, ratio * rel
    return out
