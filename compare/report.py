"""A comparison's run directory → ``summary.json``, ``report.md``, ``report.html`` and ``plots/``.

Everything here is read from the files ``joulebench compare`` wrote, so ``joulebench report RUN_DIR``
gives the same report again (or a report of what an interrupted run finished). The HTML embeds its
plots and needs nothing from the network.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from compare.attribution import TOKENS_ONLY, EnergyModel, fit_model, slices
from compare.comparison import DEFINITIONS, attribution_result, binning_gap, online_result, premiums
from compare.experiment import rate_label, replay_dir
from compare.floor import physical_floor
from compare.uncertainty import budget, idle_uncertainty_w, sensor_term
from loadgen.errors import LoadgenError
from loadgen.records import read_records
from monitor.meter import measured_kind


def _read_json(path: Path) -> Any:
    from joulebench.files import open_text

    try:
        with open_text(path) as f:
            return json.load(f)
    except OSError:
        return None
    except json.JSONDecodeError as err:
        raise LoadgenError(f"{path}: not JSON ({err})") from None


def _energy_series(path: Path) -> dict[tuple[float, int], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """energy.csv (or its .gz) → (rate, segment) → (edges, energy J, uncertainty J)."""
    from joulebench.files import open_text

    rows: dict[tuple[float, int], list[tuple[float, float, float, float]]] = defaultdict(list)
    try:
        with open_text(path) as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                try:
                    key = (float(row["rate"]), int(row["segment"]))
                    rows[key].append((float(row["start_s"]), float(row["end_s"]), float(row["energy_j"]),
                                      float(row["uncertainty_j"])))  # fmt: skip
                except (KeyError, TypeError, ValueError) as err:
                    raise LoadgenError(f"{path}:{line}: bad row ({err})") from None
    except OSError:
        return {}
    out = {}
    for key, r in rows.items():
        a = np.array(sorted(r))
        out[key] = (np.append(a[:, 0], a[-1, 1]), a[:, 2], a[:, 3])
    return out


#: The ratios of a window to its offline counterparts (budgeted on the log scale).
RATIOS = ("premium_output", "premium_token", "dynamic_premium_output", "dynamic_premium_token",
          "same_requests_premium", "same_requests_dynamic_premium")  # fmt: skip


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
) -> dict[str, Any] | None:
    """The saturated reference measured against the running server (a saturate replay), as the offline
    reference's steady part reads: J/token, dynamic, its energy and time."""
    from compare.polls import read_polls
    from compare.windows import saturated_window

    d = run_dir / "online" / f"reference-{k}"
    window = _read_json(d / "window.json")
    if window is None or (-1.0, k) not in series:
        return None
    records = read_records(d / "requests.jsonl")
    edges, e, u = series[(-1.0, k)]
    win = saturated_window(records, edges, window["concurrency"])
    r = online_result(records, edges, e, loaded_w, win, window, read_polls(d / "polls.jsonl"), 1, u, fallback)
    if win is None or r.get("j_per_output_token") is None:
        return None
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
    }  # fmt: skip


def _reference_replay(
    run_dir: Path,
    k: int,
    series: dict[tuple[float, int], tuple[np.ndarray, np.ndarray, np.ndarray]],
    fallback: dict[str, Any] | None,
) -> tuple[list[dict[str, Any]], Any, np.ndarray, dict[str, Any]] | None:
    """A saturate replay's records, slices and energy, for the energy model's fit."""
    from compare.polls import prefill_rate, read_polls

    d = run_dir / "online" / f"reference-{k}"
    if (-1.0, k) not in series or not (d / "window.json").exists():
        return None
    records = read_records(d / "requests.jsonl")
    edges, e, _ = series[(-1.0, k)]
    rate = (prefill_rate(read_polls(d / "polls.jsonl")) or fallback or {}).get("tokens_per_s")
    return records, slices(records, edges, rate), e, {}


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


