"""``joulebench predict``: online J/token, J/output-token, premium and latency at given loads, from a profile."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from estimands.windows import WARMUP_SHARE
from joulebench.commands import Command
from predict.errors import PredictError

DEFAULT_LOADS = "0.1,0.25,0.5,0.75"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from loadgen.arrivals import CLOSED_LOOP, PROCESSES

    parser.add_argument("--profile", required=True, type=Path, help="profile.json, or a run directory holding one")
    parser.add_argument("--trace", required=True, help="azure-conv, azure-code, or a CSV/JSONL trace path")
    parser.add_argument("--trace-dir", type=Path, default=None, help="where the named traces are (else cached)")
    parser.add_argument("--start", type=float, default=0.0, help="seconds into the trace to start (default: 0)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per replay (default: %(default)s)")
    axis = parser.add_mutually_exclusive_group()
    axis.add_argument("--loads", default=None, help=f"arrival rate ÷ capacity, comma list (default: {DEFAULT_LOADS})")
    axis.add_argument("--rates", default=None, help="multiples of the trace's own rate, comma list")
    parser.add_argument("--process", default="poisson", choices=[p for p in PROCESSES if p != CLOSED_LOOP],
                        help="arrival process (default: %(default)s)")  # fmt: skip
    parser.add_argument("--cv", type=float, default=1.0, help="gamma's coefficient of variation (default: 1)")
    parser.add_argument("--replicates", type=int, default=20, help="profile draws × seeds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for predict.json and predict.png "
                        "(default: the profile's folder)")  # fmt: skip


def _numbers(text: str, option: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PredictError(f"{option} {text!r}: give numbers separated by commas, e.g. {DEFAULT_LOADS}") from None
    if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise PredictError(f"{option} {text!r}: every value must be a positive number")
    return values


def validate(args: argparse.Namespace) -> None:
    if args.loads is not None or args.rates is None:
        loads = _numbers(args.loads or DEFAULT_LOADS, "--loads")
        if any(v >= 1 for v in loads):
            raise PredictError(f"--loads {args.loads}: a load of 1 or more saturates the server (no steady online "
                               "state to predict): give loads below 1")  # fmt: skip
    else:
        _numbers(args.rates, "--rates")
    if args.requests < 20:
        raise PredictError(f"--requests {args.requests}: a replay needs at least 20 requests")
    if args.replicates < 1:
        raise PredictError(f"--replicates {args.replicates}: at least one")
    if not args.cv > 0:
        raise PredictError(f"--cv {args.cv}: must be positive")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from loadgen.arrivals import workload
    from loadgen.traces import resolve_trace
    from predict.forecast import Plan, predict, saturated
    from predict.profile import PROFILE_FILE, load

    profile = load(args.profile)
    trace = resolve_trace(args.trace, args.trace_dir)
    population = trace.window(args.start, math.inf).first(args.requests)
    if len(population.requests) < 20:
        raise PredictError(f"{args.trace} from {args.start:g} s holds {len(population.requests)} requests: "
                           "at least 20 needed (an earlier --start)")  # fmt: skip
    lengths = [(r.input_tokens, r.output_tokens) for r in population.requests]
    scaled = args.process in ("trace", "trace-resample")  # their rate argument is a multiple of the trace's
    if args.rates is not None:
        rates = [m * population.rate_per_s for m in _numbers(args.rates, "--rates")]
    else:
        capacity = saturated(profile, lengths).completed_per_s
        rates = [v * capacity for v in _numbers(args.loads or DEFAULT_LOADS, "--loads")]
    if scaled and population.rate_per_s <= 0:
        raise PredictError(f"{args.trace}: its requests have no spread in time to scale (--process poisson)")

    def arrivals(rate: float, seed: int) -> list[float]:
        given = rate / population.rate_per_s if scaled else rate
        return list(workload(args.process, population, given, seed=seed, cv=args.cv).times_s)

    plan = Plan(lengths, rates, arrivals, args.replicates, args.seed)
    rows = predict(profile, plan)
    out = args.out or (args.profile if args.profile.is_dir() else args.profile.parent)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "profile": str(args.profile / PROFILE_FILE if args.profile.is_dir() else args.profile),
        "profile_source": profile.source, "trace": args.trace, "start_s": args.start,
        "requests": len(lengths), "process": args.process, "cv": args.cv, "replicates": args.replicates,
        "seed": args.seed, "definitions": DEFINITIONS, "rows": rows,
    }  # fmt: skip
    (out / "predict.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    plot = _plot(rows, out / "predict.png")
    Console().print(_table(rows, args))
    print(f"wrote {out / 'predict.json'} and {plot}")
    return 0


DEFINITIONS = {
    "j_per_output_token": f"steady-state energy ÷ output tokens (the simulation from its first {WARMUP_SHARE:.0%} of "
    "arrivals to its last arrival, as the comparison's windows), all of the profile's power",
    "premium": "that ÷ the same profile's saturated closed loop at max_num_seqs over the same requests' lengths",
    "load": "arrival rate ÷ capacity (the saturated closed loop's completion rate, point profile)",
    "little": "baseline: P(λ × mean time in system) ÷ (λ × mean output tokens), on the same profile",
    "intervals": "median and 2.5–97.5 % over replicates, each a draw of the profile and a seed of the arrivals",
}


def _ci(b: dict[str, float], digits: int = 3, scale: float = 1.0) -> str:
    return f"{b['median'] * scale:.{digits}g} [{b['low'] * scale:.{digits}g}, {b['high'] * scale:.{digits}g}]"


def _table(rows: list[dict[str, Any]], args: argparse.Namespace) -> Any:
    from rich.table import Table

    t = Table(title=f"Predicted online energy, {args.trace} ({args.process}), profile {args.profile}")
    for col in ("load", "rate/s", "J/token", "J/output-token", "premium", "TTFT p50 ms", "TPOT p50 ms",
                "Little J/out-token", "Little premium"):  # fmt: skip
        t.add_column(col)
    for r in rows:
        t.add_row(f"{r['load']:.3g}", f"{r['rate_per_s']:.3g}", _ci(r["j_per_token"]), _ci(r["j_per_output_token"]),
                  _ci(r["premium"]), _ci(r["ttft_p50_s"], scale=1e3), _ci(r["tpot_p50_s"], scale=1e3),
                  _ci(r["little_j_per_output_token"]), _ci(r["little_premium"]))  # fmt: skip
    return t


def _plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["load"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, style in (("j_per_output_token", "predicted (simulation)", "o-"),
                              ("little_j_per_output_token", "Little's law on P(n)", "s--")):  # fmt: skip
        med = [r[key]["median"] for r in rows]
        err = [[m - r[key]["low"] for m, r in zip(med, rows, strict=True)],
               [r[key]["high"] - m for m, r in zip(med, rows, strict=True)]]  # fmt: skip
        ax.errorbar(x, med, yerr=err, fmt=style, capsize=3, label=label)
    ref = rows[0]["reference_j_per_output_token"]["median"]
    ax.axhline(ref, color="grey", lw=1, label="saturated reference")
    ax.set_xlabel("load (arrival rate ÷ capacity)")
    ax.set_ylabel("J per output token")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


COMMANDS = [
    Command("predict", "predict online J/token and the premium at given loads from a profile",
            "Simulate continuous batching on a profile (profile.json) under arrivals at each load; "
            "print J/token, J/output-token, premium and latency with 95 % intervals beside the Little's-law "
            "baseline, and write predict.json and predict.png.", add_arguments, run, validate),
]  # fmt: skip
