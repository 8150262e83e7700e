"""The comparison's estimands: pure functions over records, energy slices and offline results, so a
finished run's directory can be analysed again (``joulebench report``).

Each is defined here, once, and the report and ``summary.json`` repeat the definitions (``DEFINITIONS``):

- **online J per output token / per token** of a replay: the energy of its steady-state window
  (``estimands.windows``) ÷ the output (input + output) tokens processed inside it — prefill counted where
  the engine did it (``estimands.tokens.prefill_interval``), decode at each chunk; *attributional* (all the
  window's energy) and *dynamic* (less loaded-idle power × the window's length);
- **the saturated reference**: the same workload's lengths at a full batch (``--max-num-seqs`` running, closed
  loop) over its steady part (``estimands.reference``), online or offline: the floor of this stack, which
  depends on neither the window, the warm-up nor the load;
- **the premium** = the window's energy ÷ what its work costs at the reference's prices (``estimands.prices``):
  one number, whichever tokens a J/token counts; the **dynamic premium** the same with dynamic energies;
- **the same-requests premium**: the energy a replay spent on its fixed set of requests (from its first
  send to its last token) ÷ the offline energy of exactly those requests given to ``LLM.generate`` at once.

Only valid windows (``windows.verdict``) enter a headline; a saturated rate is a throughput figure.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from estimands.attribution import EnergyModel, Slices, attribute
from estimands.engine import prefill_rate, server_in_system, throttle_reasons, throttle_shares
from estimands.prices import Prices, premium
from estimands.summary import percentiles
from estimands.tokens import tokens_in_window
from estimands.windows import Window, slices_in, steadiness, verdict

#: Device kinds in order of relevance: a reading sums the first kind it has (``monitor.meter``).
KIND_ORDER = ("gpu", "attributed", "cpu", "host")


def measured_kind(devices: list[dict[str, Any]]) -> str | None:
    """The kind of device a reading sums, from the devices' JSON (``/v1/devices``, ``/v1/energy``)."""
    kinds = {d.get("kind") for d in devices}
    return next((k for k in KIND_ORDER if k in kinds), None)


DEFINITIONS = {
    "online_j_per_output_token": "the steady-state window's energy ÷ the output tokens processed in it",
    "online_j_per_token": "the steady-state window's energy ÷ the input + output tokens processed in it (prefill "
    "where the engine did it, decode at each chunk)",
    "dynamic": "the same, less the server's loaded-idle power × the window's length",
    "reference": "the same workload's lengths served closed loop at a full batch (--max-num-seqs running), over "
    "its steady part (from when every request of the start cohort has ended to the last send), valid only with "
    "its pool's input/output mix (±5 %) and halves that agree (±5 %): the saturated reference, the floor of this "
    "stack",
    "prices": "at saturation E = a·prefill tokens + b·decode tokens: r = a/b fitted on the reference's energy "
    "slices (and the offline calibration sets where they ran), the scale b from each segment's reference",
    "premium": "the window's energy ÷ what the same work (its prefill and decode tokens) costs at the saturated "
    "reference's prices: one premium, whichever tokens a J/token counts",
    "dynamic_premium": "the same with dynamic energies (less loaded-idle power × time) and dynamic prices",
    "same_requests_premium": "the replay's energy from its first send to its last token ÷ the offline energy of "
    "exactly those requests given to LLM.generate at once",
    "valid": "steady (no significant, material trend of requests in system or power), not saturated, enough "
    "completed requests, at least two counter updates long, clocks not throttled, clocks in step",
}


def _per(energy_j: float, tokens: float) -> float | None:
    return energy_j / tokens if tokens > 0 else None