def _prefill_fallback(sets: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The engine's prefill rate from the offline prefill-heavy set, where the server did not say it."""
    fit = sets.get("check prefill-heavy")
    if not fit or fit["duration_s"] <= 0:
        return None
    return {"tokens_per_s": fit["input_tokens"] / fit["duration_s"],
            "method": "calibrated offline: the prefill-heavy set's input tokens ÷ its duration"}  # fmt: skip


def analyze(run_dir: Path) -> dict[str, Any]:
    """The comparison's figures from the run directory's files."""
    from compare.polls import read_polls
    from compare.windows import choose_window

    config = _read_json(run_dir / "config.json")
    if config is None:
        raise LoadgenError(f"{run_dir} has no config.json: not a joulebench compare run directory")
    idle = _read_json(run_dir / "idle.json") or {}
    offline = _read_json(run_dir / "offline" / "offline.json")
    loaded_w = idle.get("loaded", {}).get("power_w", 0.0)
    sets = _offline_sets(offline)

    bins = {}
    if offline:
        from server.binning import measured_bins

        bins = measured_bins(offline["results"])
    fallback = _prefill_fallback(sets)
    devices = config.get("devices") or []
    sources = sorted({d.get("source", "") for d in devices})
    sensor = sensor_term(sources)
    u_idle = idle_uncertainty_w(idle.get("loaded"))
    u_idle_offline = idle_uncertainty_w((offline or {}).get("idle"))

    series = _energy_series(run_dir / "energy.csv")
    options = config["options"]
    segments = config.get("workload") or []
    offline_measured = {k: (sets.get(f"reference s{k}") or {}).get("steady") for k in range(len(segments))}
    online_measured = {k: _online_reference(run_dir, k, series, loaded_w, fallback) for k in range(len(segments))}
    # A reference shorter than two counter updates has no honest energy: it is shown, never divided by.
    offline_refs = {k: r if r and not r["short_window"] else None for k, r in offline_measured.items()}
    online_refs = {k: r if r and not r["short_window"] else None for k, r in online_measured.items()}
    # Each segment's premium divides by its offline reference (the floor of this stack) where that is valid,
    # else by the one measured against the running server.
    references = {k: offline_refs[k] or online_refs[k] for k in offline_refs}
    used = {k: "offline" if offline_refs[k] else "online" if online_refs[k] else None for k in offline_refs}
    kinds = {v for v in used.values() if v}
    source = next(iter(kinds)) if len(kinds) == 1 else "mixed" if kinds else None
    rates: list[dict[str, Any]] = []
    per_request: list[dict[str, Any]] = []
    multisets: dict[int, list[list[tuple[int, int]]]] = defaultdict(list)
    replays: list[tuple[float, int, list[dict[str, Any]], Any, np.ndarray, dict[str, Any]]] = []
    for m in options["rates"]:
        for seg in segments:
            k = seg["segment"]
            d = replay_dir(run_dir, m, k)
            window = _read_json(d / "window.json")
            if window is None or (m, k) not in series:
                continue
            records = read_records(d / "requests.jsonl")
            multisets[k].append(sorted((r["input_tokens"], r["output_tokens"]) for r in records))
            edges, e, u = series[(m, k)]
            # The window again from the raw data and the run's options (the same function the run used).
            win = choose_window(records, edges, options["warmup_s"], options["window_s"])
            result = online_result(records, edges, e, loaded_w, win, window, read_polls(d / "polls.jsonl"),
                                   options["min_requests"], u, fallback)  # fmt: skip
            result.update(segment=k, drain_cut=window["drain_cut"])
            result.update(premiums(result, references.get(k), sets.get(f"same requests s{k}")))
            rate = (result.get("prefill") or {}).get("tokens_per_s")
            replays.append((m, k, records, slices(records, edges, rate), e, result))
    # The saturate replays against the server cover the full batch, which the ladder's windows do not reach.
    fit_replays = replays + [(-1.0, k, *_reference_replay(run_dir, k, series, fallback)) for k in range(len(segments))
                             if _reference_replay(run_dir, k, series, fallback) is not None]  # fmt: skip
    model, fit = _energy_model(fit_replays, loaded_w, offline_refs, sets, offline, options.get("slice_s", 0.25))
    for m in options["rates"]:
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
            "rate": m, "label": rate_label(m), "segments": windows,
            "offered_rate_per_s": _mean_of(shown, "arrival_rate_per_s"),
            "completed_rate_per_s": _mean_of(shown, "completion_rate_per_s"),
            "saturated": any(w["verdict"]["saturated"] or w["drain_cut"] for w in windows),
            "valid_segments": [w["segment"] for w in valid],
            "left_out": [{"segment": w["segment"], "reasons": w["verdict"]["reasons"]} for w in windows
                         if not w["verdict"]["valid"]],
            "requests_in_window": [w.get("steady", {}).get("completed", 0) for w in windows],
        }  # fmt: skip
        entry.update(_budgets(valid, references, sets, u_idle, u_idle_offline, sensor))
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
            "batch_size": (sets.get("reference s0") or {}).get("batch_size")
            or next((r["running_max"] for r in online_measured.values() if r), None),
            **{
                key: budget([r.get(key) for r in reference], _reference_terms(reference, key, u_idle_offline, sensor))
                for key in REFERENCE_KEYS
            },
        },
        "floor": _floor_ratios(floor, rates, reference, sets),
        "energy_model": fit,
        "offline_idle_power_w": offline.get("idle_power_w") if offline else None,
        "offline_results": offline["results"] if offline else [],
        "rates": rates,
        "counterfactual": _counterfactual(run_dir),
        "headline": _headline_figures(rates),
        "per_request": per_request,
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
        "idle_power": _rel(u_idle_w * dur, e_dyn),
    }


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
) -> dict[str, Any]:
    """Every per-rate figure over the valid windows, with its uncertainty budget."""
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
    plan: dict[str, tuple[dict[str, tuple[list[float], bool]], bool]] = {
        "j_per_output_token": ({"interpolation": (col(on, "interpolation"), False), "sensor": (sensor_all, True)},
                               False),
        "j_per_token": ({"interpolation": (col(on, "interpolation"), False),
                         "prefill_placement": (col(on, "prefill_placement"), False),
                         "sensor": (sensor_all, True)}, False),
        "j_per_input_token": ({"interpolation": (col(on, "interpolation"), False), "sensor": (sensor_all, True)},
                              False),
        "dynamic_j_per_output_token": ({"interpolation": (col(on, "interpolation_dynamic"), False),
                                        "idle_power": (col(on, "idle_power"), True),
                                        "sensor": (sensor_all, True)}, False),
        "dynamic_j_per_token": ({"interpolation": (col(on, "interpolation_dynamic"), False),
                                 "prefill_placement": (col(on, "prefill_placement"), False),
                                 "idle_power": (col(on, "idle_power"), True), "sensor": (sensor_all, True)}, False),
        "idle_share": ({}, False),
        "average_power_w": ({"interpolation": (col(on, "interpolation"), False), "sensor": (sensor_all, True)},
                            False),
        "uncertainty_j_per_output_token": ({}, False),
        "premium_output": ({"interpolation": (col(on, "interpolation"), False),
                            "reference_interpolation": (col(ref, "interpolation"), False)}, True),
        "premium_token": ({"interpolation": (col(on, "interpolation"), False),
                           "prefill_placement": (col(on, "prefill_placement"), False),
                           "reference_interpolation": (col(ref, "interpolation"), False)}, True),
        "dynamic_premium_output": ({"interpolation": (col(on, "interpolation_dynamic"), False),
                                    "idle_power": (col(on, "idle_power"), True),
                                    "reference_interpolation": (col(ref, "interpolation_dynamic"), False),
                                    "reference_idle_power": (col(ref, "idle_power"), True)}, True),
        "dynamic_premium_token": ({"interpolation": (col(on, "interpolation_dynamic"), False),
                                   "prefill_placement": (col(on, "prefill_placement"), False),
                                   "idle_power": (col(on, "idle_power"), True),
                                   "reference_interpolation": (col(ref, "interpolation_dynamic"), False),
                                   "reference_idle_power": (col(ref, "idle_power"), True)}, True),
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
    from compare.counterfactual import token_terms_j

    c = _read_json(run_dir / "counterfactual" / "counterfactual.json")
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
        "rates": [{"rate": r["rate"], "label": r["label"], "offered_rate_per_s": r["offered_rate_per_s"],
                   "segments": len(r["valid_segments"]), **{k: r[k] for k in ("j_per_output_token", *RATIOS)}}
                  for r in shown],
        "left_out": [{"rate": r["rate"], "label": r["label"],
                      "why": "saturated: a throughput figure, not an online one" if r["saturated"] else
                      "no valid window: " + "; ".join(sorted({x for lo in r["left_out"] for x in lo["reasons"]}))}
                     for r in rates if r not in shown],
    }  # fmt: skip


