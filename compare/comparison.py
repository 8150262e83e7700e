"""The comparison's arithmetic: one online rate's figures, saturation, the offline baseline, the premium
and the binning estimate's gap. Pure functions over records and energy readings, so a finished run's
directory can be analysed again (``joulebench report``).

Online J/token is read over a steady-state window [t0, t1] (after a warm-up): the window's energy
divided by the tokens processed inside it (``attribution.tokens_in_window``: prefill spread from send
to first token, decode at each chunk), so requests straddling the window's edges count only for their
part inside. Dynamic figures subtract the server's loaded-idle power × the window's length.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from compare.attribution import Weights, attribute, premium, tokens_in_window
from loadgen.summary import percentiles
from server.binning import BatchEnergy, Bin, ceiling_bin, count_bins, estimate

#: A rate is saturated when its queue keeps growing: the median wait for the first token (from the
#: scheduled time) of the window's last third exceeds the first third's by this factor and this many
#: seconds. A bursty trace's backlog comes and goes; a saturated server's only grows. Or when more than
#: ``SATURATION_FAILED`` of the window's requests failed.
SATURATION_FACTOR = 2.0
SATURATION_MIN_GROWTH_S = 0.5
SATURATION_FAILED = 0.1


def backlog(records: Sequence[Mapping[str, Any]], t_s: float) -> int:
    """Requests scheduled by ``t_s`` and not yet finished then (the queue plus those in service)."""
    n = 0
    for r in records:
        done = r.get("last_token_s") if r["status"] == "ok" else None
        if r["scheduled_s"] <= t_s and (done is None or done > t_s):
            n += 1
    return n


def saturation(records: Sequence[Mapping[str, Any]], t0_s: float, t1_s: float) -> dict[str, Any]:
    inside = [r for r in records if t0_s <= r["scheduled_s"] < t1_s]
    third = (t1_s - t0_s) / 3

    def wait(lo: float, hi: float) -> float | None:
        # A request with no first token waited at least until the window's end.
        w = [
            (r["first_token_s"] if r.get("first_token_s") is not None else t1_s) - r["scheduled_s"]
            for r in inside
            if lo <= r["scheduled_s"] < hi
        ]
        return float(np.median(w)) if w else None

    first, last = wait(t0_s, t0_s + third), wait(t1_s - third, t1_s)
    failed = sum(1 for r in inside if r["status"] != "ok")
    growing = first is not None and last is not None and last > max(SATURATION_FACTOR * first,
                                                                     first + SATURATION_MIN_GROWTH_S)  # fmt: skip
    return {
        "arrivals": len(inside),
        "failed": failed,
        "backlog_start": backlog(records, t0_s),
        "backlog_end": backlog(records, t1_s),
        "wait_first_third_s": first,
        "wait_last_third_s": last,
        "saturated": growing or failed > SATURATION_FAILED * len(inside),
    }


def _per_token(energy_j: float, tokens: float) -> float | None:
    return energy_j / tokens if tokens > 0 else None


def rate_result(
    records: Sequence[Mapping[str, Any]],
    window: tuple[float, float],
    window_energy: Mapping[str, Any],
    loaded_idle_w: float,
    edges: Sequence[float],
    slice_energy_j: Sequence[float],
    weights: Weights,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One online replay's figures, and each request's attributed energy (attributional, dynamic).

    ``window_energy``: the monitor's reading of [t0, t1] (``energy_j``, ``uncertainty_j``);
    ``edges``/``slice_energy_j``: the dense series over the whole replay, for attribution.
    """
    t0, t1 = window
    dur = t1 - t0
    e, u = float(window_energy["energy_j"]), float(window_energy["uncertainty_j"])
    n_in, n_out = tokens_in_window(records, t0, t1)
    e_dyn = e - loaded_idle_w * dur
    in_window = [r for r in records if t0 <= r["scheduled_s"] < t1]
    ok_in_window = [r for r in in_window if r["status"] == "ok"]
    done = [r for r in records if r["status"] == "ok" and t0 <= (r.get("last_token_s") or -math.inf) < t1]
    attr = attribute(records, edges, slice_energy_j, weights)
    dyn = attribute(records, edges, slice_energy_j, weights, idle_power_w=loaded_idle_w)
    outs = np.array([r.get("usage_output_tokens") or 0 for r in records], dtype=float)
    ok = np.array([r["status"] == "ok" for r in records], dtype=bool)

    def dist(per_request: np.ndarray) -> dict[str, Any]:
        with np.errstate(divide="ignore", invalid="ignore"):
            per_out = per_request / outs
        return {
            "j_per_request": percentiles(per_request[ok].tolist()),
            "j_per_output_token": percentiles(per_out[ok & (outs > 0)].tolist()),
        }

    result = {
        "window": {"start_s": t0, "end_s": t1, "duration_s": dur},
        "requests": len(records),
        "statuses": dict(Counter(r["status"] for r in records)),
        "requests_in_window": len(in_window),
        "offered_rate_per_s": len(in_window) / dur,
        "achieved_rate_per_s": len(done) / dur,
        "tokens": {"input": n_in, "output": n_out, "total": n_in + n_out},
        "tokens_per_s": {"input": n_in / dur, "output": n_out / dur},
        "energy_j": e,
        "uncertainty_j": u,
        "average_power_w": e / dur,
        "loaded_idle_power_w": loaded_idle_w,
        "idle_share": min(1.0, loaded_idle_w * dur / e) if e > 0 else None,
        "j_per_input_token": _per_token(e, n_in),
        "j_per_output_token": _per_token(e, n_out),
        "j_per_token": _per_token(e, n_in + n_out),
        "dynamic_j_per_output_token": _per_token(e_dyn, n_out),
        "dynamic_j_per_token": _per_token(e_dyn, n_in + n_out),
        "uncertainty_j_per_output_token": _per_token(u, n_out),
        "tokens_per_joule": (n_in + n_out) / e if e > 0 else None,
        "latency_s": {
            name: percentiles([v for r in ok_in_window if (v := r.get(name)) is not None])
            for name in ("ttft_s", "tpot_s", "e2e_s", "ttft_from_schedule_s")
        },
        "schedule_lag_s": percentiles([v for r in in_window if (v := r.get("schedule_lag_s")) is not None]),
        **saturation(records, t0, t1),
        "attribution": {
            "replay_energy_j": attr.total_j,
            "attributional": {"requests_j": float(attr.per_request_j.sum()), "idle_j": attr.idle_j,
                              **dist(attr.per_request_j)},
            "dynamic": {"requests_j": float(dyn.per_request_j.sum()), "idle_j": dyn.idle_j,
                        **dist(dyn.per_request_j)},
        },
    }  # fmt: skip
    return result, {"attributional": attr.per_request_j, "dynamic": dyn.per_request_j}


