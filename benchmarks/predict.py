"""Does the prediction match measured online energy? Every committed comparison run with raw data.

Runs with a profile of their own (``PROFILED``: ``joulebench compare --profile on``, closed loops at 1, 2,
4 … in flight measured before the ladder) are predicted as their report predicts them
(``compare.prediction``, kept in their summary.json): the profile fitted from those loops and the saturated
references, no online window in it; the interval is over profile draws alone.

Runs without one (``RUNS``) get a profile fitted honestly without the data being predicted: for each load
(rate), ``predict.profile.fit`` reads every *other* load's replays (all their segments, all of each replay)
and the saturated reference replays (their steady part), never the held-out load. The held-out replays are
then simulated (``predict.simulate``) with their own requests at their own scheduled times and read over the
measured window's span, so prediction and measurement estimate the same thing: the window's energy ÷ the
output tokens processed in it. Premium: predicted J/output-token ÷ the same profile's saturated closed loop
over the segment's reference pool, both per unit of work at the run's saturated prices; measured:
``summary.json``'s (online ÷ the run's reference, offline where that was valid).

Baseline (Little's law, as the issue's check): the held-out window's measured arrival rate × the mean
time in system of the requests arriving in it, placed on the same held-out profile's P(n), ÷ the window's
measured output tokens/s.

Per load: measured (mean over valid segments, with ``summary.json``'s 95 % interval), predicted (mean over
the same segments; median and 95 % interval over profile draws), the errors, whether each falls inside the
measured interval. Prints a table and writes JSON (``--out``).

    PYTHONPATH=. python benchmarks/predict.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's folder comes first on the path, and its name would hide the package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import numpy as np
from rich.console import Console
from rich.table import Table

from compare.prediction import TOKEN_BUDGET, jobs_of, little, per_work, per_work_of
from compare.rundir import read_energy_series, reference_dir, replay_dir
from estimands.reference import steady_span
from loadgen.records import read_records
from predict.forecast import interval, replay, saturated
from predict.observe import Run
from predict.profile import fit

ROOT = Path(__file__).resolve().parent.parent
#: Runs without a profile of their own: each load predicted from the run's other loads (held out in turn).
RUNS = ("results/h200-llama3.1-8b", "results/h100-conversation", "results/cpu-make-compare/quiet",
        "results/cpu-make-compare/burner")  # fmt: skip
#: Runs with a profile of their own (``--profile``: closed loops before the ladder): every load predicted from
#: it, as their report does (``compare.prediction``, kept in their summary.json), no online window in the fit.
PROFILED = ("results/h100-conversation-profile", "results/h100-code", "results/cpu-default")


def gmean(values: list[float]) -> float:
    """The geometric mean, as the measured figures average segments."""
    return float(np.exp(np.mean(np.log(values))))


def study(run_dir: Path, replicates: int, seed: int) -> dict[str, Any]:
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    series = {key: v[:2] for key, v in read_energy_series(run_dir / "energy.csv").items()}
    max_seqs = int(config["options"]["max_num_seqs"])
    ratio = ((summary.get("prices") or {}).get("attributional") or {}).get("prefill_per_decode_token")
    kind = "cpu" if summary.get("estimated") else "gpu"
    idle = summary["idle"]["loaded"]
    segments = [s["segment"] for s in config["workload"]]
    refs: list[Run] = []
    ref_lengths: dict[int, list[tuple[int, int]]] = {}
    for k in segments:
        d = reference_dir(run_dir, k)
        if (-1.0, k) not in series or not (d / "window.json").exists():
            continue
        records = read_records(d / "requests.jsonl")
        concurrency = json.loads((d / "window.json").read_text())["concurrency"]
        refs.append(Run(f"reference-{k}", records, *series[(-1.0, k)], steady_span(records, concurrency)))
        ref_lengths[k] = [(int(r.get("usage_input_tokens") or r["input_tokens"]),
                           int(r.get("usage_output_tokens") or r["output_tokens"])) for r in
                          sorted(records, key=lambda r: r.get("sent_s") or 0.0)]  # fmt: skip
    replays = {}
    for rate in summary["rates"]:
        for seg in rate["segments"]:
            d = replay_dir(run_dir, rate["rate"], seg["segment"], "load" if config["options"].get("loads") else "rate")
            key = (float(rate["rate"]), int(seg["segment"]))
            if key in series and seg.get("window"):
                replays[key] = (read_records(d / "requests.jsonl"), seg)
    # the measured capacity: the saturated reference's completions per second in its steady part
    capacity = float(np.mean([r["completed"] / r["duration_s"] for r in summary["reference"]["online_segments"]
                              if r.get("completed")] or [math.nan]))  # fmt: skip
    measured_ref = summary["reference"].get("j_per_output_token", {}).get("mean")
    loads = []
    for rate in summary["rates"]:
        m = float(rate["rate"])
        t_fit = time.perf_counter()
        others = [Run(f"{mm}x-{k}", rec, *series[(mm, k)]) for (mm, k), (rec, _) in replays.items() if mm != m]
        profile = fit(others + refs, idle["power_w"], idle.get("spread_w", 0.0), max_seqs, TOKEN_BUDGET[kind],
                      f"{run_dir.name}: every load but {rate['label']} and the saturated references")  # fmt: skip
        t_fit = time.perf_counter() - t_fit
        valid = set(rate["valid_segments"])
        measured_segs = [s for s in rate["segments"] if (m, s["segment"]) in replays]
        use = [s for s in measured_segs if s["segment"] in valid] or measured_segs
        rng = np.random.default_rng(seed)
        draws = [profile] + [profile.draw(rng) for _ in range(replicates)]
        refs_predicted: list[float] = []
        per_draw = []  # (mean predicted J/out, mean predicted premium) over the used segments, per draw
        point: dict[int, dict[str, float]] = {}
        for i, p in enumerate(draws):
            outs, prems = [], []
            for s in use:
                k = s["segment"]
                records, seg = replays[(m, k)]
                jobs, t0 = jobs_of(records)
                w = seg["window"]
                o = replay(p, jobs, (w["start_s"] - t0, w["end_s"] - t0))
                ref = saturated(p, ref_lengths.get(k) or [(j.input_tokens, j.output_tokens) for j in jobs])
                refs_predicted.append(ref.figures.j_per_output_token)
                outs.append(o.j_per_output_token)
                prems.append(per_work(o.j_per_output_token, o.j_per_token, ratio) / per_work_of(ref.figures, ratio))
                if i == 0:
                    point[k] = {"j_per_output_token": o.j_per_output_token, "premium": prems[-1],
                                "little": little(records, seg, p), "measured": seg.get("j_per_output_token"),
                                "measured_premium": seg.get("premium"),
                                "running_mean_predicted": o.running_mean}  # fmt: skip
            per_draw.append((gmean(outs), gmean(prems)))
        pred = gmean([point[s["segment"]]["j_per_output_token"] for s in use])
        pred_prem = gmean([point[s["segment"]]["premium"] for s in use])
        lit = [point[s["segment"]]["little"] for s in use]
        lit_mean = gmean(lit) if all(x is not None for x in lit) else None
        meas = rate.get("j_per_output_token") or {}
        meas_prem = rate.get("premium") or {}
        if not valid:  # no valid window: the segments' own figures, said so
            meas = {"mean": gmean([s["j_per_output_token"] for s in use])}
            prems = [s["premium"] for s in use if s.get("premium")]
            meas_prem = {"mean": gmean(prems)} if prems else {}

        def err(x: float | None, ref: float | None) -> float | None:
            return 100 * (x - ref) / ref if x is not None and ref else None

        def inside(x: float | None, band: dict[str, Any]) -> bool | None:
            lo, hi = band.get("low"), band.get("high")
            return None if x is None or lo is None or hi is None else bool(lo <= x <= hi)

        premium_little = lit_mean / pred * pred_prem if lit_mean is not None else None
        loads.append({
            "rate": m, "label": rate["label"], "valid": bool(valid), "segments": [s["segment"] for s in use],
            "left_out": rate["left_out"], "offered_rate_per_s": rate.get("offered_rate_per_s"),
            "load": (rate.get("offered_rate_per_s") or math.nan) / capacity,
            "measured": {"j_per_output_token": meas, "premium": meas_prem},
            "predicted": {
                "j_per_output_token": pred, "premium": pred_prem,
                "j_per_output_token_interval": interval([d[0] for d in per_draw[1:]]),
                "premium_interval": interval([d[1] for d in per_draw[1:]]),
                "error_percent": err(pred, meas.get("mean")),
                "premium_error_percent": err(pred_prem, meas_prem.get("mean")),
                "inside_measured": inside(pred, meas), "premium_inside_measured": inside(pred_prem, meas_prem),
            },
            "little": {
                "j_per_output_token": lit_mean, "premium": premium_little,
                "error_percent": err(lit_mean, meas.get("mean")),
                "premium_error_percent": err(premium_little, meas_prem.get("mean")),
                "inside_measured": inside(lit_mean, meas), "premium_inside_measured": inside(premium_little, meas_prem),
            },
            "per_segment": point, "profile": profile.record(), "fit_s": t_fit,
            "reference_predicted_j_per_output_token": float(np.mean(refs_predicted[: len(use)])),
        })  # fmt: skip
    return {"run": str(run_dir.relative_to(ROOT)), "device": kind, "max_num_seqs": max_seqs,
            "token_budget": TOKEN_BUDGET[kind], "capacity_per_s": capacity, "loads": loads,
            "reference_source": summary["reference"].get("source"),
            "reference_measured_j_per_output_token": measured_ref}  # fmt: skip


def study_profiled(run_dir: Path) -> dict[str, Any]:
    """A run with its own profile: its summary's predictions (``compare.prediction``) in this table's terms."""
    summary = json.loads((run_dir / "summary.json").read_text())
    pred = summary["prediction"]
    by_rate = {r["rate"]: r for r in summary["rates"]}

    def inside(x: float | None, lo: float | None, hi: float | None) -> bool | None:
        return None if x is None or lo is None or hi is None else bool(lo <= x <= hi)

    loads = []
    for x in pred["loads"]:
        o, p = x["j_per_output_token"], x["premium"]
        rate = by_rate[x["rate"]]
        premium_little = (o["little"] / o["predicted"] * p["predicted"]
                          if o["little"] is not None and p["predicted"] is not None else None)  # fmt: skip
        loads.append({
            "rate": x["rate"], "label": x["label"], "valid": x["valid"], "segments": x["segments"],
            "left_out": rate["left_out"], "offered_rate_per_s": rate.get("offered_rate_per_s"), "load": x["load"],
            "measured": {"j_per_output_token": rate.get("j_per_output_token") or {},
                         "premium": rate.get("premium") or {}},
            "predicted": {
                "j_per_output_token": o["predicted"], "premium": p["predicted"],
                "j_per_output_token_interval": o["interval"] or {}, "premium_interval": p["interval"] or {},
                "error_percent": o["error_percent"], "premium_error_percent": p["error_percent"],
                "inside_measured": inside(o["predicted"], o["measured_low"], o["measured_high"]),
                "premium_inside_measured": inside(p["predicted"], p["measured_low"], p["measured_high"]),
                "measured_inside_predicted": o["agrees"] if o["measured_low"] is None else None,
            },
            "little": {
                "j_per_output_token": o["little"], "premium": premium_little,
                "error_percent": o["little_error_percent"],
                "premium_error_percent": 100 * (premium_little - p["measured"]) / p["measured"]
                if premium_little is not None and p["measured"] else None,
                "inside_measured": inside(o["little"], o["measured_low"], o["measured_high"]),
                "premium_inside_measured": inside(premium_little, p["measured_low"], p["measured_high"]),
            },
            "per_segment": x["per_segment"], "reference_predicted_j_per_output_token": None,
        })  # fmt: skip
    return {"run": str(run_dir.relative_to(ROOT)), "device": "cpu" if summary.get("estimated") else "gpu",
            "profile": "its own (closed loops before the ladder)", "max_num_seqs": pred["profile"]["max_num_seqs"],
            "token_budget": pred["profile"]["token_budget"], "capacity_per_s": summary["reference"]["capacity_per_s"],
            "loads": loads, "reference_source": summary["reference"].get("source"),
            "reference_measured_j_per_output_token": summary["reference"]["j_per_output_token"].get("mean"),
            }  # fmt: skip


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:+.1f} %"


def _yes(x: bool | None) -> str:
    return "—" if x is None else ("yes" if x else "no")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicates", type=int, default=20, help="profile draws for the intervals (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict.json")
    args = p.parse_args()
    started = time.perf_counter()
    studies = [study(ROOT / r, args.replicates, args.seed) for r in RUNS if (ROOT / r / "summary.json").exists()]
    studies += [study_profiled(ROOT / r) for r in PROFILED if (ROOT / r / "summary.json").exists()]
    console = Console(width=200)
    table = Table(
        title="Online J/output-token: measured, predicted (from the run's own profile, or one fitted "
        "without the load), Little's law"
    )
    for col in ("run", "load", "valid", "measured J/out [95 %]", "predicted [95 %]", "err", "in", "Little",
                "err", "in", "premium meas.", "pred.", "err", "Little", "err"):  # fmt: skip
        table.add_column(col)
    for s in studies:
        for x in s["loads"]:
            me, pr, li = x["measured"], x["predicted"], x["little"]
            band = me["j_per_output_token"]
            pi = pr["j_per_output_token_interval"]
            table.add_row(
                s["run"].removeprefix("results/"), f"{x['label']} ({_f(x['load'], 2)})",
                "yes" if x["valid"] else "no",
                f"{_f(band.get('mean'))} [{_f(band.get('low'))}, {_f(band.get('high'))}]",
                f"{_f(pr['j_per_output_token'])} [{_f(pi['low'])}, {_f(pi['high'])}]", _pct(pr["error_percent"]),
                _yes(pr["inside_measured"]), _f(li["j_per_output_token"]), _pct(li["error_percent"]),
                _yes(li["inside_measured"]), _f(me["premium"].get("mean")), _f(pr["premium"]),
                _pct(pr["premium_error_percent"]), _f(li["premium"]), _pct(li["premium_error_percent"]),
            )  # fmt: skip
    console.print(table)
    for s in studies:
        predicted_refs = [x["reference_predicted_j_per_output_token"] for x in s["loads"]
                          if x["reference_predicted_j_per_output_token"] is not None]  # fmt: skip
        if not predicted_refs:
            console.print(f"{s['run']}: its own profile; capacity {_f(s['capacity_per_s'])} requests/s")
            continue
        console.print(f"{s['run']}: the premium's reference J/output-token measured ({s['reference_source']}) "
                      f"{_f(s['reference_measured_j_per_output_token'])}, the profiles' saturated closed loop "
                      f"{_f(min(predicted_refs))}–{_f(max(predicted_refs))}; capacity {_f(s['capacity_per_s'])} "
                      "requests/s (the online saturated reference's completions)")  # fmt: skip
    valid = [x for s in studies for x in s["loads"] if x["valid"]]
    summary = {}
    for who in ("predicted", "little"):
        errs = [abs(x[who]["error_percent"]) for x in valid if x[who]["error_percent"] is not None]
        ins = [x[who]["inside_measured"] for x in valid if x[who]["inside_measured"] is not None]
        summary[who] = {"median_abs_error_percent": float(np.median(errs)) if errs else None,
                        "inside_measured": f"{sum(ins)}/{len(ins)}"}  # fmt: skip
        console.print(f"{who:>9}: valid loads {len(valid)}, median |error| of J/output-token "
                      f"{_f(summary[who]['median_abs_error_percent'])} %, inside the measured 95 % interval "
                      f"{summary[who]['inside_measured']}")  # fmt: skip
    console.print("Profile: the run's own (its closed loops and saturated references, no online window) where it has "
                  "one, else per load fitted without that load (the other loads' replays and the saturated "
                  "references); intervals over profile draws; the measured interval is summary.json's.")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"studies": studies, "summary": summary, "replicates": args.replicates,
                                    "seed": args.seed, "seconds": time.perf_counter() - started},
                                   indent=1, default=float) + "\n")  # fmt: skip
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
