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

from compare.attribution import Weights, fit_weights
from compare.comparison import binning_gap, offline_baseline, online_premium, rate_result
from compare.experiment import rate_label, replay_dir
from loadgen.errors import LoadgenError
from loadgen.records import read_records
from monitor.meter import measured_kind

#: Without offline runs to fit them, prefill and decode tokens weigh the same.
EQUAL_WEIGHTS = Weights(1.0, 1.0, "no offline run to fit: prefill and decode tokens weighted equally")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError:
        return None
    except json.JSONDecodeError as err:
        raise LoadgenError(f"{path}: not JSON ({err})") from None


def _energy_series(path: Path) -> dict[tuple[float, int], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """energy.csv → (rate, repeat) → (edges, energy J, uncertainty J)."""
    rows: dict[tuple[float, int], list[tuple[float, float, float, float]]] = defaultdict(list)
    try:
        with path.open(newline="") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                try:
                    key = (float(row["rate"]), int(row["repeat"]))
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


def analyze(run_dir: Path) -> dict[str, Any]:
    """The comparison's figures from the run directory's files."""
    config = _read_json(run_dir / "config.json")
    if config is None:
        raise LoadgenError(f"{run_dir} has no config.json: not a joulebench compare run directory")
    idle = _read_json(run_dir / "idle.json") or {}
    offline = _read_json(run_dir / "offline" / "offline.json")
    loaded_w = idle.get("loaded", {}).get("power_w", 0.0)

    weights = EQUAL_WEIGHTS
    if offline:
        runs = [(r["input_tokens"], r["output_tokens"], r["dynamic_energy_j"]) for r in offline["results"]]
        try:
            weights = fit_weights(runs)
        except ValueError as err:
            weights = Weights(1.0, 1.0, f"the fit failed ({err}): prefill and decode tokens weighted equally")
    bins = {}
    if offline:
        from server.binning import measured_bins

        bins = measured_bins(offline["results"])

    series = _energy_series(run_dir / "energy.csv")
    options = config["options"]
    rates: list[dict[str, Any]] = []
    per_request: list[dict[str, Any]] = []
    for m in options["rates"]:
        repeats = []
        for j in range(options["repeats"]):
            d = replay_dir(run_dir, m, j)
            window = _read_json(d / "window.json")
            if window is None or (m, j) not in series:
                continue
            records = read_records(d / "requests.jsonl")
            edges, e, _ = series[(m, j)]
            result, attributed = rate_result(
                records, tuple(window["window"]), window, loaded_w, edges, e, weights
            )  # fmt: skip
            result.update(repeat=j, drain_cut=window["drain_cut"], short_window=window["short_window"])
            if bins and j == 0:
                try:
                    result["binning"] = binning_gap(records, attributed["attributional"],
                                                    result["attribution"]["replay_energy_j"], bins)  # fmt: skip
                except KeyError as err:
                    result["binning"] = {"error": str(err)}
            repeats.append(result)
            for r, ea, ed in zip(records, attributed["attributional"], attributed["dynamic"], strict=True):
                if r["status"] == "ok":
                    per_request.append({
                        "rate": m, "repeat": j, "request_id": r["request_id"],
                        "input_tokens": r["usage_input_tokens"], "output_tokens": r["usage_output_tokens"],
                        "energy_j": float(ea), "dynamic_energy_j": float(ed),
                        "ttft_s": r["ttft_s"], "e2e_s": r["e2e_s"], "sent_s": r["sent_s"],
                    })  # fmt: skip
        if not repeats:
            continue
        window0 = _read_json(replay_dir(run_dir, m, 0) / "window.json") or {}
        entry: dict[str, Any] = {
            "rate": m, "label": rate_label(m), "nominal_rate_per_s": window0.get("nominal_rate_per_s"),
            "repeats": repeats, "saturated": any(r["saturated"] or r["drain_cut"] for r in repeats),
        }  # fmt: skip
        for key in ("offered_rate_per_s", "achieved_rate_per_s", "j_per_input_token", "j_per_output_token",
                    "j_per_token", "dynamic_j_per_output_token", "dynamic_j_per_token", "average_power_w", "idle_share",
                    "uncertainty_j_per_output_token", "tokens_per_joule"):  # fmt: skip
            values = [r[key] for r in repeats if r[key] is not None]
            entry[key] = float(np.mean(values)) if values else None
        if offline:
            sets = [r for r in offline["results"] if r.get("label", "").startswith(f"rate {rate_label(m)} #")]
            if sets:
                base = offline_baseline(sets)
                entry["offline"] = base
                entry["premium"] = online_premium([r["j_per_token"] for r in repeats if r["j_per_token"]],
                                                  base["values_j_per_token"])  # fmt: skip
                entry["premium_output"] = online_premium(
                    [r["j_per_output_token"] for r in repeats if r["j_per_output_token"]],
                    base["values_j_per_output_token"],
                )
        rates.append(entry)

    devices = config.get("devices") or []
    sources = sorted({d.get("source", "") for d in devices})
    return {
        "config": {
            k: config.get(k)
            for k in (
                "joulebench",
                "command",
                "date",
                "hardware",
                "vllm",
                "model",
                "preset",
                "weights",
                "engine",
                "trace",
                "max_model_len",
                "monitor",
                "server",
                "complete",
                "interrupted",
                "problems",
            )
        },
        "devices": devices,
        "energy_sources": sources,
        "estimated": "estimate" in sources,
        "idle": idle,
        "weights": {
            "prefill_j_per_token": weights.prefill_j_per_token,
            "decode_j_per_token": weights.decode_j_per_token,
            "fit": weights.fit,
        },
        "offline_idle_power_w": offline.get("idle_power_w") if offline else None,
        "offline_results": offline["results"] if offline else [],
        "rates": rates,
        "per_request": per_request,
    }


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


def _premium_text(p: dict[str, Any] | None) -> str:
    if not p:
        return "–"
    ci = f" [{p['low']:.2f}, {p['high']:.2f}]" if p.get("low") is not None else ""
    return f"{p['ratio']:.2f}×{ci}"


def _rate_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["rate", "arrivals/s", "completed/s", "requests ok/all", "tokens in/out (window)", "J/in-token",
            "J/out-token", "J/token", "dynamic J/token", "offline J/token", "premium (95% CI)", "TTFT p50/p99 ms",
            "TPOT p50/p99 ms", "avg power W", "idle share"]  # fmt: skip
    rows = []
    for r in s["rates"]:
        rep = r["repeats"][0]
        ok = sum(x["statuses"].get("ok", 0) for x in r["repeats"])
        n = sum(x["requests"] for x in r["repeats"])
        lat = rep["latency_s"]
        rows.append([
            r["label"] + (" (saturated)" if r["saturated"] else ""), _f(r["offered_rate_per_s"]),
            _f(r["achieved_rate_per_s"]), f"{ok}/{n}",
            f"{rep['tokens']['input']:,.0f}/{rep['tokens']['output']:,.0f}",
            _f(r["j_per_input_token"]),
            _f(r["j_per_output_token"]) + f" ± {_f(r['uncertainty_j_per_output_token'], 2)}",
            _f(r["j_per_token"]), _f(r["dynamic_j_per_token"]),
            _f((r.get("offline") or {}).get("j_per_token")), _premium_text(r.get("premium")),
            f"{_ms(lat['ttft_s'], 'p50')}/{_ms(lat['ttft_s'], 'p99')}",
            f"{_ms(lat['tpot_s'], 'p50')}/{_ms(lat['tpot_s'], 'p99')}",
            _f(r["average_power_w"]), _f(r["idle_share"], 2),
        ])  # fmt: skip
    return head, rows


def _attribution_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["rate", "view", "replay energy J", "to requests J", "unattributed J", "J/request p50/p90/p99",
            "J/out-token per request p50/p90/p99"]  # fmt: skip
    rows = []
    for r in s["rates"]:
        a = r["repeats"][0]["attribution"]
        for view in ("attributional", "dynamic"):
            v = a[view]
            jr, jo = v["j_per_request"], v["j_per_output_token"]
            rows.append([
                r["label"], view, _f(a["replay_energy_j"], 4), _f(v["requests_j"], 4), _f(v["idle_j"], 4),
                "/".join(_f(jr[p]) for p in ("p50", "p90", "p99")), "/".join(_f(jo[p]) for p in ("p50", "p90", "p99")),
            ])  # fmt: skip
    return head, rows


def _binning_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["rate", "bins", "requests in bins / beyond", "binning estimate J", "measured online J", "gap"]
    rows = []
    for r in s["rates"]:
        b = r["repeats"][0].get("binning")
        if not b:
            continue
        if "error" in b:
            rows.append([r["label"], "–", "–", f"not estimated: {b['error']}", "–", "–"])
            continue
        gap = b["gap_percent"]
        rows.append([r["label"], str(b["bins"]), f"{b['included']}/{b['excluded']}",
                     f"{_f(b['estimate_j'], 4)} ± {_f(b['estimate_uncertainty_j'], 2)}", _f(b["measured_j"], 4),
                     "–" if gap is None else f"{gap:+.1f} %"])  # fmt: skip
    return head, rows


def _offline_table(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["set", "batch", "requests", "in/out tokens", "time s", "avg power W", "J/token", "J/out-token",
            "dynamic J/out-token"]  # fmt: skip
    rows = [[r.get("label", ""), str(r["batch_size"]), str(r["requests"]), f"{r['input_tokens']}/{r['output_tokens']}",
             _f(r["duration_s"]), _f(r["average_power_w"]), _f(r["j_per_token"]), _f(r["j_per_output_token"]),
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
        f"{_f((c.get('trace') or {}).get('rate_per_s'))} req/s)",
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
    lines.append(f"Attribution weights: {s['weights']['fit']}")
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
    with_premium = [r for r in s["rates"] if r.get("premium")]
    if not with_premium:
        return "No offline baseline: no premium."
    lo, hi = with_premium[0], with_premium[-1]
    return (
        f"Online, a token cost {lo['premium']['ratio']:.2f}× the offline J/token at {lo['label']} the trace's rate "
        f"and {hi['premium']['ratio']:.2f}× at {hi['label']}."
    )


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
    for key, style, name in (("j_per_token", "o-", "online"), ("dynamic_j_per_token", "s--", "online, dynamic")):
        xs = [r["offered_rate_per_s"] for r in rates for _ in r["repeats"]]
        ys = [x[key] for r in rates for x in r["repeats"]]
        ax.plot(xs, ys, style[0], alpha=0.4, color="C0" if key == "j_per_token" else "C2")
        ax.plot([r["offered_rate_per_s"] for r in rates], [r[key] for r in rates], style,
                color="C0" if key == "j_per_token" else "C2", label=name)  # fmt: skip
    with_offline = [r for r in rates if r.get("offline")]
    if with_offline:
        x = [r["offered_rate_per_s"] for r in with_offline]
        ax.plot(x, [r["offline"]["j_per_token"] for r in with_offline], "^-", color="C1",
                label="offline: the same requests, all at once")  # fmt: skip
        ax.plot(x, [r["offline"]["dynamic_j_per_token"] for r in with_offline], "v--", color="C1",
                label="offline, dynamic")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arrival rate (requests/s)")
    ax.set_ylabel(f"J per token (input + output){unit}")
    ax.set_title("Energy per token against arrival rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    paths["j_per_token"] = _save(fig, out_dir / "j_per_token_vs_rate.png")

    series = _energy_series(run_dir / "energy.csv")
    fig, axes = plt.subplots(len(rates), 1, figsize=(8, 1.8 * len(rates) + 0.6), squeeze=False)
    loaded = s["idle"].get("loaded", {}).get("power_w")
    for ax, r in zip(axes[:, 0], rates, strict=True):
        key = (r["rate"], 0)
        if key not in series:
            continue
        edges, e, _ = series[key]
        t0 = edges[0]
        ax.stairs(e / np.diff(edges), edges - t0, color="C0", label="power")
        w = r["repeats"][0]["window"]
        ax.axvspan(w["start_s"] - t0, w["end_s"] - t0, color="C2", alpha=0.12, label="steady-state window")
        if loaded is not None:
            ax.axhline(loaded, color="C1", ls="--", lw=1, label="loaded idle")
        sent = [p["sent_s"] - t0 for p in s["per_request"] if p["rate"] == r["rate"] and p["repeat"] == 0]
        ax.plot(sent, np.zeros(len(sent)), "|", color="k", ms=8, label="arrivals")
        ax.set_ylabel(f"{r['label']}\nW")
        ax.set_ylim(bottom=0)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the replay's first request")
    fig.suptitle(f"Power over time, arrivals marked{unit}")
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
    ("Online vs offline, per rate", _rate_table,
     "J/token: the steady-state window's energy ÷ the tokens processed in it (input + output). Dynamic: less "
     "loaded-idle power × time. Premium: online J/token ÷ offline J/token of the same requests given to "
     "LLM.generate at once (continuous batching up to the max batch); the 95 % interval comes from --repeats "
     "(none with one repeat). Idle share: loaded-idle power × "
     "window ÷ window energy."),
    ("Energy attributed to requests", _attribution_table,
     "Each slice of the energy series is shared among the requests active in it by their prefill and decode "
     "tokens there, weighted by the fit below; requests + unattributed = the replay's measured energy."),
    ("Binning estimate (Fernandez et al. 2025) against the measured online energy", _binning_table,
     "One full offline batch per (input, output) ceiling bin; the estimate sums N(bin)/B · E(bin). Measured: the "
     "replay's energy, the share attributed to requests within the largest bins. Gap: (estimate − measured) ÷ "
     "measured."),
    ("Offline runs", _offline_table, "Every set served offline (rate sets, the fit's calibration sets, bins)."),
)  # fmt: skip


def _status(config: dict[str, Any]) -> str:
    """The report's line on an incomplete run: why it stopped, and what it could not measure."""
    if config.get("complete"):
        return ""
    problems = config.get("problems") or []
    counted = f"{len(problems)} problem{'s' * (len(problems) != 1)}" if problems else "it did not finish"
    return f"**Incomplete run** ({config.get('interrupted') or counted})." + "".join(f"\n- {p}" for p in problems)


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
    for name, table, note in _SECTIONS:
        md += [f"## {name}", "", note, "", _md_table(*table(s))]
    md += ["## Plots", ""] + [f"![{k}](plots/{p.name})" for k, p in plots.items()] + [""]
    (run_dir / "report.md").write_text("\n".join(md))

    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_CSS}</style>"
         f"</head><body><h1>{html.escape(title)}</h1>"]  # fmt: skip
    h += [f"<p class='warn'>{_md_inline(x)}</p>".replace("\n- ", "<br>– ") for x in (banner, status) if x]
    h += [f"<p>{html.escape(_headline(s))}</p><ul>"]
    h += [f"<li>{_md_inline(line)}</li>" for line in _provenance(s)] + ["</ul>"]
    for name, table, note in _SECTIONS:
        h += [f"<h2>{html.escape(name)}</h2><p class='note'>{html.escape(note)}</p>", _html_table(*table(s))]
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
