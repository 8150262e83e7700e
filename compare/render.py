"""The renderer: a comparison's summary → ``report.md`` and ``report.html``.

It reads only the summary (``compare.analysis``) and the plots drawn from it (``compare.plots``); the HTML
embeds them and needs nothing from the network.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from estimands.energy import measured_kind


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


def _ci(p: dict[str, Any] | None, digits: int = 3, suffix: str = "", alone: bool = True) -> str:
    """``mean [low, high] (n)`` of a ``spread``; the mean alone from one segment."""
    if not p or p.get("mean") is None:
        return "–"
    text = _f(p["mean"], digits) + suffix
    if p.get("low") is not None:
        text += f" [{_f(p['low'], digits)}, {_f(p['high'], digits)}]"
    if p.get("n", 0) == 1 and "note" in p:
        return text + (" (one segment: no interval)" if alone else "")
    return text + (f" (n={p['n']})" if p.get("n", 0) > 1 else "")


def _rate_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["rung", "load", "arrivals/s", "completed/s", "valid segments", "completed in windows",
            "input/output tokens", "J/out-token", "J/token", "dynamic J/out-token", "idle share",
            "premium (same work)", "dynamic premium", "same-requests premium", "TTFT p50/p99 ms",
            "TPOT p50/p99 ms"]  # fmt: skip
    rows = []
    for r in s["rates"]:
        lat = r["segments"][0].get("latency_s") or {}
        rows.append([
            r["label"] + (" (saturated: throughput only)" if r["saturated"] else ""), _f(r.get("load"), 2),
            _f(r["offered_rate_per_s"]),
            _f(r["completed_rate_per_s"]), f"{len(r['valid_segments'])}/{len(r['segments'])}",
            "/".join(str(n) for n in r["requests_in_window"]), _ci(r.get("input_per_output_token"), 3),
            _ci(r["j_per_output_token"]), _ci(r["j_per_token"]), _ci(r["dynamic_j_per_output_token"]),
            _ci(r["idle_share"], 2),
            *(("–",) * 3 if r["saturated"] else (_ci(r[k], 3, "×") for k in
              ("premium", "dynamic_premium", "same_requests_premium"))),
            f"{_ms(lat.get('ttft_s'), 'p50')}/{_ms(lat.get('ttft_s'), 'p99')}",
            f"{_ms(lat.get('tpot_s'), 'p50')}/{_ms(lat.get('tpot_s'), 'p99')}",
        ])  # fmt: skip
    return head, rows


def _band(b: dict[str, Any] | None, digits: int = 3) -> str:
    """``low–high`` of a predicted interval."""
    return "–" if not b or b.get("low") is None else f"[{_f(b['low'], digits)}, {_f(b['high'], digits)}]"


def _measured_ci(x: dict[str, Any], digits: int = 3) -> str:
    if x.get("measured") is None:
        return "–"
    band = (
        "" if x.get("measured_low") is None else f" [{_f(x['measured_low'], digits)}, {_f(x['measured_high'], digits)}]"
    )
    return _f(x["measured"], digits) + band


def _agree(v: bool | None) -> str:
    return "–" if v is None else "yes" if v else "**no**"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:+.1f} %"


def _prediction_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["rung", "load", "segments", "J/out-token measured [95 %]", "predicted [95 %]", "error", "agree",
            "Little's law", "error", "premium measured [95 %]", "predicted [95 %]", "error", "agree"]  # fmt: skip
    rows = []
    for x in (s.get("prediction") or {}).get("loads") or []:
        o, p = x["j_per_output_token"], x["premium"]
        rows.append([
            x["label"] + ("" if x["valid"] else " (no valid window)"), _f(x.get("load"), 2),
            ", ".join(str(k + 1) for k in x["segments"]), _measured_ci(o),
            f"{_f(o['predicted'])} {_band(o['interval'])}", _pct(o["error_percent"]), _agree(o["agrees"]),
            _f(o["little"]), _pct(o["little_error_percent"]), _measured_ci(p),
            f"{_f(p['predicted'])} {_band(p['interval'])}", _pct(p["error_percent"]), _agree(p["agrees"]),
        ])  # fmt: skip
    return head, rows


def _prediction_line(s: dict[str, Any]) -> str | None:
    """One sentence: how far the profile's prediction is from the measured loads and windows, and where the
    measurement falls outside it."""
    import statistics

    pred = s.get("prediction") or {}
    if pred.get("error"):
        return f"No prediction: the profile could not be fitted ({pred['error']})."
    loads = [x for x in pred.get("loads") or [] if x["valid"] and x["j_per_output_token"]["error_percent"] is not None]
    if not loads:
        return None
    o = [x["j_per_output_token"] for x in loads]
    errs = [x["error_percent"] for x in o]
    over = ("one valid load" if len(o) == 1 else
            f"median over {len(o)} valid loads, from {_pct(min(errs))} to {_pct(max(errs))}")  # fmt: skip
    text = (f"Predicted from the run's profile (its closed loops and saturated references, no online window): J per "
            f"output token {_pct(statistics.median(errs))} off the measured ({over})")  # fmt: skip
    if all(x["little_error_percent"] is not None for x in o):
        text += f", Little's law {_pct(statistics.median(x['little_error_percent'] for x in o))}"
    windows = [100 * (w["j_per_output_token"] - w["measured_j_per_output_token"]) / w["measured_j_per_output_token"]
               for x in pred["loads"] for w in x["per_segment"] if w.get("measured_j_per_output_token")]  # fmt: skip
    if len(windows) > len(o):
        text += (f"; over all {len(windows)} windows with their energy, valid or not, from {_pct(min(windows))} to "
                 f"{_pct(max(windows))}")  # fmt: skip
    off = [x["label"] for x in loads if x["j_per_output_token"]["agrees"] is False]
    if off:
        text += ("; outside the predicted interval (the profile's own uncertainty, not the model's) at "
                 + ", ".join(off))  # fmt: skip
    return text + "."


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
    head = ["reference", "batch (running)", "steady part s", "tokens in/out", "in/out: span vs pool",
            "halves J/token", "avg power W", "J/out-token", "J/token", "dynamic J/out-token", "output tokens/s",
            "idle share", "verdict"]  # fmt: skip
    ref = s["reference"]
    rows = []
    for where in ("offline", "online"):
        for r in ref.get(f"{where}_segments") or []:
            used = any(x["segment"] == r["segment"] and x["source"] == where for x in ref["segments"])
            rows.append(
                [
                    f"{where} s{r['segment']}" + (" (used)" if used else ""),
                    f"{ref['batch_size']} ({r['running_min']}–{r['running_max']})",
                    _f(r["duration_s"]),
                    f"{r['input_tokens']:,.0f}/{r['output_tokens']:,.0f}",
                    _mix(r.get("mix")),
                    _halves(r.get("halves")),
                    _f(r["average_power_w"]),
                    f"{_f(r['j_per_output_token'], 4)} ± {_f(r['uncertainty_j_per_output_token'], 2)}",
                    _f(r["j_per_token"], 4),
                    _f(r["dynamic_j_per_output_token"], 4),
                    _f(r["output_tokens_per_s"]),
                    _f(r["idle_share"], 2),
                    "valid" if r.get("valid") else "; ".join(r.get("reasons") or []),
                ]
            )
    if len(ref["segments"]) > 1:
        rows.append([f"mean of those used ({ref['source']})", "", "", "", "", "", "", _ci(ref["j_per_output_token"], 4),
                     _ci(ref["j_per_token"], 4), _ci(ref["dynamic_j_per_output_token"], 4), "", "", ""])  # fmt: skip
    if ref.get("online_vs_offline"):
        rows.append(["online ÷ offline (J/out-token)", "", "", "", "", "", "", _ci(ref["online_vs_offline"], 3, "×"),
                     "", "", "", "", ""])  # fmt: skip
    return head, rows


def _mix(m: dict[str, Any] | None) -> str:
    """The span's input ÷ output tokens against its pool's."""
    if not m or m.get("off") is None:
        return "–"
    return f"{m['span_input_per_output']:.3g} vs {m['pool_input_per_output']:.3g} ({100 * m['off']:+.1f} %)"


def _halves(h: dict[str, Any] | None) -> str:
    """The second half's J/token against the first's."""
    return "–" if not h or h.get("off") is None else f"{100 * h['off']:+.1f} %"


BUDGETED = (("j_per_output_token", "J/out-token"), ("dynamic_j_per_output_token", "dynamic J/out-token"),
            ("premium", "premium"), ("dynamic_premium", "dynamic premium"),
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


def _wall_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    phases = (s.get("timeline") or {}).get("phases") or []
    total = sum(p["wall_s"] for p in phases)
    groups: dict[str, list[float]] = {}
    for p in phases:  # the profile's loops as one phase; every other phase as it ran
        groups.setdefault(p["group"] if p["kind"] == "profile" else p["name"], []).append(p["wall_s"])
    rows = [[name, str(len(v)) if len(v) > 1 else "", f"{sum(v):.0f}", f"{100 * sum(v) / total:.0f} %"]
            for name, v in groups.items()]  # fmt: skip
    if rows:
        rows.append(["**all of them**", "", f"{total:.0f}", "100 %"])
    return ["phase", "runs", "wall s", "share"], rows


def _plan_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    p = (s.get("timeline") or {}).get("plan") or {}
    rows = [[r["rung"], f"{r['segments']} of {r['measured']}", _f(r["sd_log"]), _f(r["type_b"]),
             f"{r['needed']} ({r['to_run']} to run)" if r["needed"] is not None else f"– ({r['reason']})"]
            for r in p.get("loads") or []]  # fmt: skip
    if rows:
        wall = p.get("wall_s")
        rows.append(["**the plan**", "", "", "", "–" if p.get("segments") is None else
                     f"{p['segments']} segments, about {wall / 60:.0f} min at this run's pace "
                     f"({p['fixed_s'] / 60:.1f} min fixed + {p['per_segment_s'] / 60:.1f} min a segment)"])  # fmt: skip
    target = 100 * p.get("target", 0.1)
    head = [
        "rung",
        "segments with a premium",
        "sd of ln premium",
        "type B (relative)",
        f"segments with a premium for ±{target:.0f} %",
    ]
    return head, rows


def _workload_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["segment", "from s", "requests", "span s (at 1×)", "mean in/out tokens", "longer than the context"]
    rows = [[str(w["segment"]), _f(w["start_s"]), str(w["requests"]), _f(w["span_s"]),
             f"{w['input_tokens_mean']:.0f}/{w['output_tokens_mean']:.0f}",
             (w.get("overlong") or {}).get("text") or "none"] for w in s["workload"]["segments"]]  # fmt: skip
    return head, rows


def _model_error(s: dict[str, Any]) -> str:
    """The energy model's validation error: the median and worst |error| of its checks on sets it did not see."""
    errors = [abs(c["error_percent"]) for c in s["energy_model"].get("checks") or [] if c["error_percent"] is not None]
    if not errors:
        return "not validated (no check set)"
    return f"{float(np.median(errors)):.0f} % median, {max(errors):.0f} % worst ({len(errors)} checks)"


