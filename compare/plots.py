"""The report's plots, drawn from a comparison's summary (``compare.analysis``) into ``plots/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def draw(s: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Every plot of the summary ``s`` into ``out_dir``, by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(exist_ok=True)
    paths: dict[str, Path] = {}
    rates = s["rates"]
    unit = " (estimated)" if s["estimated"] else ""
    if not rates:
        return paths
    paths["premium"] = _premium(s, out_dir / "premium_vs_load.png", unit)

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

    series = s["power_series"]
    fig, axes = plt.subplots(len(rates), 1, figsize=(8, 1.8 * len(rates) + 0.6), squeeze=False)
    loaded = s["idle"].get("loaded", {}).get("power_w")
    for ax, r in zip(axes[:, 0], rates, strict=True):
        w0 = r["segments"][0]
        key = (r["rate"], w0["segment"])
        if key not in series:
            continue
        edges, e = series[key]
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


def _premium(s: dict[str, Any], path: Path, unit: str) -> Path:
    """The answer in one picture: the premium against load with its 95 % intervals (left), and the absolute
    J/output-token beside the saturated reference's (right). Valid windows only; no bar where one segment
    gave no interval."""
    import matplotlib.pyplot as plt

    shown = [r for r in s["rates"] if r["valid_segments"] and not r["saturated"]]
    by_load = all(r.get("load") for r in shown)
    x_of = (lambda r: r["load"]) if by_load else (lambda r: r["offered_rate_per_s"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, name in ((left, "premium", "premium (× the same work at saturation)"),
                          (right, "j_per_output_token", f"J per output token{unit}")):  # fmt: skip
        pts = [(x_of(r), r[key]) for r in shown if r[key].get("mean")]
        if pts:
            x = np.array([p[0] for p in pts], dtype=float)
            y = np.array([p[1]["mean"] for p in pts])
            lo = np.array([p[1]["low"] if p[1].get("low") is not None else p[1]["mean"] for p in pts])
            hi = np.array([p[1]["high"] if p[1].get("high") is not None else p[1]["mean"] for p in pts])
            ax.errorbar(x, y, yerr=np.vstack([y - lo, hi - y]), fmt="o-", color="C0", capsize=4, label="online, 95 %")
            for xi, yi, b in zip(x, y, (p[1] for p in pts), strict=True):
                ax.annotate(f"{yi:.3g}" + ("" if b.get("low") is not None else " (n=1)"), (xi, yi),
                            textcoords="offset points", xytext=(6, 6), fontsize=8)  # fmt: skip
        ax.set_xlabel("load (share of the server's capacity)" if by_load else "arrival rate in the window (requests/s)")
        if by_load:
            ax.set_xlim(0, 1)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3, which="both")
    _predicted(s, left, right, x_of if by_load else None)
    left.axhline(1.0, color="C1", ls="--", label="saturated reference")
    left.set_ylim(bottom=0)
    ref = s["reference"]["j_per_output_token"].get("mean")
    if ref:
        right.axhline(ref, color="C1", ls="--", label="saturated reference")
    right.set_yscale("log")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("What a token costs online against the same work at saturation")
    return _save(fig, path)


def _predicted(s: dict[str, Any], left: Any, right: Any, x_of: Any) -> None:
    """The profile's predictions (``compare.prediction``) beside the measured points, a little to the right."""
    loads = [x for x in (s.get("prediction") or {}).get("loads") or [] if x["valid"]]
    by_rate = {r["rate"]: r for r in s["rates"]}
    pts = [(x_of(by_rate[x["rate"]]) if x_of else by_rate[x["rate"]]["offered_rate_per_s"], x) for x in loads
           if x["rate"] in by_rate]  # fmt: skip
    for ax, key in ((left, "premium"), (right, "j_per_output_token")):
        shown = [(xv, x[key]) for xv, x in pts if x[key]["predicted"] is not None and x[key]["interval"]]
        if not shown:
            continue
        xs = np.array([xv for xv, _ in shown], dtype=float) * 1.02
        y = np.array([b["predicted"] for _, b in shown])
        lo = np.minimum([b["interval"]["low"] for _, b in shown], y)
        hi = np.maximum([b["interval"]["high"] for _, b in shown], y)
        ax.errorbar(xs, y, yerr=np.vstack([y - lo, hi - y]), fmt="s:", color="C3", capsize=3, alpha=0.8,
                    label="predicted from the profile")  # fmt: skip
        if key == "j_per_output_token":
            lit = [(xv, x[key]["little"]) for xv, x in pts if x[key]["little"] is not None]
            if lit:
                ax.plot([a * 1.04 for a, _ in lit], [b for _, b in lit], "^", color="C7", label="Little's law")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
