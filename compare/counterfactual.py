"""A counterfactual check of the attribution: what the requests it charges really cost.

The same schedule is replayed with every request (A) and with every K-th left out, the others at the
same times (B), in the order ``ABBA`` (a drift in the server's power cancels). Each replay's energy is
read over the same span from its schedule's start, long enough for every run to drain, so loaded-idle
power cancels in the difference: ΔE = E(A) − E(B) is what the left-out requests cost. The attribution
(``estimands.attribution``, its model fitted on all the runs' slices) of run A charges them some dynamic
energy; the check is the ratio attributed ÷ ΔE, with the monitor's and the repeats' uncertainty. Beside
it, the model's token terms alone (α·input + β·output of the left-out requests): what a request costs at
the margin when the engine's steps go on without it, which an average-cost attribution does not claim
to be.
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path
from typing import Any

import numpy as np

from compare.polls import Poller
from compare.replays import run_replay
from compare.rundir import read_polls, write_json
from estimands.attribution import attribute, fit_model, slices, token_terms_j
from estimands.engine import prefill_rate
from estimands.tokens import end_of
from loadgen.options import build_schedule


def counterfactual(
    args: argparse.Namespace,
    opts: argparse.Namespace,
    target: str,
    meter: Any,
    out: Path,
    every: int,
    loaded_idle_w: float,
    console: Any,
    order: str = "ABBA",
    slice_s: float = 0.25,
) -> dict[str, Any]:
    """Replay ``opts`` as A (all) and B (every ``every``-th left out) in ``order``; the result in ``out``.
    ``args`` carries the replay's ``request_timeout_s`` and ``drain_s`` (``run_replay``)."""
    runs = []
    for j, kind in enumerate(order):
        o = copy.copy(opts)
        o.jb_leave_out = every if kind == "B" else 0
        _, schedule = build_schedule(o)
        where = out / f"{j}-{kind}"
        with Poller(target, getattr(meter, "url", None), where / "polls.jsonl"):
            summary, records, _ = run_replay(
                args, o, target, where, 7000 + j, len(schedule), f"counterfactual {j + 1}/{len(order)} ({kind})",
                console, schedule_s=float(schedule.times_s[-1]),
            )  # fmt: skip
        runs.append({"kind": kind, "start_s": summary["schedule_start_s"], "records": records, "dir": where})
    span = max(max(end_of(r) for r in run["records"]) - run["start_s"] for run in runs) + 2 * slice_s
    for run in runs:
        a = run["start_s"]
        run["reading"] = meter.energy(a, a + span)
        series = meter.series(a, a + span, slice_s)
        write_json(run["dir"] / "energy.json", {"edges": series.edges, "energy_j": series.energy_j,
                                                "uncertainty_j": series.uncertainty_j,
                                                "span_energy_j": run["reading"].energy_j,
                                                "span_uncertainty_j": run["reading"].uncertainty_j})  # fmt: skip
        rate = prefill_rate(read_polls(run["dir"] / "polls.jsonl"))
        run["slices"] = slices(run["records"], series.edges, rate["tokens_per_s"] if rate else None)
        run["energy_j"] = series.energy_j
    x = np.vstack([r["slices"].features() for r in runs])
    y = np.concatenate([r["energy_j"] - loaded_idle_w * np.diff(r["slices"].edges) for r in runs])
    groups = [g for g, r in enumerate(runs) for _ in r["energy_j"]]
    model = fit_model(x, y, groups)
    charged_dyn, charged_attr = [], []
    for run in (r for r in runs if r["kind"] == "A"):
        a = attribute(run["slices"], run["energy_j"], loaded_idle_w, model)
        left = np.array([int(r["request_id"]) % every == every - 1 for r in run["records"]])
        charged_dyn.append(float(a.dynamic_j[left].sum()))
        charged_attr.append(float(a.attributional_j[left].sum()))
    e = {kind: [r["reading"].energy_j for r in runs if r["kind"] == kind] for kind in "AB"}
    u = {kind: [r["reading"].uncertainty_j for r in runs if r["kind"] == kind] for kind in "AB"}
    delta = float(np.mean(e["A"]) - np.mean(e["B"]))
    # the monitor's uncertainty of the two means, and (with repeats) their spread
    u_monitor = math.hypot(*(math.sqrt(sum(v * v for v in u[k])) / len(u[k]) for k in "AB"))
    u_repeat = math.hypot(*(float(np.std(e[k], ddof=1)) / math.sqrt(len(e[k])) if len(e[k]) > 1 else 0.0
                            for k in "AB"))  # fmt: skip
    attributed = float(np.mean(charged_dyn))
    first_a = next(r for r in runs if r["kind"] == "A")
    token_terms = token_terms_j(first_a["records"], every, model.prefill_j_per_token, model.decode_j_per_token)
    result = {
        "order": order, "leave_out_every": every, "span_s": span, "requests_a": len(runs[0]["records"]),
        "left_out": int(sum(1 for r in runs[0]["records"] if int(r["request_id"]) % every == every - 1)),
        "energy_a_j": e["A"], "energy_b_j": e["B"], "delta_j": delta,
        "delta_uncertainty_j": math.hypot(u_monitor, u_repeat),
        "attributed_dynamic_j": attributed, "attributed_attributional_j": float(np.mean(charged_attr)),
        "ratio": attributed / delta if delta > 0 else None, "model": model.record(),
        "token_terms_j": token_terms, "token_terms_ratio": token_terms / delta if delta > 0 else None,
        "definition": "attributed dynamic energy of the left-out requests in run A ÷ (E(A) − E(B)) over the same span",
    }  # fmt: skip
    write_json(out / "counterfactual.json", result)
    return result