def _attribution_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["rate", "segment", "view", "replay energy J", "to requests J", "unattributed J", "J/request p50/p90/p99",
            "J/out-token per request p50/p90/p99", "the model's error on unseen sets"]  # fmt: skip
    rows = []
    error = _model_error(s)
    for r in s["rates"]:
        w = r["segments"][0]
        a = w["attribution"]
        for view in ("attributional", "dynamic"):
            v = a[view]
            jr, jo = v["j_per_request"], v["j_per_output_token"]
            rows.append([
                r["label"], str(w["segment"]), view, _f(a["replay_energy_j"], 4), _f(v["requests_j"], 4),
                _f(v["unattributed_j"], 4), "/".join(_f(jr[p]) for p in ("p50", "p90", "p99")),
                "/".join(_f(jo[p]) for p in ("p50", "p90", "p99")), error,
            ])  # fmt: skip
    return head, rows


def _model_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    m = s["energy_model"]
    head = ["", "value", "check: measured dynamic J", "predicted", "error"]
    if "se" not in m:
        return head, [[m["fit"], "", "", "", ""]]
    # the jackknife's spread of a parameter says how stable the fit is, not how right the model is: its
    # error on the sets it did not see (the checks) is what a per-request figure carries
    rows = [[name, f"{_f(m[key], 4)} (jackknife spread {_f(m['se'][key], 2)})", "", "", ""] for key, name in
            (("step_j", "c, J per engine step"), ("prefill_j_per_token", "α, J per prefill token"),
             ("decode_j_per_token", "β, J per decode token"))]  # fmt: skip
    rows.append(["R² (rows)", f"{_f(m['r2'], 3)} ({m['rows']})", "", "", ""])
    rows.append(["validation error", _model_error(s), "", "", ""])
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