def window_energy(
    edges: Sequence[float],
    slice_energy_j: Sequence[float],
    slice_uncertainty_j: Sequence[float],
    window: Window,
    reading: Mapping[str, Any] | None,
) -> tuple[float, float, bool]:
    """The window's energy, its uncertainty and whether it is shorter than two counter updates: the
    monitor's reading of exactly this window if there is one, else the sum of its slices (edges'
    uncertainty from the first and last slice, a bound: each slice's includes both its edges)."""
    if (
        reading is not None
        and math.isclose(reading["start_s"], window.start_s, abs_tol=1e-6)
        and math.isclose(reading["end_s"], window.end_s, abs_tol=1e-6)
    ):
        return float(reading["energy_j"]), float(reading["uncertainty_j"]), bool(reading["short_window"])
    k = slices_in(edges, window)
    u = np.asarray(slice_uncertainty_j, dtype=float)[k]
    e = float(np.sum(np.asarray(slice_energy_j, dtype=float)[k]))
    return e, float(math.hypot(u[0], u[-1])) if len(u) else 0.0, False


def device_breakdown(window_record: Mapping[str, Any], window: Window | None) -> dict[str, Any] | None:
    """The summed devices' own energies: of the window when the monitor read exactly it, else of the
    whole replay (its series span); each device's share, coverage and stale flag, and the devices whose
    counter did not reach across it (``MeterReading.uncovered_s``). None for runs recorded before."""
    reading = window_record.get("reading")
    over = "window"
    if not (
        reading is not None
        and window is not None
        and math.isclose(reading["start_s"], window.start_s, abs_tol=1e-6)
        and math.isclose(reading["end_s"], window.end_s, abs_tol=1e-6)
    ):
        reading, over = window_record.get("span_reading"), "replay"
    if not reading or not reading.get("devices"):
        return None
    kind = reading.get("kind") or measured_kind(list(reading["devices"].values()))  # runs before it was kept
    summed = [d for d in reading["devices"].values() if d.get("kind") == kind]
    total = sum(d["energy_j"] for d in summed)
    span = reading["end_s"] - reading["start_s"]

    def one(d: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "device": d["device"], "source": d.get("source"), "energy_j": d["energy_j"],
            "uncertainty_j": d["uncertainty_j"], "average_power_w": d["energy_j"] / span if span > 0 else None,
            "share": d["energy_j"] / total if total > 0 else None, "covered_s": d.get("covered_s"),
            "gap_s": d.get("gap_s"), "stale": d.get("stale"),
        }  # fmt: skip

    return {
        "over": over,
        "start_s": reading["start_s"],
        "end_s": reading["end_s"],
        "energy_j": total,
        "devices": [one(d) for d in sorted(summed, key=lambda d: d["device"])],
        "uncovered_s": dict(reading.get("uncovered_s") or {}),
    }


