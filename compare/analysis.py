"""The analysis: a comparison's run directory → its summary (what ``summary.json`` holds).

Everything is read from the files ``joulebench compare`` wrote (``compare.rundir``) and computed by the
measurement math (``estimands``), so ``joulebench report RUN_DIR`` derives the same summary again, or one of
what an interrupted run finished. It writes no prose: ``compare.render`` and ``compare.plots`` turn the
summary into the report.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compare.prediction import predictions
from compare.rundir import (
    CONFIG,
    COUNTERFACTUAL,
    ENERGY,
    IDLE,
    OFFLINE,
    PROFILE_SEGMENT,
    REFERENCE_RATE,
    rate_label,
    read_energy_series,
    read_json,
    read_polls,
    reference_dir,
    replay_dir,
)
from estimands.attribution import TOKENS_ONLY, EnergyModel, fit_model, slices, token_terms_j
from estimands.energy import DEFINITIONS, attribution_result, online_result, premiums
from estimands.engine import prefill_rate
from estimands.floor import physical_floor
from estimands.plan import plan, timeline
from estimands.prices import Prices, fit_prices, ratio_term
from estimands.reference import checks, pool_mix
from estimands.tokens import tokens_in_window
from estimands.uncertainty import budget, idle_uncertainty_w, sensor_term
from estimands.windows import WARMUP_SHARE, choose_window, measured_requests, overlap, saturated_window, slices_in
from loadgen.errors import LoadgenError
from loadgen.records import read_records
from server.binning import BatchEnergy, Bin, ceiling_bin, ceiling_inflation, count_bins, estimate, measured_bins

#: The ratios of a window to its offline counterparts (budgeted on the log scale).
RATIOS = ("premium", "dynamic_premium", "same_requests_premium", "same_requests_dynamic_premium")


def _offline_sets(offline: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {r["label"]: r for r in (offline or {}).get("results", [])}


def _energy_model(
    replays: list[tuple[float, int, list[dict[str, Any]], Any, np.ndarray, dict[str, Any]]],
    loaded_w: float,
    references: dict[int, dict[str, Any] | None],
    sets: dict[str, dict[str, Any]],
    offline: dict[str, Any] | None,
    slice_s: float,
) -> tuple[EnergyModel, dict[str, Any]]:
    """The per-slice energy model fitted on every online slice and the references' steady parts (an
    aggregate row weighted as the slices it spans), and checked against the offline sets it did not see."""
    xs, ys, groups, weights = [], [], [], []
    for g, (_, _, _, sl, e, _) in enumerate(replays):
        xs.append(sl.features())
        ys.append(e - loaded_w * np.diff(sl.edges))
        groups += [g] * len(e)
        weights += [1.0] * len(e)
    offline_idle = (offline or {}).get("idle_power_w", loaded_w)
    for k, ref in references.items():
        if ref and ref.get("steps"):
            xs.append(np.array([[ref["steps"], ref["input_tokens"], ref["output_tokens"]]], dtype=float))
            ys.append(np.array([ref["energy_j"] - offline_idle * ref["duration_s"]]))
            groups.append(len(replays) + k)
            weights.append(slice_s / ref["duration_s"])
    try:
        model = fit_model(np.vstack(xs), np.concatenate(ys), groups, weights)
    except ValueError as err:
        return TOKENS_ONLY, {"fit": f"no fit ({err}): prefill and decode tokens weighted equally", "checks": []}
    checks = []
    for label, r in sets.items():
        if r.get("saturated") or not r.get("steps"):
            continue
        predicted = float(model.predict(np.array([r["steps"], r["input_tokens"], r["output_tokens"]])))
        measured = r["dynamic_energy_j"]
        checks.append({"set": label, "measured_dynamic_j": measured, "predicted_dynamic_j": predicted,
                       "error_percent": 100 * (predicted - measured) / measured if measured > 0 else None})  # fmt: skip
    return model, {**model.record(), "checks": checks}


def _online_reference(
    run_dir: Path,
    k: int,
    series: dict[tuple[float, int], tuple[np.ndarray, np.ndarray, np.ndarray]],
    loaded_w: float,
    fallback: dict[str, Any] | None,
    ratio: float | None,
    measured: bool,
) -> dict[str, Any] | None:
    """The saturated reference measured against the running server (a saturate replay), as the offline
    reference's steady part reads: J/token, dynamic, its energy and time, and its mix and halves checks
    (``estimands.reference.checks``, the halves' work priced at ``ratio``) from the energy slices."""
    d = reference_dir(run_dir, k)
    window = read_json(d / "window.json")
    if window is None or (REFERENCE_RATE, k) not in series:
        return None
    records = read_records(d / "requests.jsonl")
    edges, e, u = series[(REFERENCE_RATE, k)]
    win = saturated_window(records, edges, window["concurrency"])
    r = online_result(records, edges, e, loaded_w, win, window, read_polls(d / "polls.jsonl"), 1, u, fallback)
    if win is None or r.get("j_per_output_token") is None:
        return None
    rate = (r.get("prefill") or {}).get("tokens_per_s")
    k0, k1 = slices_in(edges, win).start, slices_in(edges, win).stop
    mid = (k0 + k1) // 2
    halves = []
    for a, b in ((k0, mid), (mid, k1)):
        n_in, n_out = tokens_in_window(records, edges[a], edges[b], rate)
        halves.append((float(e[a:b].sum()), n_in, n_out) if b - a >= 2 else None)
    check = checks((r["tokens"]["input"], r["tokens"]["output"]), pool_mix(records), halves, ratio, measured)
    failed = sum(1 for x in records if x["status"] != "ok")
    reasons = (["shorter than two updates of the energy counter"] if r["short_window"] else []) + check["reasons"]
    reasons += [f"{failed} request(s) did not finish ok"] if failed else []
    dyn = r["energy_j"] - loaded_w * win.duration_s
    return {
        "start_s": win.start_s, "end_s": win.end_s, "duration_s": win.duration_s,
        "running_min": window["concurrency"], "running_max": window["concurrency"],
        "input_tokens": r["tokens"]["input"], "output_tokens": r["tokens"]["output"], "energy_j": r["energy_j"],
        "uncertainty_j": r["uncertainty_j"], "short_window": r["short_window"], "average_power_w": r["average_power_w"],
        "dynamic_energy_j": dyn, **{key: r[key] for key in REFERENCE_KEYS}, "idle_share": r["idle_share"],
        "uncertainty_j_per_output_token": r["uncertainty_j_per_output_token"],
        "output_tokens_per_s": r["tokens"]["output"] / win.duration_s, "verdict": r["verdict"],
        "completed": r["steady"]["completed"],
        "completion_rate_per_s": r["steady"]["completed"] / win.duration_s,
        "mix": check["mix"], "halves": check["halves"], "valid": not reasons, "reasons": reasons,
    }  # fmt: skip


def _reference_replay(
    run_dir: Path,
    k: int,
    series: dict[tuple[float, int], tuple[np.ndarray, np.ndarray, np.ndarray]],
    fallback: dict[str, Any] | None,
) -> tuple[list[dict[str, Any]], Any, np.ndarray, dict[str, Any]] | None:
    """A saturate replay's records, slices and energy (for the energy model's fit), and its steady part's
    slice indices (for the saturated prices)."""
    d = reference_dir(run_dir, k)
    window = read_json(d / "window.json")
    if (REFERENCE_RATE, k) not in series or window is None:
        return None
    records = read_records(d / "requests.jsonl")
    edges, e, _ = series[(REFERENCE_RATE, k)]
    rate = (prefill_rate(read_polls(d / "polls.jsonl")) or fallback or {}).get("tokens_per_s")
    win = saturated_window(records, edges, window["concurrency"])
    return records, slices(records, edges, rate), e, {"steady": None if win is None else slices_in(edges, win)}


def _prices(
    saturate: dict[int, tuple[list[dict[str, Any]], Any, np.ndarray, dict[str, Any]]],
    sets: dict[str, dict[str, Any]],
    loaded_w: float,
    offline: dict[str, Any] | None,
    slice_s: float,
) -> tuple[Prices | None, Prices | None, dict[str, Any]]:
    """The saturated prices (``estimands.prices``), attributional and dynamic: fitted on the steady slices of
    every saturate replay against the server and the offline calibration sets where they ran (each weighted as
    the slices its time spans)."""
    rows: list[tuple[float, float, float, int, float, float]] = []  # energy, dynamic, in, out, group, weight
    for k, (_, sl, e, extra) in saturate.items():
        steady = extra["steady"]
        if steady is None:
            continue
        f = sl.features()[steady]
        dt = np.diff(sl.edges)[steady]
        for j in range(len(f)):
            rows.append(
                (float(e[steady][j]), float(e[steady][j] - loaded_w * dt[j]), float(f[j, 1]), float(f[j, 2]), k, 1.0)
            )
    idle_offline = (offline or {}).get("idle_power_w", loaded_w)
    # a set is one row holding its whole energy: weighted as the slices its time spans (its variance is n
    # slices', so its weight 1/n), as the energy model weighs the references' aggregate rows
    for g, label in enumerate(("check prefill-heavy", "check decode-heavy")):
        x = sets.get(label)
        if x and x.get("duration_s", 0) > 0 and not x.get("short_window"):
            dyn = x.get("dynamic_energy_j", x["energy_j"] - idle_offline * x["duration_s"])
            rows.append(
                (x["energy_j"], dyn, x["input_tokens"], x["output_tokens"], 1000 + g, slice_s / x["duration_s"])
            )
    if not rows:
        return None, None, {"fit": "no prices: no valid saturated reference with energy slices, no calibration sets"}
    e, dyn, n_in, n_out, groups, weights = (list(c) for c in zip(*rows, strict=True))
    prices = fit_prices(e, n_in, n_out, groups, weights)
    dynamic = fit_prices(dyn, n_in, n_out, groups, weights)
    record = {
        "attributional": None if prices is None else prices.record(),
        "dynamic": None if dynamic is None else dynamic.record(),
        "calibration_sets": [x for x in ("check prefill-heavy", "check decode-heavy") if x in sets],
        "fit": ("no prices: fewer than three rows to fit" if len(rows) < 3 else "no prices: the fit found no decode "
                "cost") if prices is None else
        f"r = a/b = {prices.ratio:.4g} ± {prices.ratio_se:.2g} (a prefill token's cost in decode tokens at "
        f"saturation; R² {prices.r2:.3f} on {prices.rows} rows, {prices.method})",
    }  # fmt: skip
    return prices, dynamic, record


def _online_vs_offline(online: dict[int, Any], offline: dict[int, Any]) -> dict[str, Any] | None:
    """The saturate replay's J/output-token ÷ the offline reference's, per segment and over them."""
    ratios = [online[k]["j_per_output_token"] / offline[k]["j_per_output_token"] for k in online
              if online.get(k) and offline.get(k)]  # fmt: skip
    if not ratios:
        return None
    terms = {"interpolation": ([math.hypot(_rel(online[k]["uncertainty_j"], online[k]["energy_j"]),
                                           _rel(offline[k]["uncertainty_j"], offline[k]["energy_j"]))
                                for k in online if online.get(k) and offline.get(k)], False)}  # fmt: skip
    return {"ratios": ratios, **budget(ratios, terms, log=True)}


def _offline_rule(steady: dict[str, Any] | None, ratio: float | None, measured: bool) -> dict[str, Any] | None:
    """An offline reference's steady part with its mix and halves checks (the halves' work priced at
    ``ratio``) and its verdict; one measured by an earlier rule (opened at the cohort's first tokens, its halves
    not kept) is never valid."""
    if steady is None:
        return None
    if "halves_measured" not in steady:
        why = "measured by an earlier rule (opened at the start cohort's first tokens; mix and halves not checked)"
        return {**steady, "valid": False, "reasons": [why]}
    halves = [None if h is None else (h["energy_j"], h["input_tokens"], h["output_tokens"])
              for h in steady["halves_measured"]]  # fmt: skip
    check = checks(
        (steady["input_tokens"], steady["output_tokens"]), tuple(steady["pool_tokens"]), halves, ratio, measured
    )
    reasons = (["shorter than two updates of the energy counter"] if steady["short_window"] else []) + check["reasons"]
    return {**steady, "mix": check["mix"], "halves": check["halves"], "valid": not reasons, "reasons": reasons}


def _prefill_fallback(sets: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The engine's prefill rate from the offline prefill-heavy set, where the server did not say it."""
    fit = sets.get("check prefill-heavy")
    if not fit or fit["duration_s"] <= 0:
        return None
    return {"tokens_per_s": fit["input_tokens"] / fit["duration_s"],
            "method": "calibrated offline: the prefill-heavy set's input tokens ÷ its duration"}  # fmt: skip


def _saturated(
    run_dir: Path,
    segments: int,
    series: dict[tuple[float, int], tuple[np.ndarray, np.ndarray, np.ndarray]],
    loaded_w: float,
    fallback: dict[str, Any] | None,
    sets: dict[str, dict[str, Any]],
    offline: dict[str, Any] | None,
    slice_s: float,
    measured: bool,
) -> tuple[dict[int, Any], tuple[Prices | None, Prices | None, dict[str, Any]], dict[int, dict[str, Any] | None]]:
    """The saturate replays, the saturated prices, and each segment's online reference: the prices first, since
    the references' halves are compared on the work they did at those prices."""
    saturate = {k: x for k in range(segments) if (x := _reference_replay(run_dir, k, series, fallback))}
    prices = _prices(saturate, sets, loaded_w, offline, slice_s)
    ratio = None if prices[0] is None else prices[0].ratio
    online = {k: _online_reference(run_dir, k, series, loaded_w, fallback, ratio, measured) for k in range(segments)}
    return saturate, prices, online


def online_references(run_dir: Path) -> dict[int, dict[str, Any] | None]:
    """Each segment's online reference with its verdict, from the run directory as it stands (the comparison
    asks it whether the offline phase is needed)."""
    config = read_json(run_dir / CONFIG) or {}
    idle = read_json(run_dir / IDLE) or {}
    segments = len(config.get("workload") or [])
    series = read_energy_series(run_dir / ENERGY)
    loaded_w = idle.get("loaded", {}).get("power_w", 0.0)
    slice_s = (config.get("options") or {}).get("slice_s", 0.25)
    return _saturated(run_dir, segments, series, loaded_w, None, {}, None, slice_s, energy_measured(config))[2]


def energy_measured(config: dict[str, Any]) -> bool:
    """Whether the run's energy is a measurement: not the CPU utilization estimate, no simulated device."""
    devices = config.get("devices") or []
    return not any(d.get("source") == "estimate" or d.get("simulated") for d in devices)


def analyze(run_dir: Path) -> dict[str, Any]:
    """The comparison's figures from the run directory's files."""
    config = read_json(run_dir / CONFIG)
    if config is None:
        raise LoadgenError(f"{run_dir} has no config.json: not a joulebench compare run directory")
    idle = read_json(run_dir / IDLE) or {}
    offline = read_json(run_dir / OFFLINE)
    loaded_w = idle.get("loaded", {}).get("power_w", 0.0)
    sets = _offline_sets(offline)

    bins = {}
    if offline:
        bins = measured_bins(offline["results"])
    fallback = _prefill_fallback(sets)
    devices = config.get("devices") or []
    sources = sorted({d.get("source", "") for d in devices})
    sensor = sensor_term(sources)
    u_idle = idle_uncertainty_w(idle.get("loaded"))
    u_idle_offline = idle_uncertainty_w((offline or {}).get("idle"))

    series = read_energy_series(run_dir / ENERGY)
    options = config["options"]
    segments = config.get("workload") or []
    measured = energy_measured(config)
    saturate, (prices, dynamic_prices, price_fit), online_measured = _saturated(
        run_dir, len(segments), series, loaded_w, fallback, sets, offline, options.get("slice_s", 0.25), measured
    )
    ratio = None if prices is None else prices.ratio
    offline_measured = {k: _offline_rule((sets.get(f"reference s{k}") or {}).get("steady"), ratio, measured)
                        for k in range(len(segments))}  # fmt: skip
    # A reference that is too short, off the workload's mix or not steady is shown, never divided by.
    offline_refs = {k: r if r and r["valid"] else None for k, r in offline_measured.items()}
    online_refs = {k: r if r and r["valid"] else None for k, r in online_measured.items()}
    # Each segment's premium divides by its offline reference (the floor of this stack) where that is valid,
    # else by the one measured against the running server.
    references = {k: offline_refs[k] or online_refs[k] for k in offline_refs}
    used = {k: "offline" if offline_refs[k] else "online" if online_refs[k] else None for k in offline_refs}
    kinds = {v for v in used.values() if v}
    source = next(iter(kinds)) if len(kinds) == 1 else "mixed" if kinds else None
    rates: list[dict[str, Any]] = []
    per_request: list[dict[str, Any]] = []
    multisets: dict[int, list[list[tuple[int, int]]]] = defaultdict(list)
    measured: dict[int, list[set[int]]] = defaultdict(list)  # each rate's measured requests, per segment
    replays: list[tuple[float, int, list[dict[str, Any]], Any, np.ndarray, dict[str, Any]]] = []
    axis = "load" if options.get("loads") else "rate"
    steps = options.get("loads") or options["rates"]
    for m in steps:
        for seg in segments:
            k = seg["segment"]
            d = replay_dir(run_dir, m, k, axis)
            window = read_json(d / "window.json")
            if window is None or (m, k) not in series:
                continue
            records = read_records(d / "requests.jsonl")
            multisets[k].append(sorted((r["input_tokens"], r["output_tokens"]) for r in records))
            edges, e, u = series[(m, k)]
            # The window again from the raw data and the run's options (the same function the run used).
            win = choose_window(records, edges, options.get("warmup_share", WARMUP_SHARE))
            result = online_result(records, edges, e, loaded_w, win, window, read_polls(d / "polls.jsonl"),
                                   options["min_requests"], u, fallback)  # fmt: skip
            result.update(segment=k, drain_cut=window["drain_cut"])
            measured[k].append(measured_requests(records, win))
            rate = (result.get("prefill") or {}).get("tokens_per_s")
            replays.append((m, k, records, slices(records, edges, rate), e, result))
    # The saturate replays against the server cover the full batch, which the ladder's windows do not reach.
    fit_replays = replays + [(REFERENCE_RATE, k, *x) for k, x in saturate.items()]
    for _, k, _, _, _, result in replays:
        result.update(premiums(result, references.get(k), sets.get(f"same requests s{k}"), prices, dynamic_prices))
        if result.get("tokens", {}).get("output"):
            result["input_per_output_token"] = result["tokens"]["input"] / result["tokens"]["output"]
    model, fit = _energy_model(fit_replays, loaded_w, offline_refs, sets, offline, options.get("slice_s", 0.25))
    capacities = [r["completion_rate_per_s"] for r in online_measured.values()
                  if r and r["valid"] and r.get("completion_rate_per_s")]  # fmt: skip
    capacity_per_s = float(np.mean(capacities)) if capacities else None
    for m in steps:
        windows = []
        for _, k, records, sl, e, result in (x for x in replays if x[0] == m):
            attribution, attributed = attribution_result(records, sl, e, loaded_w, model)
            result["attribution"] = attribution
            if bins and k == 0:
                try:
                    result["binning"] = binning_gap(
                        records, attributed["attributional"], attribution["replay_energy_j"],
                        result["same_requests"]["duration_s"], loaded_w, bins, sets.get(f"same requests s{k}"),
                    )  # fmt: skip
                except KeyError as err:
                    result["binning"] = {"error": str(err)}
            windows.append(result)
            for i, r in enumerate(records):
                if r["status"] == "ok":
                    per_request.append({
                        "rate": m, "segment": k, "request_id": r["request_id"],
                        "input_tokens": r["usage_input_tokens"], "output_tokens": r["usage_output_tokens"],
                        "energy_j": float(attributed["attributional"][i]),
                        "energy_se_j": float(attributed["attributional_se"][i]),
                        "dynamic_energy_j": float(attributed["dynamic"][i]),
                        "dynamic_energy_se_j": float(attributed["dynamic_se"][i]),
                        "ttft_s": r["ttft_s"], "e2e_s": r["e2e_s"], "sent_s": r["sent_s"],
                    })  # fmt: skip
        if not windows:
            continue
        valid = [w for w in windows if w["verdict"]["valid"]]
        shown = [w.get("steady") for w in (valid or windows) if w.get("steady")]  # rates over valid windows
        entry: dict[str, Any] = {
            "rate": m, "axis": axis, "label": rate_label(m, axis), "segments": windows,
            "offered_rate_per_s": _mean_of(shown, "arrival_rate_per_s"),
            "completed_rate_per_s": _mean_of(shown, "completion_rate_per_s"),
            "saturated": any(w["verdict"]["saturated"] or w["drain_cut"] for w in windows),
            "valid_segments": [w["segment"] for w in valid],
            "left_out": [{"segment": w["segment"], "reasons": w["verdict"]["reasons"]} for w in windows
                         if not w["verdict"]["valid"]],
            "requests_in_window": [w.get("steady", {}).get("completed", 0) for w in windows],
        }  # fmt: skip
        entry.update(_budgets(valid, references, sets, u_idle, u_idle_offline, sensor, prices, dynamic_prices))
        # the load: the rung itself on the load axis, else the offered rate over the capacity the references measured
        entry["load"] = (
            m
            if axis == "load"
            else (
                entry["offered_rate_per_s"] / capacity_per_s if capacity_per_s and entry["offered_rate_per_s"] else None
            )
        )
        rates.append(entry)

    reference = [{"segment": k, "source": used[k], **ref} for k, ref in references.items() if ref]
    floor = physical_floor(config.get("model_parameters"), devices)
    return {
        "config": {k: config.get(k) for k in CONFIG_KEYS},
        "definitions": DEFINITIONS,
        "devices": devices,
        "energy_sources": sources,
        "estimated": "estimate" in sources,
        "idle": idle,
        "workload": {
            "segments": [{k: v for k, v in s.items() if k != "lengths"} for s in segments],
            "identical_across_rates": all(all(x == xs[0] for x in xs) for xs in multisets.values()),
            # the requests arriving in each rate's window: the smallest Jaccard index between two rates
            "measured_overlap": [
                {"segment": k, "requests": [len(x) for x in sets_], "jaccard_min": overlap(sets_)}
                for k, sets_ in sorted(measured.items())
            ],
        },
        "reference": {
            "source": source,
            "definition": {
                "offline": "LLM engine driven offline, closed loop at --max-num-seqs, steady part",
                "online": "a saturate replay against the running server, --max-num-seqs in flight, steady part",
                "mixed": "per segment, offline where valid, else the saturate replay against the running server",
                None: "none measured",
            }[source],
            "segments": reference,
            "offline_segments": [
                {"segment": k, "valid": bool(offline_refs[k]), **r} for k, r in offline_measured.items() if r
            ],
            "online_segments": [
                {"segment": k, "valid": bool(online_refs[k]), **r} for k, r in online_measured.items() if r
            ],
            "online_vs_offline": _online_vs_offline(online_refs, offline_refs),
            "capacity_per_s": capacity_per_s,
            # every saturate replay on disk, whether or not it has a steady part under today's rule
            "online_replays": sorted(saturate),
            "batch_size": (sets.get("reference s0") or {}).get("batch_size")
            or next((r["running_max"] for r in online_measured.values() if r), None),
            **{
                key: budget(
                    [r.get(key) for r in reference], _reference_terms(reference, key, u_idle_offline, sensor), log=True
                )
                for key in REFERENCE_KEYS
            },
        },
        "floor": _floor_ratios(floor, rates, reference, sets),
        "prices": price_fit,
        "energy_model": fit,
        "offline_idle_power_w": offline.get("idle_power_w") if offline else None,
        "offline_results": offline["results"] if offline else [],
        "rates": rates,
        "counterfactual": _counterfactual(run_dir),
        "headline": _headline_figures(rates),
        "prediction": predictions(run_dir, config, idle, series, rates, ratio),
        "timeline": _timeline(series, idle, rates),
        "per_request": per_request,
        # the first segment's power of each rate, for the report's power-over-time plot
        "power_series": {
            (r["rate"], r["segments"][0]["segment"]): series[(r["rate"], r["segments"][0]["segment"])][:2]
            for r in rates
            if (r["rate"], r["segments"][0]["segment"]) in series
        },
    }


REFERENCE_KEYS = ("j_per_output_token", "j_per_token", "dynamic_j_per_output_token", "dynamic_j_per_token")
CONFIG_KEYS = (
    "joulebench", "command", "date", "hardware", "vllm", "model", "preset", "weights", "model_parameters", "engine",
    "trace", "max_model_len", "monitor", "server", "complete", "interrupted", "problems",
)  # fmt: skip


def _rel(num: float | None, den: float | None) -> float:
    return abs(num) / abs(den) if num is not None and den else 0.0


def _window_terms(w: dict[str, Any], u_idle_w: float) -> dict[str, float]:
    """One window's relative standard uncertainties: interpolation (of its energy, of its dynamic energy),
    prefill placement (of its token count), loaded-idle power (of its dynamic energy)."""
    dur = w["window"]["duration_s"]
    e_dyn = w["energy_j"] - w["loaded_idle_power_w"] * dur
    return {
        "interpolation": _rel(w["uncertainty_j"], w["energy_j"]),
        "interpolation_dynamic": _rel(w["uncertainty_j"], e_dyn),
        "prefill_placement": _rel(w["tokens"].get("input_uncertainty", 0.0), w["tokens"]["total"]),
        "prefill_placement_input": _rel(w["tokens"].get("input_uncertainty", 0.0), w["tokens"]["input"]),
        "idle_power": _rel(u_idle_w * dur, e_dyn),
    }


def _timeline(series: dict[tuple[float, int], Any], idle: dict[str, Any], rates: list[dict[str, Any]]) -> dict:
    """The run's phases with their wall times and the plan its spread asks for (``estimands.plan``)."""
    spans = {key: (float(edges[0]), float(edges[-1])) for key, (edges, _, _) in series.items() if len(edges)}
    labels = {float(r["rate"]): r["label"] for r in rates}
    phases = timeline(spans, idle, REFERENCE_RATE, PROFILE_SEGMENT, labels)
    return {"phases": phases, "plan": plan([r for r in rates if not r.get("saturated")], phases)}


def _reference_window_terms(ref: dict[str, Any] | None, u_idle_w: float) -> dict[str, float]:
    if not ref:
        return {"interpolation": 0.0, "interpolation_dynamic": 0.0, "idle_power": 0.0}
    return {
        "interpolation": _rel(ref["uncertainty_j"], ref["energy_j"]),
        "interpolation_dynamic": _rel(ref["uncertainty_j"], ref["dynamic_energy_j"]),
        "idle_power": _rel(u_idle_w * ref["duration_s"], ref["dynamic_energy_j"]),
    }


def _budgets(
    valid: list[dict[str, Any]],
    references: dict[int, dict[str, Any] | None],
    sets: dict[str, dict[str, Any]],
    u_idle_w: float,
    u_idle_offline_w: float,
    sensor: float,
    prices: Prices | None,
    dynamic_prices: Prices | None,
) -> dict[str, Any]:
    """Every per-rate figure over the valid windows, with its uncertainty budget; positive quantities on the
    log scale (geometric mean, an interval that stays positive)."""
    on = [_window_terms(w, u_idle_w) for w in valid]
    ref = [_reference_window_terms(references.get(w["segment"]), u_idle_offline_w) for w in valid]
    same = [sets.get(f"same requests s{w['segment']}") or {} for w in valid]
    edge = [_rel(w["same_requests"]["uncertainty_j"], w["same_requests"]["online_energy_j"]) for w in valid]

    def col(rows: list[dict[str, float]], key: str) -> list[float]:
        return [r[key] for r in rows]

    same_interp = [_rel(x.get("uncertainty_j"), x.get("energy_j")) for x in same]
    same_interp_dyn = [_rel(x.get("uncertainty_j"), x.get("dynamic_energy_j")) for x in same]
    same_idle = [_rel(u_idle_offline_w * x.get("duration_s", 0.0), x.get("dynamic_energy_j")) for x in same]
    on_idle_series = [_rel(u_idle_w * w["same_requests"]["duration_s"], w["same_requests"]["online_dynamic_energy_j"])
                      for w in valid]  # fmt: skip
    sensor_all = [sensor] * len(valid)

    def price(p: Prices | None) -> list[float]:
        """The premium's term from the uncertainty of r (common: one r for every segment)."""
        out = []
        for w in valid:
            r = references.get(w["segment"]) or {}
            tokens = (w["tokens"]["input"], w["tokens"]["output"])
            out.append(ratio_term(tokens, (r.get("input_tokens", 0.0), r.get("output_tokens", 0.0)), p))
        return out

    plan: dict[str, tuple[dict[str, tuple[list[float], bool]], bool]] = {
        "j_per_output_token": ({"interpolation": (col(on, "interpolation"), False), "sensor": (sensor_all, True)},
                               True),
        "j_per_token": ({"interpolation": (col(on, "interpolation"), False),
                         "prefill_placement": (col(on, "prefill_placement"), False),
                         "sensor": (sensor_all, True)}, True),
        "j_per_input_token": ({"interpolation": (col(on, "interpolation"), False), "sensor": (sensor_all, True)},
                              True),
        "dynamic_j_per_output_token": ({"interpolation": (col(on, "interpolation_dynamic"), False),
                                        "idle_power": (col(on, "idle_power"), True),
                                        "sensor": (sensor_all, True)}, True),
        "dynamic_j_per_token": ({"interpolation": (col(on, "interpolation_dynamic"), False),
                                 "prefill_placement": (col(on, "prefill_placement"), False),
                                 "idle_power": (col(on, "idle_power"), True), "sensor": (sensor_all, True)}, True),
        "idle_share": ({}, True),
        "average_power_w": ({"interpolation": (col(on, "interpolation"), False), "sensor": (sensor_all, True)},
                            True),
        "uncertainty_j_per_output_token": ({}, True),
        "input_per_output_token": ({"prefill_placement": (col(on, "prefill_placement_input"), False)}, True),
        "premium": ({"interpolation": (col(on, "interpolation"), False),
                     "prefill_placement": (col(on, "prefill_placement"), False),
                     "reference_interpolation": (col(ref, "interpolation"), False),
                     "prefill_price": (price(prices), True)}, True),
        "dynamic_premium": ({"interpolation": (col(on, "interpolation_dynamic"), False),
                             "prefill_placement": (col(on, "prefill_placement"), False),
                             "idle_power": (col(on, "idle_power"), True),
                             "reference_interpolation": (col(ref, "interpolation_dynamic"), False),
                             "reference_idle_power": (col(ref, "idle_power"), True),
                             "prefill_price": (price(dynamic_prices), True)}, True),
        "same_requests_premium": ({"interpolation": (edge, False), "offline_interpolation": (same_interp, False)},
                                  True),
        "same_requests_dynamic_premium": ({"interpolation": (edge, False), "idle_power": (on_idle_series, True),
                                           "offline_interpolation": (same_interp_dyn, False),
                                           "offline_idle_power": (same_idle, True)}, True),
    }  # fmt: skip
    return {key: budget([w.get(key) for w in valid], terms, log) for key, (terms, log) in plan.items()}


def _reference_terms(
    reference: list[dict[str, Any]], key: str, u_idle_offline_w: float, sensor: float
) -> dict[str, tuple[list[float], bool]]:
    rows = [_reference_window_terms(r, u_idle_offline_w) for r in reference]
    dynamic = key.startswith("dynamic")
    terms = {"interpolation": ([r["interpolation_dynamic" if dynamic else "interpolation"] for r in rows], False),
             "sensor": ([sensor] * len(rows), True)}  # fmt: skip
    if dynamic:
        terms["idle_power"] = ([r["idle_power"] for r in rows], True)
    return terms


def _floor_ratios(
    floor: dict[str, Any] | None,
    rates: list[dict[str, Any]],
    reference: list[dict[str, Any]],
    sets: dict[str, dict[str, Any]],
) -> dict[str, Any] | None:
    """Each estimand's J/token (input + output) ÷ the physical floor."""
    if floor is None:
        return None
    f = floor["j_per_token"]
    same = [x["j_per_token"] for k, x in sets.items() if k.startswith("same requests s")]
    ref = [r["j_per_token"] for r in reference]
    ratios = {
        "saturated reference": float(np.mean(ref)) / f if ref else None,
        "same requests offline (at once)": float(np.mean(same)) / f if same else None,
    }
    for r in rates:
        if r["valid_segments"] and not r["saturated"] and r["j_per_token"]["mean"]:
            ratios[f"online {r['label']}"] = r["j_per_token"]["mean"] / f
    return {**floor, "ratios": ratios}


def _counterfactual(run_dir: Path) -> dict[str, Any] | None:
    """The counterfactual check as its run wrote it, with the token terms re-derived from its records and its
    model where it lacks them."""
    c = read_json(run_dir / COUNTERFACTUAL)
    if c is None or "token_terms_j" in c:
        return c
    first_a = next(iter(sorted((run_dir / "counterfactual").glob("*-A"))), None)
    if first_a is None:
        return c
    m = c["model"]
    t = token_terms_j(read_records(first_a / "requests.jsonl"), c["leave_out_every"], m["prefill_j_per_token"],
                      m["decode_j_per_token"])  # fmt: skip
    return {**c, "token_terms_j": t, "token_terms_ratio": t / c["delta_j"] if c["delta_j"] > 0 else None}


def _mean_of(rows: list[dict[str, Any]], key: str) -> float | None:
    return float(np.mean([r[key] for r in rows])) if rows else None


def _headline_figures(rates: list[dict[str, Any]]) -> dict[str, Any]:
    """The premium at every rate with a valid window, and the rates left out with why."""
    shown = [r for r in rates if r["valid_segments"] and not r["saturated"]]
    return {
        "rates": [{"rate": r["rate"], "label": r["label"], "load": r.get("load"),
                   "offered_rate_per_s": r["offered_rate_per_s"], "segments": len(r["valid_segments"]),
                   **{k: r[k] for k in ("j_per_output_token", "j_per_token", "input_per_output_token", *RATIOS)}}
                  for r in shown],
        "left_out": [{"rate": r["rate"], "label": r["label"],
                      "why": "saturated: a throughput figure, not an online one" if r["saturated"] else
                      "no valid window: " + "; ".join(sorted({x for lo in r["left_out"] for x in lo["reasons"]}))}
                     for r in rates if r not in shown],
    }  # fmt: skip


def binning_gap(
    records: Sequence[Mapping[str, Any]],
    per_request_j: np.ndarray,
    replay_energy_j: float,
    replay_duration_s: float,
    loaded_idle_w: float,
    bins: Mapping[Bin, BatchEnergy],
    same_requests: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The binning estimate (Fernandez et al. §4.1) of a replay's requests, checked first against the offline
    energy of the same requests (all at once), then against the measured online energy.

    The requests the bins include (within the largest bins, in a bin the context holds) are compared:
    offline, the same-requests set's energy × their share of its tokens; online, the replay's energy (first
    send to last token) × their share of the attributed energy. Online the estimate is also given with an
    idle term, loaded-idle power × the replay's time the batches do not cover (wall clock less Σ N/B ·
    t_batch), on the same share.
    """
    ok = [(i, r) for i, r in enumerate(records) if r["status"] == "ok"]
    pairs = [(r["usage_input_tokens"], r["usage_output_tokens"]) for _, r in ok]
    # A request is estimated when its ceiling bin was measured: not beyond the largest bins, and not a bin
    # the context cannot hold (a 1900-token prompt fits 2048, its 2048 × 8 bin does not).
    in_bins = [ceiling_bin(i, o) in bins for i, o in pairs]
    counts = count_bins(p for p, m in zip(pairs, in_bins, strict=True) if m)
    est = estimate(counts, bins)
    included = [i for (i, _), m in zip(ok, in_bins, strict=True) if m]
    attributed = float(np.sum(per_request_j))
    share = float(np.sum(per_request_j[included])) / attributed if attributed > 0 else 0.0
    measured = replay_energy_j * share
    idle_j = loaded_idle_w * max(0.0, replay_duration_s - est.busy_s) * share
    tokens_all = sum(i + o for i, o in pairs)
    tokens_in = sum(i + o for (i, o), m in zip(pairs, in_bins, strict=True) if m)
    offline = None
    if same_requests and same_requests.get("energy_j") and tokens_all:
        offline = same_requests["energy_j"] * tokens_in / tokens_all

    def gap(a: float, b: float | None) -> float | None:
        return 100.0 * (a - b) / b if b else None

    return {
        "estimate_j": est.energy_j,
        "estimate_uncertainty_j": est.uncertainty_j,
        "busy_s": est.busy_s,
        "ceiling_inflation": ceiling_inflation(p for p, m in zip(pairs, in_bins, strict=True) if m),
        "offline_same_requests_j": offline,
        "gap_offline_percent": gap(est.energy_j, offline),
        "measured_j": measured,
        "gap_percent": gap(est.energy_j, measured),
        "estimate_with_idle_j": est.energy_j + idle_j,
        "gap_with_idle_percent": gap(est.energy_j + idle_j, measured),
        "included": est.included,
        "excluded": len(pairs) - est.included,
        "bins": len(counts.counts),
        "batch_sizes": sorted({bins[b].batch_size for b in counts.counts}),
        "rule": "each bin at the largest batch that fits (KV cache, max batch); a partial batch as N/B of a batch",
    }