def _measured(s: dict[str, Any]) -> str:
    """What was measured, in one line: model and weights, the energy's source, the trace and the workload."""
    c = s["config"]
    devices = sorted({f"{d.get('name') or d.get('kind') or d.get('device')} ({d.get('source')})" for d in s["devices"]})
    w = s["workload"]["segments"]
    trace = (c.get("trace") or {}).get("name")
    work = f"{len(w)} segment(s) of {w[0]['requests']} requests" if w else "no workload"
    cap = s["reference"].get("capacity_per_s")
    return (f"Measured: {c.get('preset') or c.get('model')} (weights {c.get('weights')}) on "
            f"{', '.join(devices) or 'no device'}; the {trace} trace, {work}, the same requests at every load"
            + (f"; capacity {_f(cap)} requests/s (the saturated reference's completion rate)" if cap else "")
            + ".")  # fmt: skip


def _headline(s: dict[str, Any]) -> list[str]:
    """The answer: one sentence per load with a valid window, then what was left out and why."""
    h = s["headline"]
    ref = s["reference"]["j_per_output_token"]
    if not h["rates"]:
        why = "; ".join(f"{x['label']}: {x['why']}" for x in h["left_out"]) or "no rate was measured"
        return [f"No premium: no load has a valid window ({why})."]
    lines = []
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
        lines.append(f"No valid saturated reference ({why}): no premium.")
    for r in h["rates"]:
        where = (f"At {r['label']}" + (" of capacity" if r["label"].startswith("load") else "")
                 + f" ({_f(r['offered_rate_per_s'])} requests/s, {r['segments']} valid window(s))")  # fmt: skip
        text = (f"{where}, an output token cost {_ci(r['j_per_output_token'], 3, alone=False)} J "
                f"({_ci(r['j_per_token'], 3, alone=False)} J per token, "
                f"{_f((r.get('input_per_output_token') or {}).get('mean'))} input tokens per output "
                "token)")  # fmt: skip
        if (r.get("premium") or {}).get("mean") is not None:
            text += f": {_ci(r['premium'], 3, '×', alone=False)} what the same work costs at saturation"
        one = r["segments"] == 1
        lines.append(text + (" (one segment: no interval)." if one else "."))
    if ref.get("mean") is not None:
        lines.append(f"Saturated reference: {_ci(ref, 4, alone=False)} J per output token (batch "
                     f"{s['reference']['batch_size']}, "
                     "steady state, the workload's mix). 95 % intervals over trace segments; one segment gives the "
                     "figure without one.")  # fmt: skip
    if (line := _prediction_line(s)) is not None:
        lines.append(line)
    if h["left_out"]:
        lines.append("Left out: " + "; ".join(f"{x['label']} ({x['why']})" for x in h["left_out"]) + ".")
    return lines