def offline_baseline(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The offline J/token of one request set's repeats: the mean and each repeat's figures."""
    out = [r["j_per_output_token"] for r in results]
    tok = [r["j_per_token"] for r in results]
    return {
        "repeats": len(results),
        "j_per_output_token": float(np.mean(out)),
        "j_per_token": float(np.mean(tok)),
        "j_per_input_token": float(np.mean([r["energy_j"] / r["input_tokens"] for r in results])),
        "dynamic_j_per_output_token": float(np.mean([r["dynamic_j_per_output_token"] for r in results])),
        "dynamic_j_per_token": float(np.mean([r["dynamic_j_per_token"] for r in results])),
        "uncertainty_j_per_output_token": float(np.mean([r["uncertainty_j_per_output_token"] for r in results])),
        "output_tokens_per_s": float(np.mean([r["output_tokens_per_s"] for r in results])),
        "average_power_w": float(np.mean([r["average_power_w"] for r in results])),
        "batch_size": results[0]["batch_size"],
        "values_j_per_output_token": out,
        "values_j_per_token": tok,
    }


def online_premium(online: Sequence[float], offline: Sequence[float]) -> dict[str, float | None]:
    """``attribution.premium`` as JSON (None where one repeat gives no interval)."""
    p = premium(online, offline)
    return {k: None if math.isnan(v) else v for k, v in (("ratio", p.ratio), ("low", p.low), ("high", p.high))}


def binning_gap(
    records: Sequence[Mapping[str, Any]],
    per_request_j: np.ndarray,
    replay_energy_j: float,
    bins: Mapping[Bin, BatchEnergy],
) -> dict[str, Any]:
    """The binning estimate (Fernandez et al. §4.1) of a replay's requests against its measured energy.

    Measured: the replay's energy (first send to last token, attributional) times the share of the
    attributed energy that went to the requests the bins include (those within the largest bins).
    """
    ok = [(i, r) for i, r in enumerate(records) if r["status"] == "ok"]
    pairs = [(r["usage_input_tokens"], r["usage_output_tokens"]) for _, r in ok]
    counts = count_bins(pairs)
    est = estimate(counts, bins)
    included = [i for i, r in ok if ceiling_bin(r["usage_input_tokens"], r["usage_output_tokens"]) is not None]
    attributed = float(np.sum(per_request_j))
    share = float(np.sum(per_request_j[included])) / attributed if attributed > 0 else 0.0
    measured = replay_energy_j * share
    return {
        "estimate_j": est.energy_j,
        "estimate_uncertainty_j": est.uncertainty_j,
        "measured_j": measured,
        "gap_percent": 100.0 * (est.energy_j - measured) / measured if measured > 0 else None,
        "included": est.included,
        "excluded": est.excluded,
        "bins": len(counts.counts),
    }