# -- rendering -------------------------------------------------------------------------------------


def _f(v: Any, digits: int = 3, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    text = str(v)
    if isinstance(v, float):
        text = f"{v:.{digits}g}" if abs(v) < 10**digits else f"{v:,.0f}"
    return f"{text} {unit}".rstrip()


def _ms(p: dict[str, Any] | None, key: str) -> str:
    v = (p or {}).get(key)
    return "–" if v is None else f"{1000 * v:.0f}"


def _ci(p: dict[str, Any] | None, digits: int = 3, suffix: str = "") -> str:
    """``mean [low, high] (n)`` of a ``spread``; the mean alone from one segment."""
    if not p or p.get("mean") is None:
        return "–"
    text = _f(p["mean"], digits) + suffix
    if p.get("low") is not None:
        text += f" [{_f(p['low'], digits)}, {_f(p['high'], digits)}]"
    return text + (f" (n={p['n']})" if p.get("n", 0) > 1 else "")


def _rate_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["rate", "arrivals/s", "completed/s", "valid segments", "completed in windows", "J/out-token",
            "J/token", "dynamic J/out-token", "idle share", "premium (J/out-token)", "premium (J/token)",
            "dynamic premium", "same-requests premium", "TTFT p50/p99 ms", "TPOT p50/p99 ms"]  # fmt: skip
    rows = []
    for r in s["rates"]:
        lat = r["segments"][0].get("latency_s") or {}
        rows.append([
            r["label"] + (" (saturated: throughput only)" if r["saturated"] else ""), _f(r["offered_rate_per_s"]),
            _f(r["completed_rate_per_s"]), f"{len(r['valid_segments'])}/{len(r['segments'])}",
            "/".join(str(n) for n in r["requests_in_window"]),
            _ci(r["j_per_output_token"]), _ci(r["j_per_token"]), _ci(r["dynamic_j_per_output_token"]),
            _ci(r["idle_share"], 2),
            *(("–",) * 4 if r["saturated"] else (_ci(r[k], 3, "×") for k in
              ("premium_output", "premium_token", "dynamic_premium_output", "same_requests_premium"))),
            f"{_ms(lat.get('ttft_s'), 'p50')}/{_ms(lat.get('ttft_s'), 'p99')}",
            f"{_ms(lat.get('tpot_s'), 'p50')}/{_ms(lat.get('tpot_s'), 'p99')}",
        ])  # fmt: skip
    return head, rows


def _windows_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["rate", "segment", "window s", "warm-up s (MSER-5)", "arrivals / completed", "in system start→end",
            "trend t (in system / power)", "prefill tokens/s", "J/out-token ± monitor", "verdict"]  # fmt: skip
    rows = []
    for r in s["rates"]:
        for w in r["segments"]:
            win, st = w.get("window"), w.get("steady") or {}
            if win is None:
                rows.append([r["label"], str(w["segment"]), "–", "–", "–", "–", "–", "–", "–",
                             "; ".join(w["verdict"]["reasons"])])  # fmt: skip
                continue
            n, p = st["in_system"], st["power_w"]
            pre = w.get("prefill") or {}
            rows.append([
                r["label"], str(w["segment"]), _f(win["duration_s"]), f"{_f(win['warmup_s'])} ({_f(win['mser_s'])})",
                f"{st['arrivals']} / {st['completed']}", f"{n['start']:.0f}→{n['end']:.0f}",
                f"{n['t_stat']:.1f} / {p['t_stat']:.1f}", _f(pre.get("tokens_per_s")),
                f"{_f(w.get('j_per_output_token'), 4)} ± {_f(w.get('uncertainty_j_per_output_token'), 2)}",
                "valid" if w["verdict"]["valid"] else "; ".join(w["verdict"]["reasons"]),
            ])  # fmt: skip
    return head, rows


def _idle_of(idle: dict[str, Any] | None, device: str, devices: int) -> float | None:
    """A device's idle power: its own (``devices_w``), or the total where it was the only one summed."""
    if not idle:
        return None
    return (idle.get("devices_w") or {}).get(device) or (idle.get("power_w") if devices == 1 else None)


def _devices_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Shown where more than one device is summed (one device has all of the energy: nothing to break down)."""
    idle = s["idle"]
    head = ["rate", "segment", "over", "device", "energy J", "share", "mean W", "loaded idle W", "device idle W",
            "not read s", "gap filled s"]  # fmt: skip
    rows = []
    for r in s["rates"]:
        for w in r["segments"]:
            b = w.get("devices")
            if not b or len(b["devices"]) < 2:
                continue
            for d in b["devices"]:
                missed = b["uncovered_s"].get(d["device"])
                rows.append([
                    r["label"], str(w["segment"]), b["over"], d["device"] + (" (stale)" if d.get("stale") else ""),
                    _f(d["energy_j"], 4), f"{100 * d['share']:.1f} %" if d.get("share") is not None else "–",
                    _f(d.get("average_power_w")),
                    _f(_idle_of(idle.get("loaded"), d["device"], len(b["devices"]))),
                    _f(_idle_of(idle.get("device"), d["device"], len(b["devices"]))),
                    _f(missed) if missed else "0", _f(d.get("gap_s")) if d.get("gap_s") else "0",
                ])  # fmt: skip
    return head, rows


def _reference_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["reference", "batch (running)", "steady part s", "tokens in/out", "avg power W", "J/out-token",
            "J/token", "dynamic J/out-token", "output tokens/s", "idle share"]  # fmt: skip
    ref = s["reference"]
    rows = []
    for where in ("offline", "online"):
        for r in ref.get(f"{where}_segments") or []:
            used = any(x["segment"] == r["segment"] and x["source"] == where for x in ref["segments"])
            rows.append([f"{where} s{r['segment']}" + (" (used)" if used else ""),
                         f"{ref['batch_size']} ({r['running_min']}–{r['running_max']})",
                         _f(r["duration_s"]), f"{r['input_tokens']:,.0f}/{r['output_tokens']:,.0f}",
                         _f(r["average_power_w"]),
                         f"{_f(r['j_per_output_token'], 4)} ± {_f(r['uncertainty_j_per_output_token'], 2)}"
                         + (" (short: not used)" if r["short_window"] else ""), _f(r["j_per_token"], 4),
                         _f(r["dynamic_j_per_output_token"], 4), _f(r["output_tokens_per_s"]),
                         _f(r["idle_share"], 2)])  # fmt: skip
    if len(ref["segments"]) > 1:
        rows.append([f"mean of those used ({ref['source']})", "", "", "", "", _ci(ref["j_per_output_token"], 4),
                     _ci(ref["j_per_token"], 4), _ci(ref["dynamic_j_per_output_token"], 4), "", ""])  # fmt: skip
    if ref.get("online_vs_offline"):
        rows.append(["online ÷ offline (J/out-token)", "", "", "", "", _ci(ref["online_vs_offline"], 3, "×"),
                     "", "", "", ""])  # fmt: skip
    return head, rows


BUDGETED = (("j_per_output_token", "J/out-token"), ("dynamic_j_per_output_token", "dynamic J/out-token"),
            ("premium_output", "premium"), ("dynamic_premium_output", "dynamic premium"),
            ("same_requests_premium", "same-requests premium"))  # fmt: skip


def _budget_row(what: str, b: dict[str, Any]) -> list[str]:
    terms = ", ".join(f"{k.replace('_', ' ')} {100 * v:.2g} %" for k, v in (b.get("terms") or {}).items())
    return [what, _ci(b, 4), str(b.get("n", 0)), _f(b.get("k"), 3), _f(100 * b["u_combined"], 2) + " %"
            if b.get("u_combined") is not None else "–", terms or "–",
            (b.get("dominant") or "–").replace("_", " ")]  # fmt: skip


def _budget_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["figure", "mean [95 %]", "segments", "k", "combined (relative)", "terms (relative standard uncertainty)",
            "dominant"]  # fmt: skip
    rows = []
    for key, name in (("j_per_output_token", "reference J/out-token"),
                      ("dynamic_j_per_output_token", "reference dynamic J/out-token")):  # fmt: skip
        if s["reference"].get(key, {}).get("mean") is not None:
            rows.append(_budget_row(name, s["reference"][key]))
    for r in s["rates"]:
        if not r["valid_segments"] or r["saturated"]:
            continue
        for key, name in BUDGETED:
            if r[key].get("mean") is not None:
                rows.append(_budget_row(f"{r['label']}: {name}", r[key]))
    return head, rows


def _counterfactual_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    c = s.get("counterfactual")
    head = ["order", "left out", "E(A) J", "E(B) J", "ΔE J", "attributed (dynamic) J", "attributed ÷ ΔE",
            "token terms α·in + β·out J", "token terms ÷ ΔE"]  # fmt: skip
    if not c:
        return head, []

    def ratio(v: float | None) -> str:
        return "–" if v is None else f"{v:.3g}×"

    return head, [[c["order"], f"one in {c['leave_out_every']} ({c['left_out']} of {c['requests_a']})",
                   "/".join(_f(v, 5) for v in c["energy_a_j"]), "/".join(_f(v, 5) for v in c["energy_b_j"]),
                   f"{_f(c['delta_j'], 4)} ± {_f(c['delta_uncertainty_j'], 2)}", _f(c["attributed_dynamic_j"], 4),
                   ratio(c["ratio"]), _f(c.get("token_terms_j"), 4), ratio(c.get("token_terms_ratio"))]]  # fmt: skip


def _floor_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    f = s.get("floor")
    if not f:
        return ["floor"], [["not known here (no GPU in the table, or the model's size unknown)"]]
    head = ["estimand", "J/token (input + output)", "÷ floor"]
    rows = [["physical floor", _f(f["j_per_token"], 4), "1"]]
    for name, ratio in f["ratios"].items():
        if ratio is not None:
            rows.append([name, _f(ratio * f["j_per_token"], 4), f"{ratio:.3g}×"])
    return head, rows


def _workload_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["segment", "from s", "requests", "span s (at 1×)", "mean in/out tokens", "longer than the context"]
    rows = [[str(w["segment"]), _f(w["start_s"]), str(w["requests"]), _f(w["span_s"]),
             f"{w['input_tokens_mean']:.0f}/{w['output_tokens_mean']:.0f}",
             (w.get("overlong") or {}).get("text") or "none"] for w in s["workload"]["segments"]]  # fmt: skip
    return head, rows


def _attribution_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["rate", "segment", "view", "replay energy J", "to requests J", "unattributed J", "J/request p50/p90/p99",
            "J/out-token per request p50/p90/p99", "median ± (model)"]  # fmt: skip
    rows = []
    for r in s["rates"]:
        w = r["segments"][0]
        a = w["attribution"]
        for view in ("attributional", "dynamic"):
            v = a[view]
            jr, jo = v["j_per_request"], v["j_per_output_token"]
            rel = v.get("relative_se_median")
            rows.append([
                r["label"], str(w["segment"]), view, _f(a["replay_energy_j"], 4), _f(v["requests_j"], 4),
                _f(v["unattributed_j"], 4), "/".join(_f(jr[p]) for p in ("p50", "p90", "p99")),
                "/".join(_f(jo[p]) for p in ("p50", "p90", "p99")), "–" if rel is None else f"{100 * rel:.2g} %",
            ])  # fmt: skip
    return head, rows


def _model_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    m = s["energy_model"]
    head = ["", "value", "check: measured dynamic J", "predicted", "error"]
    if "se" not in m:
        return head, [[m["fit"], "", "", "", ""]]
    rows = [[name, f"{_f(m[key], 4)} ± {_f(m['se'][key], 2)}", "", "", ""] for key, name in
            (("step_j", "c, J per engine step"), ("prefill_j_per_token", "α, J per prefill token"),
             ("decode_j_per_token", "β, J per decode token"))]  # fmt: skip
    rows.append(["R² (rows)", f"{_f(m['r2'], 3)} ({m['rows']})", "", "", ""])
    for c in m["checks"]:
        err = c["error_percent"]
        rows.append([f"check: {c['set']}", "", _f(c["measured_dynamic_j"], 4), _f(c["predicted_dynamic_j"], 4),
                     "–" if err is None else f"{err:+.1f} %"])  # fmt: skip
    return head, rows


def _binning_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["rate", "bins (batches)", "requests in bins / beyond", "ceiling inflation", "binning estimate J",
            "offline, same requests J", "gap offline", "measured online J", "gap online", "with idle term J",
            "gap with idle"]  # fmt: skip
    rows = []
    for r in s["rates"]:
        b = r["segments"][0].get("binning")
        if not b:
            continue
        if "error" in b:
            rows.append([r["label"], "–", "–", "–", f"not estimated: {b['error']}", *("–",) * 6])
            continue

        def pct(v: float | None) -> str:
            return "–" if v is None else f"{v:+.1f} %"

        sizes = b.get("batch_sizes") or []
        batches = f"{min(sizes)}–{max(sizes)}" if sizes else "–"
        estimate = f"{_f(b['estimate_j'], 4)} ± {_f(b['estimate_uncertainty_j'], 2)}"
        rows.append([r["label"], f"{b['bins']} ({batches})", f"{b['included']}/{b['excluded']}",
                     f"×{_f(b['ceiling_inflation'], 3)}", estimate, _f(b["offline_same_requests_j"], 4),
                     pct(b["gap_offline_percent"]), _f(b["measured_j"], 4), pct(b["gap_percent"]),
                     _f(b["estimate_with_idle_j"], 4), pct(b["gap_with_idle_percent"])])  # fmt: skip
    return head, rows


def _offline_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["set", "batch", "requests", "in/out tokens", "time s", "avg power W", "J/token", "J/out-token",
            "dynamic J/out-token"]  # fmt: skip
    rows = [[r.get("label", "") + (" (short window)" if r.get("short_window") else ""), str(r["batch_size"]),
             str(r["requests"]), f"{r['input_tokens']}/{r['output_tokens']}", _f(r["duration_s"]),
             _f(r["average_power_w"]), _f(r["j_per_token"]), _f(r["j_per_output_token"]),
             _f(r["dynamic_j_per_output_token"])] for r in s["offline_results"]]  # fmt: skip
    return head, rows


def _provenance(s: dict[str, Any]) -> list[str]:
    c = s["config"]
    eng = c.get("engine") or {}
    lines = [
        f"Command: `{' '.join(c.get('command') or [])}` (joulebench {c.get('joulebench')}, {c.get('date')})",
        f"Model: {c.get('preset') or c.get('model')}, **weights: {c.get('weights')}**; vLLM "
        f"{(c.get('vllm') or {}).get('version')} ({(c.get('vllm') or {}).get('distribution')}); max batch "
        f"{eng.get('max_num_seqs')}, max_model_len {c.get('max_model_len') or eng.get('max_model_len')}, "
        f"{'eager' if eng.get('enforce_eager') else 'compiled'}, dtype {eng.get('dtype')}, seed {eng.get('seed')}",
        f"Trace: {(c.get('trace') or {}).get('name')} ({(c.get('trace') or {}).get('requests')} requests, "
        f"{_f((c.get('trace') or {}).get('rate_per_s'))} req/s); workload: "
        f"{len(s['workload']['segments'])} segment(s) of "
        f"{s['workload']['segments'][0]['requests'] if s['workload']['segments'] else 0} requests, the same "
        f"requests at every rate ({'checked' if s['workload']['identical_across_rates'] else 'NOT identical'})",
        f"Hardware: {(c.get('hardware') or {}).get('cpu')} × {(c.get('hardware') or {}).get('cpus')} CPUs, "
        f"{(c.get('hardware') or {}).get('platform')}",
    ]
    for d in s["devices"]:
        st = d.get("status") or {}
        extra = ", ".join(
            f"{k} {v}"
            for k, v in (
                ("name", d.get("name")),
                ("method", d.get("method")),
                ("SM clock MHz", st.get("sm_clock_hz") and round(st["sm_clock_hz"] / 1e6)),
                ("memory clock MHz", st.get("memory_clock_hz") and round(st["memory_clock_hz"] / 1e6)),
                ("power limit W", st.get("power_limit_w")),
            )
            if v
        )
        lines.append(f"Device {d.get('device')}: source {d.get('source')}" + (f" ({extra})" if extra else ""))
    if measured_kind(s["devices"]) == "attributed":
        lines.append("Energy: **attributed to vLLM's processes** (cpu_time_share: their CPU time ÷ the host's busy CPU "
                     "time × host power above idle); the host total is beside it in each window.json")  # fmt: skip
    idle = s["idle"]
    parts = []
    for name, what in (("device", "device idle (no vLLM)"), ("loaded", "loaded idle (vLLM up, serving nothing)")):
        if name in idle:
            p = idle[name]
            parts.append(f"{what} {p['power_w']:.1f} W" + ("" if p["stable"] else " (did not settle)"))
    if parts:
        lines.append("Idle power: " + "; ".join(parts))
    lines.append(f"Energy model (attribution): {s['energy_model']['fit']}")
    return lines


def _estimated_banner(s: dict[str, Any]) -> str:
    if not s["estimated"]:
        return ""
    return (
        "**The energy in this report is ESTIMATED, not measured**: this machine has no NVML or RAPL, so host "
        "power was modelled from CPU utilization (Cloud Carbon Footprint's coefficients). Trends across rates "
        "are meaningful; absolute joules are not."
    )


def _headline(s: dict[str, Any]) -> str:
    h = s["headline"]
    ref = s["reference"]["j_per_output_token"]
    if not h["rates"]:
        why = "; ".join(f"{x['label']}: {x['why']}" for x in h["left_out"]) or "no rate was measured"
        return f"No premium: no rate has a valid window ({why})."
    if ref.get("mean") is None:
        measured = s["reference"]["offline_segments"] + s["reference"]["online_segments"]
        short = [f"{r['duration_s']:.2f} s" for r in measured if r["short_window"]]
        why = (
            f"its steady part is shorter than two updates of the energy counter: {', '.join(short)}"
            if short
            else "none is valid: see the saturated reference below"
            if measured
            else "none was measured"
        )
        return f"No valid saturated reference ({why}): no premium. " + "; ".join(
            f"{r['label']}: {_ci(r['j_per_output_token'], 3)} J/out-token" for r in h["rates"]
        )
    parts = [f"{r['label']} ({_f(r['offered_rate_per_s'])} arrivals/s): {_ci(r['premium_output'], 3, '×')}"
             for r in h["rates"]]  # fmt: skip
    text = (f"Online, an output token cost {'; '.join(parts)} the saturated reference's "
            f"{_ci(ref, 4)} J/out-token (batch {s['reference']['batch_size']}, steady state; valid windows only, "
            "95 % intervals over trace segments where there are several).")  # fmt: skip
    if h["left_out"]:
        text += " Left out: " + "; ".join(f"{x['label']} ({x['why']})" for x in h["left_out"]) + "."
    return text


def _definitions(s: dict[str, Any]) -> list[str]:
    return [f"**{k.replace('_', ' ')}**: {v}" for k, v in s["definitions"].items()]


def _plots(s: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    paths: dict[str, Path] = {}
    rates = s["rates"]
    unit = " (estimated)" if s["estimated"] else ""
    if not rates:
        return paths

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, color, name in (("j_per_output_token", "C0", "online"), ("dynamic_j_per_output_token", "C2",
                                                                        "online, dynamic")):  # fmt: skip
        for w_valid in (True, False):
            pts = [(w.get("steady", {}).get("arrival_rate_per_s"), w.get(key)) for r in rates for w in r["segments"]
                   if w["verdict"]["valid"] is w_valid and w.get(key)]  # fmt: skip
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, "o" if w_valid else "x", color=color, alpha=0.5 if w_valid else 0.35,
                        label=f"{name}{'' if w_valid else ' (not valid)'}")  # fmt: skip
        means = [(r["offered_rate_per_s"], r[key]["mean"]) for r in rates if r[key]["mean"]]
        if means:
            ax.plot(*zip(*means, strict=True), "-", color=color)
    for key, style, name in (("j_per_output_token", "--", "saturated reference"),
                             ("dynamic_j_per_output_token", ":", "reference, dynamic")):  # fmt: skip
        ref = s["reference"][key]["mean"]
        if ref:
            ax.axhline(ref, color="C1", ls=style, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arrival rate in the window (requests/s)")
    ax.set_ylabel(f"J per output token{unit}")
    ax.set_title("Energy per output token against arrival rate")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    paths["j_per_token"] = _save(fig, out_dir / "j_per_token_vs_rate.png")

    series = _energy_series(run_dir / "energy.csv")
    fig, axes = plt.subplots(len(rates), 1, figsize=(8, 1.8 * len(rates) + 0.6), squeeze=False)
    loaded = s["idle"].get("loaded", {}).get("power_w")
    for ax, r in zip(axes[:, 0], rates, strict=True):
        w0 = r["segments"][0]
        key = (r["rate"], w0["segment"])
        if key not in series:
            continue
        edges, e, _ = series[key]
        t0 = edges[0]
        ax.stairs(e / np.diff(edges), edges - t0, color="C0", label="power")
        if w0.get("window"):
            w = w0["window"]
            ax.axvspan(w["start_s"] - t0, w["end_s"] - t0, color="C2" if w0["verdict"]["valid"] else "C3",
                       alpha=0.12, label="steady-state window")  # fmt: skip
        if loaded is not None:
            ax.axhline(loaded, color="C1", ls="--", lw=1, label="loaded idle")
        sent = [p["sent_s"] - t0 for p in s["per_request"] if p["rate"] == r["rate"] and p["segment"] == w0["segment"]]
        ax.plot(sent, np.zeros(len(sent)), "|", color="k", ms=8, label="arrivals")
        ax.set_ylabel(f"{r['label']}\nW")
        ax.set_ylim(bottom=0)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the replay's first request")
    fig.suptitle(f"Power over time, arrivals marked (segment {rates[0]['segments'][0]['segment']}){unit}")
    paths["power"] = _save(fig, out_dir / "power_over_time.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, r in enumerate(rates):
        v = np.sort([p["energy_j"] for p in s["per_request"] if p["rate"] == r["rate"]])
        if len(v):
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), color=f"C{i}", label=r["label"])
    ax.set_xscale("log")
    ax.set_xlabel(f"J per request (attributional){unit}")
    ax.set_ylabel("share of requests (ECDF)")
    ax.set_title("Per-request energy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    paths["per_request"] = _save(fig, out_dir / "per_request_energy.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, r in enumerate(rates):
        pts = [(p["e2e_s"], p["energy_j"]) for p in s["per_request"] if p["rate"] == r["rate"] and p["e2e_s"]]
        if pts:
            x, y = zip(*pts, strict=True)
            ax.scatter(x, y, s=6, alpha=0.5, color=f"C{i}", label=r["label"])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("end-to-end latency (s)")
    ax.set_ylabel(f"J per request{unit}")
    ax.set_title("Latency against energy, per request")
    ax.legend(fontsize=8, markerscale=3)
    ax.grid(alpha=0.3)
    paths["latency"] = _save(fig, out_dir / "latency_vs_energy.png")
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "(none)\n"
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


_SECTIONS = (
    ("Online against the saturated reference, per rate", _rate_table,
     "Figures are means over the rate's valid windows (one per trace segment) with 95 % intervals (Student's t over "
     "segments; ratios on the log scale) where there are two or more. J/token: the steady-state window's energy ÷ "
     "the tokens processed in it. Premium: online ÷ the saturated reference of the same segment. Same-requests "
     "premium: the whole replay's energy ÷ the same requests served offline at once. A saturated rate is a "
     "throughput figure: no premium."),
    ("Windows and their verdicts", _windows_table,
     "Each replay's steady-state window: from the end of the warm-up (the later of --warmup-s and MSER-5 on the "
     "requests in system) to the last arrival. Trend t: Student's t of the slope of five block means (|t| > 3.18 "
     "and a material change make a window not steady). ± monitor: the energy monitor's interpolation only."),
    ("Energy per device", _devices_table,
     "Each summed device's energy over the window (or, where the monitor did not read the window itself, over the "
     "whole replay), its share and mean power, beside its idle power. Not read: seconds of the window the device's "
     "counter did not reach (stale at the end): the sum is then too small and the window is left out. Gap filled: "
     "seconds between counter segments (a driver reload, a stale spell it came back from), estimated from power "
     "with their whole energy as uncertainty."),
    ("Uncertainty budget", _budget_table,
     "Each figure's standard uncertainties relative to its mean (GUM): type A, the spread over trace segments "
     "(s/√n); type B, the monitor's counter interpolation, where prefill tokens fall at a window's edges, the "
     "loaded-idle power (dynamic figures), the reference's own terms, and the sensor's documented accuracy (a gain "
     "error, so it cancels in premiums). 95 %: ±k·u_c, k from the Welch–Satterthwaite degrees of freedom."),
    ("Physical floor", _floor_table,
     "The compute-bound floor: board power limit ÷ peak dense BF16 rate × 2 × parameters (datasheet figures in "
     "summary.json); measured ÷ floor says how far each estimand is from it (Fernandez et al. 2025, Table 4)."),
    ("The saturated reference", _reference_table,
     "The segment's lengths (sampled) served closed loop with --max-num-seqs running, measured from when the start "
     "cohort has all had its first token (the start's prefill burst is over) to when the pool runs dry: offline "
     "(vLLM's engine driven directly) and, unless "
     "--online-reference off, online (a saturate replay against the running server). Each segment's premium divides "
     "by its offline reference where that is valid (at least two counter updates long), else by the online one."),
    ("Workload", _workload_table, "The same requests at every rate: only their arrival times change."),
    ("Energy attributed to requests", _attribution_table,
     "Each slice's dynamic energy (less loaded-idle power) is shared among the requests working in it by their "
     "modelled cost there (the energy model below); attributional adds the loaded-idle power of the time any "
     "request is in service, shared by time in service; idle with none in service stays unattributed. Requests "
     "+ unattributed = the replay's measured energy. ± (model): the median request's standard error from the "
     "model's parameters (jackknife)."),
    ("Counterfactual check of the attribution", _counterfactual_table,
     "The same schedule with every request (A) and with every K-th left out (B), ABBA, each read over the same span: "
     "ΔE = E(A) − E(B) is what the left-out requests cost; the attribution of run A charges them its dynamic energy "
     "(run with --counterfactual K). The attribution shares average costs (each slice's step cost among the "
     "requests in it); ΔE is the marginal cost, which the step cost largely is not: the token terms alone show "
     "how much of the gap that is."),
    ("Energy model", _model_table,
     "Fitted on every online slice of this run and the references' steady parts: E − P_idle·Δt = c·steps + "
     "α·prefill + β·decode (non-negative least squares; ± the jackknife over replays). Checked against the "
     "offline sets it did not see."),
    ("Binning estimate (Fernandez et al. 2025)", _binning_table,
     "One offline batch per (input, output) ceiling bin, at the largest batch the KV cache and the max batch hold; "
     "the estimate sums N(bin)/B · E(bin) (a partial batch as N/B of a batch). Checked first against the same "
     "requests served offline at once, then against the measured online energy (the share attributed to the "
     "requests within the largest bins); with the idle term, loaded-idle power × the replay's time the batches do "
     "not cover. Ceiling inflation: the bins' tokens ÷ the requests' own. Gap: (estimate − measured) ÷ measured."),
    ("Offline runs", _offline_table,
     "Every set served offline (same requests, references, the fit's calibration sets, bins)."),
)  # fmt: skip


def _status(config: dict[str, Any]) -> str:
    """The report's line on an incomplete run: why it stopped, and what it could not measure."""
    if config.get("complete"):
        return ""
    problems = config.get("problems") or []
    counted = f"{len(problems)} problem{'s' * (len(problems) != 1)}" if problems else "it did not finish"
    return f"**Incomplete run** ({config.get('interrupted') or counted})." + "".join(f"\n- {p}" for p in problems)


#: The raw data a run directory keeps, by file name: what ``compress_raw`` gzips.
RAW = ("requests.jsonl", "polls.jsonl", "energy.csv")


def compress_raw(run_dir: Path) -> list[Path]:
    """Gzip the run directory's raw data in place (``RAW``; the readers take the ``.gz``)."""
    import gzip
    import shutil

    done = []
    for path in sorted(p for name in RAW for p in run_dir.rglob(name)):
        target = path.with_name(path.name + ".gz")
        with path.open("rb") as src, gzip.open(target, "wb", compresslevel=9) as dst:
            shutil.copyfileobj(src, dst)
        path.unlink()
        done.append(target)
    return done


def write_report(run_dir: Path) -> dict[str, Path]:
    """Analyse the run directory and write ``summary.json``, ``report.md``, ``report.html`` and ``plots/``."""
    from compare.experiment import write_json

    s = analyze(run_dir)
    per_request = s.pop("per_request")
    write_json(run_dir / "summary.json", s)
    s["per_request"] = per_request
    with (run_dir / "per_request.csv").open("w", newline="") as f:
        if per_request:
            w = csv.DictWriter(f, fieldnames=list(per_request[0]))
            w.writeheader()
            w.writerows(per_request)
    plots = _plots(s, run_dir)
    title = f"joulebench: online vs offline energy per token — {s['config'].get('preset') or s['config'].get('model')}"
    status = _status(s["config"])
    banner = _estimated_banner(s)

    md = [f"# {title}", ""]
    md += [x + "\n" for x in (banner, status) if x]
    md += [_headline(s), ""]
    md += [f"- {line}" for line in _provenance(s)] + [""]
    md += ["## What each figure estimates", ""] + [f"- {line}" for line in _definitions(s)] + [""]
    for name, table, note in _SECTIONS:
        head, rows = table(s)
        if rows or table is not _devices_table:
            md += [f"## {name}", "", note, "", _md_table(head, rows)]
    md += ["## Plots", ""] + [f"![{k}](plots/{p.name})" for k, p in plots.items()] + [""]
    (run_dir / "report.md").write_text("\n".join(md))

    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style>"
         f"</head><body><h1>{html.escape(title)}</h1>"]  # fmt: skip
    h += [f"<p class='warn'>{_md_inline(x)}</p>".replace("\n- ", "<br>– ") for x in (banner, status) if x]
    h += [f"<p>{html.escape(_headline(s))}</p><ul>"]
    h += [f"<li>{_md_inline(line)}</li>" for line in _provenance(s)] + ["</ul>"]
    h += ["<h2>What each figure estimates</h2><ul>"] + [f"<li>{_md_inline(x)}</li>" for x in _definitions(s)]
    h += ["</ul>"]
    for name, table, note in _SECTIONS:
        head, rows = table(s)
        if rows or table is not _devices_table:
            h += [f"<h2>{html.escape(name)}</h2><p class='note'>{html.escape(note)}</p>", _html_table(head, rows)]
    h += ["<h2>Plots</h2>"]
    for k, p in plots.items():
        data = base64.b64encode(p.read_bytes()).decode()
        h.append(f"<figure><img alt='{k}' src='data:image/png;base64,{data}'></figure>")
    h.append("</body></html>")
    (run_dir / "report.html").write_text("\n".join(h))
    return {"md": run_dir / "report.md", "html": run_dir / "report.html", "summary": run_dir / "summary.json"}


def _md_inline(text: str) -> str:
    """Escape, then the two Markdown marks the report uses inline: **bold** and `code`."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;"
    "text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}.warn{background:#fff3cd;padding:.6em;"
    "border:1px solid #e0c060}.note{color:#555;font-size:13px}img{max-width:100%}"
)