def _definitions(s: dict[str, Any]) -> list[str]:
    return [f"**{k.replace('_', ' ')}**: {v}" for k, v in s["definitions"].items()]


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
    ("Online against the saturated reference, per load", _rate_table,
     "Figures are geometric means over the load's valid windows (one per trace segment) with 95 % intervals "
     "(Student's t over segments, on the log scale) where there are two or more; one segment gives the figure and "
     "no interval. J/token: the steady-state window's energy ÷ the tokens processed in it. Premium: the window's "
     "energy ÷ what the same work (its prefill and decode tokens) costs at the saturated reference's prices. "
     "Same-requests premium: the whole replay's energy ÷ the same requests served offline at once. A saturated "
     "load is a throughput figure: no premium."),
    ("Predicted beside measured", _prediction_table,
     "The run's profile (predict.profile: P(n) and step time against the requests running, loaded idle, the prefill "
     "cost) fitted from its closed loops at 1, 2, 4 … in flight and its saturated references, before the ladder; "
     "no online window enters it. Each window's own requests at their scheduled times are then simulated on it "
     "(continuous batching) and read over the measured window: predicted J/output-token, and the premium over the "
     "profile's saturated loop of the same requests. Intervals: 2.5–97.5 % over draws of the profile. Little's "
     "law: the window's arrival rate × its measured mean time in system, on the profile's P(n). Agree: the "
     "intervals overlap (one segment: the measured figure inside the predicted interval). `joulebench predict "
     "--profile RUN_DIR` predicts other loads and traces from profile.json."),
    ("Windows and their verdicts", _windows_table,
     "Each replay's steady-state window: from the arrival of the request after the warm-up share (--warmup-share "
     "of the workload, the same requests at every load) to the last arrival; where MSER-5 would cut is shown "
     "beside it. Trend t: the slope's t against the series' own low-frequency variance (a window too short for "
     "that is not tested, and not valid). ± monitor: the energy monitor's interpolation only."),
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
     "The segment's lengths (sampled) served closed loop with --max-num-seqs running, measured from when every "
     "request of the start cohort has ended (every slot has turned over) to when the pool runs dry: online (a "
     "saturate replay against the running server) and, where --offline runs, offline (vLLM's engine driven "
     "directly). Valid: at least two counter updates long, its input/output tokens within 5 % of its pool's, and "
     "its halves within 5 % of each other per unit of work. Each segment's premium divides by its offline reference "
     "where that is valid, else by the online one; the saturated prices (r, a prefill token's cost in decode "
     "tokens) are in summary.json."),
    ("Wall time", _wall_table,
     "Every phase the run measured, in the order it ran, from the end of the phase before to its own last token "
     "(its start-up and waits counted where they were spent; a reference's pilot, where one ran, in its "
     "reference): the device's idle, vLLM's start, the loaded idle, the saturated references, the profile's "
     "closed loops, each rung's replay of each segment. The offline phase and the counterfactual keep no energy "
     "series and are not in it."),
    ("Plan for the interval", _plan_table,
     "How many segments this run's own spread asks for a premium within ±10 % at 95 % (estimands.plan): u_c² = "
     "s²/n + Σ u_B², s the standard deviation of ln(premium) over the rung's segments with a premium, the type B "
     "terms held at this run's values, k at the Welch–Satterthwaite degrees of freedom; to run: as many more as "
     "this run lost to windows or references that were not valid. A point estimate: s from a few segments is "
     "itself uncertain (from two, σ may be 0.45 to 32 times s), so such a plan meets the target about half the "
     "time. The plan gives every rung its count; its wall time is this run's fixed phases plus that many times its "
     "mean seconds a segment (a reference and one replay at every rung; the offline phase, where it ran, not "
     "counted). A rung with a premium in fewer than two segments has no spread to plan from."),
    ("Workload", _workload_table, "The same requests at every rate: only their arrival times change."),
    ("Energy attributed to requests", _attribution_table,
     "Each slice's dynamic energy (less loaded-idle power) is shared among the requests working in it by their "
     "modelled cost there (the energy model below); attributional adds the loaded-idle power of the time any "
     "request is in service, shared by time in service; idle with none in service stays unattributed. Requests "
     "+ unattributed = the replay's measured energy. A request's energy is an allocation of the window's measured "
     "energy by that model, not a measurement: it carries the model's error on the sets it did not see (the energy "
     "model's checks below), not the jackknife's spread of its parameters."),
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
    "border:1px solid #e0c060}.note{color:#555;font-size:13px}img{max-width:100%}.headline{font-size:16px}"
)


