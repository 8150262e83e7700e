"""The stack's reference, measured against the running server and kept for the live premium.

A saturate run (``--process saturate``) keeps ``--concurrency`` requests in flight, the way ML.ENERGY drives a
server to its saturated throughput; its steady part and the figures over it are defined once, in
``estimands.reference`` (``steady_span``, ``span_figures``). Here the energy of that span is read from the
monitor (``measure``), and a valid reference is kept as the stack's (``save``, ``load``).

Its steady part's energy slices also give its saturated **prices** (``estimands.prices.span_prices``): r, what
a prefill token costs in output tokens, and from it b, the joules of one output token's worth of work
(``estimands.reference.work_price``). The live **premium** is the live energy ÷ what the live tokens cost at
those prices (``estimands.reference.premiums`` for a run, the Energy tab; the recording rule
``joulebench:premium:rate1m`` on the gauges ``joulebench_reference_joules_per_work_unit`` and
``joulebench_reference_price_ratio``, the Grafana panel): how much more online serving costs than the same work
on the same stack saturated, one premium whichever tokens a J/token counts. A reference without prices (a
steady part too short to fit them) gives no premium. Only a valid reference replaces the stored one. It is
kept in the runs folder (``REFERENCE_FILE``: the compose stack's runs volume), so it outlives the process that
measured it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from estimands.prices import span_prices
from estimands.reference import span_figures, steady_span
from loadgen.errors import LoadgenError

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.json"
#: The slices the steady part's energy is read in, for its saturated prices.
SLICE_S = 0.25


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
        "definition": "saturate run, --concurrency in flight; steady part: the start cohort's last end → the last "
                      "send; all energy of the measured devices ÷ the tokens processed in it; valid with the pool's "
                      "mix and steady halves",
        "monitor": getattr(meter, "url", None),
    }  # fmt: skip
    span = steady_span(records, concurrency)
    if span is None:
        why = f"no steady part: it needs more than {concurrency} requests sent, the last after the cohort has ended"
        return out | {"valid": False, "reasons": [why]}
    t0, t1 = span
    tm = (t0 + t1) / 2
    try:
        reading, halves = meter.energy(t0, t1), (meter.energy(t0, tm), meter.energy(tm, t1))
        series = meter.series(t0, t1, SLICE_S)
    except MonitorError as err:
        return out | {"valid": False, "reasons": [f"no energy for the steady part: {err}"], "start_s": t0, "end_s": t1}
    prices = span_prices(records, series.edges, series.energy_j)
    return (
        out
        | span_figures(records, t0, t1, reading, halves, None if prices is None else prices.ratio)
        | {"prices": None if prices is None else prices.record()}
    )


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
