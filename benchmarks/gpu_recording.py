"""A 60 s recording on a real GPU around bursts of matmul work, and what it says about the monitor.

Needs an NVIDIA GPU, torch and nvidia-ml-py (no vLLM). Records with the monitor's own sampler at 10 ms:
10 s idle, 40 s of matmul bursts (4 s on, 2 s off), 10 s idle. Reports:

* the energy counter's update period (median and spread of the time between its changes);
* counter energy ÷ ∫ instantaneous power, over the whole recording and over rolling 10 s windows;
* the energy of the burst window with its uncertainty;
* how late the instantaneous power runs against the counter (the lag the monitor learns);
* a hold-out check of the monitor's anchored reading: only every n-th counter update is kept (n = 2, 5,
  10: anchors 0.2 s, 0.5 s, 1 s apart), the hidden values are predicted from the rest (power-shaped
  with the learnt lag, without it, and time-linear), and the errors are compared with the uncertainty
  the window math states for them.

Writes JSON, the sample log (CSV) and a plot into ``--out``.

    python benchmarks/gpu_recording.py --out results/gpu
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from monitor.sampler import Sampler
from monitor.series import SeriesView
from monitor.sources import NvmlSource
from monitor.window import counter_power_ratio, estimate_power_lag, update_period_s, window_energy


def burn(seconds: float, size: int = 8192) -> None:
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(20):
            a = (a @ b).clamp_(-1, 1)
        torch.cuda.synchronize()


def holdout(view: SeriesView, every: int) -> dict:
    """Keep every ``every``-th counter update (as the anchored sampler would), predict the others.

    The power lag is learnt from the thinned view, as the sampler learns it. Compares the errors of
    the hidden updates with the uncertainty the window math states for them.
    """
    t, c, g = view.update_t_s, view.update_energy_j, view.update_gap_s
    keep = np.arange(len(t)) % every == 0
    thinned = SeriesView.from_arrays(
        t[keep], c[keep], view.power_t_s, view.power_w, update_gap_s=g[keep], last_t_s=view.last_t_s
    )
    lag = estimate_power_lag(thinned) or 0.0
    shaped = replace(thinned, power_lag_s=lag)
    linear = SeriesView.from_arrays(t[keep], c[keep], update_gap_s=g[keep], last_t_s=view.last_t_s)
    hidden = [k for k in np.flatnonzero(~keep) if t[k] < t[keep][-1]]
    out: dict = {"anchor_spacing_updates": every, "power_lag_s": lag}
    for name, v in (("shaped", shaped), ("unshifted", thinned), ("linear", linear)):
        e = np.array([window_energy(v, float(t[0]), float(t[k])).energy_j - (c[k] - c[0]) for k in hidden])
        u = np.array([window_energy(v, float(t[0]), float(t[k])).uncertainty_j for k in hidden])
        out[name] = {
            "n": len(e),
            "rms_error_j": float(np.sqrt(np.mean(e**2))),
            "p99_abs_error_j": float(np.percentile(np.abs(e), 99)),
            "within_1u_pct": float(100 * np.mean(np.abs(e) <= u)),
            "within_2u_pct": float(100 * np.mean(np.abs(e) <= 2 * u)),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("results/gpu"))
    ap.add_argument("--idle-s", type=float, default=10.0)
    ap.add_argument("--bursts", type=int, default=7)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    src = NvmlSource()
    devices = src.open()[:1]
    # The counter is read on every poll here (costly, but this is a benchmark) so that every update is
    # seen; the hold-out below then judges the anchored reading the monitor does by default.
    sampler = Sampler([(src, devices)], interval_s=0.01, sample_log=args.out / "samples.csv", counter_anchor_s=0.0)
    key = devices[0].key
    bursts = []
    with sampler:
        t_start = sampler.now()
        time.sleep(args.idle_s)
        for _ in range(args.bursts):
            b0 = sampler.now()
            burn(4.0)
            bursts.append((b0, sampler.now()))
            time.sleep(2.0)
        time.sleep(args.idle_s - 2.0)
        t_end = sampler.now()
        time.sleep(0.3)
        view = sampler.view(key, t_start, t_end)
        status = sampler.states()[0].status

    period = update_period_s(view)
    diffs = np.diff(view.update_t_s)
    whole = window_energy(view, t_start, t_end)
    first_burst = window_energy(view, *bursts[0])
    all_bursts = (bursts[0][0], bursts[-1][1])
    busy = window_energy(view, *all_bursts)
    idle = window_energy(view, t_start + 1, t_start + args.idle_s - 1)
    rolling = [
        r
        for s in np.arange(t_start, t_end - 10, 1.0)
        if (r := counter_power_ratio(view, float(s), float(s) + 10, min_updates=10)) is not None
    ]
    result = {
        "device": devices[0].name,
        "uuid": devices[0].uuid,
        "power_limit_w": status.power_limit_w,
        "sm_clock_hz": status.sm_clock_hz,
        "recording_s": t_end - t_start,
        "polls": len(view.power_t_s),
        "counter_updates": len(view.update_t_s),
        "update_period_s": {
            "median": period,
            "p5": float(np.percentile(diffs, 5)),
            "p95": float(np.percentile(diffs, 95)),
        },
        "counter_over_instant_power": {
            "whole": counter_power_ratio(view, t_start, t_end),
            "rolling_10s_min": min(rolling),
            "rolling_10s_median": float(np.median(rolling)),
            "rolling_10s_max": max(rolling),
        },
        "windows": {
            name: {
                "start_s": w.start_s,
                "duration_s": w.duration_s,
                "energy_j": w.energy_j,
                "uncertainty_j": w.uncertainty_j,
                "relative_uncertainty_pct": 100 * w.uncertainty_j / w.energy_j,
                "average_power_w": w.average_power_w,
                "short_window": w.short_window,
            }
            for name, w in (("whole", whole), ("idle", idle), ("first_burst", first_burst), ("all_bursts", busy))
        },
        "power_lag_s": estimate_power_lag(view),
        "holdout": [holdout(view, every) for every in (2, 5, 10)],
    }
    (args.out / "recording.json").write_text(json.dumps(result, indent=2) + "\n")

    print(f"device: {result['device']}  ({result['polls']} polls, {result['counter_updates']} counter updates)")
    p = result["update_period_s"]
    print(
        f"counter update period: median {p['median'] * 1000:.1f} ms "
        f"(p5 {p['p5'] * 1000:.1f}, p95 {p['p95'] * 1000:.1f})"
    )
    r = result["counter_over_instant_power"]
    print(
        f"counter ÷ ∫ instant power: whole {r['whole']:.4f}; rolling 10 s "
        f"{r['rolling_10s_min']:.4f} … {r['rolling_10s_median']:.4f} … {r['rolling_10s_max']:.4f}"
    )
    print(f"{'window':<12} {'duration':>9} {'energy':>11} {'± u':>9} {'u %':>7} {'avg power':>10}")
    for name, w in result["windows"].items():
        print(
            f"{name:<12} {w['duration_s']:>8.2f}s {w['energy_j']:>10.1f}J {w['uncertainty_j']:>8.2f}J "
            f"{w['relative_uncertainty_pct']:>6.3f}% {w['average_power_w']:>9.1f}W"
        )
    print(f"instantaneous power runs {result['power_lag_s']} s late against the counter (learnt)")
    print("hold-out: keep every n-th counter update, predict the hidden ones from the rest")
    for h in result["holdout"]:
        for name in ("shaped", "unshifted", "linear"):
            r = h[name]
            print(
                f"  n={h['anchor_spacing_updates']:<2} {name:<9} rms {r['rms_error_j']:6.2f} J  "
                f"p99 |err| {r['p99_abs_error_j']:6.2f} J  within 1u {r['within_1u_pct']:3.0f} %  "
                f"within 2u {r['within_2u_pct']:3.0f} %  (lag {h['power_lag_s']})"
            )
    plot(view, bursts, args.out / "recording.png", devices[0].name)


def plot(view: SeriesView, bursts: list[tuple[float, float]], path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = view.update_t_s[0]
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(view.power_t_s - t0, view.power_w, lw=0.6, label="instantaneous power (field 186), 10 ms polls")
    mid = 0.5 * (view.update_t_s[1:] + view.update_t_s[:-1]) - t0
    step_w = np.diff(view.update_energy_j) / np.diff(view.update_t_s)
    ax.step(mid, step_w, where="mid", lw=1.0, label="energy counter, per update step")
    for b0, b1 in bursts:
        ax.axvspan(b0 - t0, b1 - t0, color="0.9", zorder=0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("power (W)")
    ax.set_title(f"{name}: counter steps vs instantaneous power (bursts shaded)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