def write_documents(run_dir: Path, s: dict[str, Any], plots: dict[str, Path]) -> tuple[Path, Path]:
    """``report.md`` and ``report.html`` of the summary ``s``, with the ``plots`` drawn from it. The first screen
    answers: what was measured, one sentence per load, and the premium against load beside the absolute J/token."""
    title = f"joulebench: online vs offline energy per token — {s['config'].get('preset') or s['config'].get('model')}"
    status = _status(s["config"])
    banner = _estimated_banner(s)
    headline = [_measured(s), *_headline(s)]
    first = plots.get("premium")
    rest = {k: p for k, p in plots.items() if k != "premium"}

    md = [f"# {title}", ""]
    md += [x + "\n" for x in (banner, status) if x]
    md += [f"- {line}" for line in headline] + [""]
    if first is not None:
        md += [f"![premium](plots/{first.name})", ""]
    md += ["## Provenance", ""] + [f"- {line}" for line in _provenance(s)] + [""]
    md += ["## What each figure estimates", ""] + [f"- {line}" for line in _definitions(s)] + [""]
    for name, table, note in _SECTIONS:
        head, rows = table(s)
        if rows or table not in (_devices_table, _prediction_table, _wall_table, _plan_table):
            md += [f"## {name}", "", note, "", _md_table(head, rows)]
    md += ["## Plots", ""] + [f"![{k}](plots/{p.name})" for k, p in rest.items()] + [""]
    (run_dir / "report.md").write_text("\n".join(md))

    def img(k: str, p: Path) -> str:
        data = base64.b64encode(p.read_bytes()).decode()
        return f"<figure><img alt='{k}' src='data:image/png;base64,{data}'></figure>"

    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style>"
         f"</head><body><h1>{html.escape(title)}</h1>"]  # fmt: skip
    h += [f"<p class='warn'>{_md_inline(x)}</p>".replace("\n- ", "<br>– ") for x in (banner, status) if x]
    h += ["<ul class='headline'>"] + [f"<li>{_md_inline(line)}</li>" for line in headline] + ["</ul>"]
    if first is not None:
        h.append(img("premium", first))
    h += ["<h2>Provenance</h2><ul>"] + [f"<li>{_md_inline(line)}</li>" for line in _provenance(s)] + ["</ul>"]
    h += ["<h2>What each figure estimates</h2><ul>"] + [f"<li>{_md_inline(x)}</li>" for x in _definitions(s)]
    h += ["</ul>"]
    for name, table, note in _SECTIONS:
        head, rows = table(s)
        if rows or table not in (_devices_table, _prediction_table, _wall_table, _plan_table):
            h += [f"<h2>{html.escape(name)}</h2><p class='note'>{html.escape(note)}</p>", _html_table(head, rows)]
    h += ["<h2>Plots</h2>"] + [img(k, p) for k, p in rest.items()]
    h.append("</body></html>")
    (run_dir / "report.html").write_text("\n".join(h))
    return run_dir / "report.md", run_dir / "report.html"