def online_result(
    records: Sequence[Mapping[str, Any]],
    edges: Sequence[float],
    slice_energy_j: Sequence[float],
    loaded_idle_w: float,
    window: Window | None,
    window_record: Mapping[str, Any],
    polls: Sequence[Mapping[str, Any]],
    min_requests: int,
    slice_uncertainty_j: Sequence[float] | None = None,
    prefill_fallback: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One replay's steady-state ``window`` (``windows.choose_window``): its figures, its tests and its
    verdict, from the dense series over the replay, ``window.json`` (the monitor's reading of the window,
    the clock offset) and the polls of vLLM and the monitor."""
    e_all = np.asarray(slice_energy_j, dtype=float)
    u_all = np.zeros_like(e_all) if slice_uncertainty_j is None else np.asarray(slice_uncertainty_j, dtype=float)
    series_j = float(e_all.sum())
    span = float(edges[-1] - edges[0])
    out: dict[str, Any] = {
        "requests": len(records),
        "statuses": dict(Counter(r["status"] for r in records)),
        "same_requests": {
            "online_energy_j": series_j,
            "uncertainty_j": float(np.hypot(u_all[0], u_all[-1])) if len(u_all) else 0.0,  # its two edges
            "online_dynamic_energy_j": series_j - loaded_idle_w * span,
            "duration_s": span,
            # every request served, and every summed device read across the replay
            "ok": all(r["status"] == "ok" for r in records)
            and not ((window_record.get("span_reading") or {}).get("uncovered_s")),
        },
        "loaded_idle_power_w": loaded_idle_w,
    }
    if window is None:
        out["window"] = None
        out["verdict"] = {"valid": False, "saturated": False,
                          "reasons": ["no window: the arrival phase ends before the warm-up"]}  # fmt: skip
        return out
    t0, t1, dur = window.start_s, window.end_s, window.duration_s
    e, u, short = window_energy(edges, e_all, u_all, window, window_record.get("reading"))
    prefill = prefill_rate(polls) or prefill_fallback
    rate = prefill["tokens_per_s"] if prefill else None
    n_in, n_out = tokens_in_window(records, t0, t1, rate)
    # Where prefill tokens fall at the window's edges: half the change when the rate is halved and doubled
    # (without a rate: between spreading from send and putting it all at the first token).
    lo_rate, hi_rate = (rate / 2, rate * 2) if rate else (None, 1e15)
    u_in = abs(tokens_in_window(records, t0, t1, hi_rate)[0] - tokens_in_window(records, t0, t1, lo_rate)[0]) / 2
    steady = steadiness(records, edges, e_all, window, server_in_system(polls))
    clock = (window_record.get("clock") or {}).get("offset_s")
    devices = device_breakdown(window_record, window)
    v = verdict(steady, min_requests, short, throttle_reasons(polls, t0, t1), clock,
                (devices or {}).get("uncovered_s") or {})  # fmt: skip
    e_dyn = e - loaded_idle_w * dur
    done = [r for r in records if r["status"] == "ok" and t0 <= (r.get("last_token_s") or -math.inf) < t1]
    in_window = [r for r in records if t0 <= r["scheduled_s"] < t1]
    ok_in_window = [r for r in in_window if r["status"] == "ok"]
    out.update({
        "window": window.record(),
        "verdict": v,
        "devices": devices,
        "steady": steady,
        "prefill": prefill,
        "clock": window_record.get("clock"),
        "throttle_reasons": throttle_reasons(polls, t0, t1),
        "throttle_shares": throttle_shares(polls, t0, t1),
        "tokens": {"input": n_in, "output": n_out, "total": n_in + n_out, "input_uncertainty": u_in},
        "tokens_per_s": {"input": n_in / dur, "output": n_out / dur},
        "mix": {"input_tokens_mean": _mean([r["usage_input_tokens"] for r in done]),
                "output_tokens_mean": _mean([r["usage_output_tokens"] for r in done])},
        "energy_j": e, "uncertainty_j": u, "short_window": short, "average_power_w": e / dur,
        "idle_share": min(1.0, loaded_idle_w * dur / e) if e > 0 else None,
        "j_per_input_token": _per(e, n_in), "j_per_output_token": _per(e, n_out), "j_per_token": _per(e, n_in + n_out),
        "dynamic_j_per_output_token": _per(e_dyn, n_out), "dynamic_j_per_token": _per(e_dyn, n_in + n_out),
        "uncertainty_j_per_output_token": _per(u, n_out),
        "tokens_per_joule": (n_in + n_out) / e if e > 0 else None,
        "latency_s": {
            name: percentiles([v for r in ok_in_window if (v := r.get(name)) is not None])
            for name in ("ttft_s", "tpot_s", "e2e_s", "ttft_from_schedule_s")
        },
        "schedule_lag_s": percentiles([v for r in in_window if (v := r.get("schedule_lag_s")) is not None]),
    })  # fmt: skip
    return out


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def attribution_result(
    records: Sequence[Mapping[str, Any]],
    s: Slices,
    slice_energy_j: Sequence[float],
    loaded_idle_w: float,
    model: EnergyModel,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Energy attributed to a replay's requests (attributional and dynamic), each request's with the
    jackknife standard error of the model's parameters, and the distributions."""
    a = attribute(s, slice_energy_j, loaded_idle_w, model)
    reps = [attribute(s, slice_energy_j, loaded_idle_w, m) for m in model.replicas()]
    g = len(reps)

    def se(values: list[np.ndarray]) -> np.ndarray:
        if g < 3:
            return np.full(len(records), math.nan)
        v = np.array(values)
        return np.sqrt((g - 1) / g * ((v - v.mean(axis=0)) ** 2).sum(axis=0))

    se_attr, se_dyn = se([r.attributional_j for r in reps]), se([r.dynamic_j for r in reps])
    outs = np.array([r.get("usage_output_tokens") or 0 for r in records], dtype=float)
    ok = np.array([r["status"] == "ok" for r in records], dtype=bool)

    def dist(per_request: np.ndarray, err: np.ndarray) -> dict[str, Any]:
        with np.errstate(divide="ignore", invalid="ignore"):
            per_out = per_request / outs
            rel = np.abs(err / per_request)
        return {
            "requests_j": float(per_request.sum()),
            "j_per_request": percentiles(per_request[ok].tolist()),
            "j_per_output_token": percentiles(per_out[ok & (outs > 0)].tolist()),
            "relative_se_median": float(np.nanmedian(rel[ok])) if ok.any() and np.isfinite(rel[ok]).any() else None,
        }

    result = {
        "replay_energy_j": a.total_j,
        "attributional": {**dist(a.attributional_j, se_attr), "unattributed_j": a.unattributed_j,
                          "unattributed_idle_j": a.unattributed_idle_j,
                          "unattributed_dynamic_j": a.unattributed_dynamic_j},
        "dynamic": {**dist(a.dynamic_j, se_dyn), "unattributed_j": a.total_j - float(a.dynamic_j.sum())},
    }  # fmt: skip
    return result, {"attributional": a.attributional_j, "dynamic": a.dynamic_j, "attributional_se": se_attr,
                    "dynamic_se": se_dyn}  # fmt: skip


def premiums(
    online: Mapping[str, Any],
    reference: Mapping[str, Any] | None,
    same: Mapping[str, Any] | None,
    prices: Prices | None,
    dynamic_prices: Prices | None,
) -> dict[str, float | None]:
    """One window's premiums: its energy ÷ what its work costs at its segment's saturated reference
    (``reference``: a steady part; ``estimands.prices``), attributional and dynamic; and, for the whole replay,
    its energy ÷ the same requests served offline at once (``same``)."""
    out: dict[str, float | None] = {"premium": None, "dynamic_premium": None}
    tokens = (online.get("tokens") or {}).get("input"), (online.get("tokens") or {}).get("output")
    if reference and tokens[0] is not None and tokens[1] is not None:
        ref_tokens = (reference["input_tokens"], reference["output_tokens"])
        dyn = online["energy_j"] - online["loaded_idle_power_w"] * online["window"]["duration_s"]
        if prices is not None:
            out["premium"] = premium(online["energy_j"], tokens, reference["energy_j"], ref_tokens, prices.ratio)
        if dynamic_prices is not None:
            out["dynamic_premium"] = premium(dyn, tokens, reference["dynamic_energy_j"], ref_tokens,
                                             dynamic_prices.ratio)  # fmt: skip
    s = online.get("same_requests") or {}
    if same is not None and same.get("energy_j", 0) > 0 and s.get("ok"):
        out["same_requests_premium"] = s["online_energy_j"] / same["energy_j"]
        dyn_same = same.get("dynamic_energy_j")
        out["same_requests_dynamic_premium"] = (
            s["online_dynamic_energy_j"] / dyn_same if dyn_same and dyn_same > 0 and s["online_dynamic_energy_j"] > 0
            else None
        )  # fmt: skip
    else:
        out["same_requests_premium"] = out["same_requests_dynamic_premium"] = None
    return out
