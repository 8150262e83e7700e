"""How often the steadiness test flags a steady window, and how often it catches a ramp (issue 29, item 4).

Windows are simulated from recorded residence times (``e2e_from_schedule_s`` of the committed online
replays: every request of ``results/h200-llama3.1-8b/online/*x-*/``, or of the CPU ``make compare`` runs)
as an M/G/∞-like system: requests arrive (Poisson, or the Azure trace's own inter-arrival gaps from a
random offset) at a rate that gives a mean occupancy L = λ·E[S], and each stays a residence time drawn from
the records. Requests in system are read at the midpoints of 0.25 s slices, power per slice is
``min(cap, idle + k·n)`` averaged over the slice plus white noise. The window starts in steady state,
lasts ``--arrivals`` mean arrivals (the default plan's segments of 100–200 requests leave 100–150 in a
window), and its arrival rate is either constant (a false alarm when flagged) or a linear ramp from λ₀ to
2λ₀ or 3λ₀ across it (detected when flagged; λ₀ such that the window's mean occupancy is still L).

Both tests see the same windows: the old one (``old_trend``, a copy of the test before issue 29: a t on
the slope of 5 block means, 3 df, t = 0 under 10 slices) and ``estimands.windows.trend``. A window is
flagged when either series' trend is significant and material (the thresholds of ``estimands.windows``);
the new test's "not tested" windows are counted apart (they are never valid, but not a detection).
For scale, the Laplace test on the window's own arrival times (Cox & Lewis 1966: the mean arrival time
against the window's middle, the locally most powerful test of a trend in a Poisson rate) is printed in
brackets: the in-system count carries the same arrivals blurred by the residence times' spread, so a test
on it does less well wherever the window is many residence times long (in a window shorter than that, the
departures of earlier requests also tell the rate before the window, and the bracket is no bound).

    python benchmarks/steadiness.py --replicates 400 --out benchmarks/results/steadiness.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

from estimands.windows import IN_SYSTEM_CHANGE, POWER_CHANGE, t95, trend
from joulebench.files import open_text

ROOT = Path(__file__).resolve().parents[1]
POOLS = {
    "h200": "results/h200-llama3.1-8b/online/*x-*/requests.jsonl.gz",
    "cpu": "results/cpu-make-compare/*/online/*x-*/requests.jsonl.gz",
}
TRACE = Path("/work/shared/traces/AzureLLMInferenceTrace_conv.csv")
SLICE_S = 0.25
IDLE_W, K_W, CAP_W, NOISE_W = 120.0, 130.0, 700.0, 10.0  # H200: ~500 W at 3 in flight, 700 W cap


def old_trend(times_s: Sequence[float], values: Sequence[float]) -> tuple[float, float, bool]:
    """THE OLD TEST (before issue 29), kept for the comparison: (mean, change, significant) from a t on the
    slope of 5 block means, 3 degrees of freedom; under 10 slices t = 0, never significant."""
    blocks = 5
    t, y = np.asarray(times_s, dtype=float), np.asarray(values, dtype=float)
    mean = float(y.mean()) if len(y) else math.nan
    if len(y) < 2 * blocks or t[-1] <= t[0]:
        return mean, 0.0, False
    parts = np.array_split(np.arange(len(y)), blocks)
    bt = np.array([t[p].mean() for p in parts])
    by = np.array([y[p].mean() for p in parts])
    slope, intercept = np.polyfit(bt, by, 1)
    resid = by - (slope * bt + intercept)
    se = math.sqrt(float(resid @ resid) / (blocks - 2) / float(((bt - bt.mean()) ** 2).sum()))
    t_stat = float(slope / se) if se > 0 else (math.inf if slope else 0.0)
    return mean, float(slope * (t[-1] - t[0])), abs(t_stat) > t95(blocks - 2)


def material(mean: float, change: float, share: float, floor: float = 0.0) -> bool:
    return abs(change) > max(share * abs(mean), floor)


def residences(pool: str) -> np.ndarray:
    out = []
    for path in sorted(ROOT.glob(POOLS[pool])):
        with open_text(path) as f:
            out += [r["e2e_from_schedule_s"] for r in map(json.loads, f) if r.get("e2e_from_schedule_s")]
    return np.asarray(out, dtype=float)


def trace_gaps(path: Path) -> np.ndarray | None:
    if not path.exists():
        return None
    with open_text(path) as f:
        next(f)
        stamps = [datetime.fromisoformat(line.split(",", 1)[0][:26]).timestamp() for line in f]
    gaps = np.diff(np.sort(stamps))
    return gaps[gaps >= 0] / gaps.mean()


def window(
    rng: np.random.Generator, stays: np.ndarray, occupancy: float, arrivals: float, ramp: float,
    gaps: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """One window: slice midpoints, requests in system at them, power per slice, and the arrival times and
    residence times of the requests that arrive in it (what its records give)."""
    mean_s = float(stays.mean())
    rate = occupancy / mean_s  # the window's mean arrival rate
    span = arrivals / rate
    lam0 = 2 * rate / (1 + ramp)
    lead = float(stays.max())  # arrivals before the window, at λ₀, so that it opens in steady state
    total = lam0 * lead + lam0 * span * (1 + ramp) / 2  # the cumulative intensity at the window's end
    count = int(total * 1.5 + 50)
    if gaps is None:
        u = np.cumsum(rng.exponential(1.0, count))
    else:
        start = int(rng.integers(0, len(gaps) - count))
        u = np.cumsum(gaps[start : start + count])
    u = u[u < total]
    # operational time u → clock time t: Λ(t) = λ₀(t + lead) before 0, then λ₀(lead + t + (r−1)t²/2T)
    x = u / lam0 - lead
    a = (ramp - 1) / (2 * span)
    t = np.where(x < 0, x, (np.sqrt(1 + 4 * a * np.maximum(x, 0)) - 1) / (2 * a) if a else x)
    s = rng.choice(stays, len(t))
    sub = 8
    fine = (np.arange(int(span / SLICE_S) * sub) + 0.5) * SLICE_S / sub
    starts, ends = np.sort(t), np.sort(t + s)
    n_fine = np.searchsorted(starts, fine, side="right") - np.searchsorted(ends, fine, side="right")
    power = np.minimum(CAP_W, IDLE_W + K_W * n_fine).reshape(-1, sub).mean(axis=1)
    power = power + rng.normal(0.0, NOISE_W, len(power))
    mids = (np.arange(len(power)) + 0.5) * SLICE_S
    n = (np.searchsorted(starts, mids, side="right") - np.searchsorted(ends, mids, side="right")).astype(float)
    inside = (t >= 0) & (t < span)
    return mids, n, power, t[inside], s[inside]


def laplace(arrivals_s: np.ndarray, span: float) -> bool:
    """Cox and Lewis's test for a trend in a Poisson rate: the mean arrival time against the window's middle."""
    k = len(arrivals_s)
    return k > 0 and abs((arrivals_s.mean() / span - 0.5) * math.sqrt(12 * k)) > 1.96


def judge(
    stays: np.ndarray, occupancy: float, arrivals: float, ramp: float, gaps: np.ndarray | None, reps: int, seed: int
) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    old = new = untested = bound = 0
    dfs = []
    for _ in range(reps):
        mids, n, power, arr, own = window(rng, stays, occupancy, arrivals, ramp, gaps)
        on, oc, os_ = old_trend(mids, n)
        pm, pc, ps = old_trend(mids, power)
        old += (os_ and material(on, oc, IN_SYSTEM_CHANGE, 1.0)) or (ps and material(pm, pc, POWER_CHANGE))
        nt, pt = trend(mids, n, own), trend(mids, power, own)
        if not nt.tested:
            untested += 1
            continue
        dfs.append(nt.df)
        new += (nt.significant and nt.material(IN_SYSTEM_CHANGE, 1.0)) or (pt.significant and pt.material(POWER_CHANGE))
        bound += laplace(arr, len(mids) * SLICE_S)
    tested = reps - untested
    return {
        "old_flagged": old / reps,
        "new_flagged": new / tested if tested else math.nan,
        "new_not_tested": untested / reps,
        "laplace_flagged": bound / tested if tested else math.nan,
        "df_median": float(np.median(dfs)) if dfs else math.nan,
        "slices": len(mids),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", choices=sorted(POOLS), default="h200", help="residence times (default: %(default)s)")
    p.add_argument("--occupancy", default="0.5,1,2,4,8,16,64", help="mean requests in system L = λ·E[S]")
    p.add_argument("--arrivals", type=float, default=120.0, help="mean arrivals in a window (default: %(default)s)")
    p.add_argument("--ramps", default="2,3", help="the arrival rate at the window's end ÷ at its start")
    p.add_argument("--replicates", type=int, default=400)
    p.add_argument("--arrival-process", choices=("poisson", "trace"), default="poisson")
    p.add_argument("--trace", type=Path, default=TRACE, help="for --arrival-process trace (its TIMESTAMP column)")
    p.add_argument("--seed", type=int, default=29)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    stays = residences(args.pool)
    gaps = trace_gaps(args.trace) if args.arrival_process == "trace" else None
    ramps = [float(r) for r in args.ramps.split(",")]
    rows = []
    started = time.perf_counter()
    for i, occ in enumerate(float(x) for x in args.occupancy.split(",")):
        row: dict[str, object] = {"occupancy": occ}
        for k, ramp in enumerate([1.0, *ramps]):
            seed = args.seed + 100 * i + k
            row[f"ramp_{ramp:g}"] = judge(stays, occ, args.arrivals, ramp, gaps, args.replicates, seed)
        rows.append(row)
    head = f"{'L':>5} {'slices':>6} {'df':>4} {'untested':>8} | {'false alarms old/new':>20} |"
    head += "".join(f" {f'{r:g}x ramp old/new (arrivals)':>30} |" for r in ramps)
    print(f"pool {args.pool} ({len(stays)} residence times, mean {stays.mean():.2f} s), {args.arrival_process} "
          f"arrivals, {args.arrivals:g} a window, {args.replicates} windows a cell")  # fmt: skip
    print(head)
    for row in rows:
        flat = row["ramp_1"]
        line = f"{row['occupancy']:>5g} {flat['slices']:>6d} {flat['df_median']:>4.0f} {flat['new_not_tested']:>8.0%} |"
        line += f" {flat['old_flagged']:>9.1%} / {flat['new_flagged']:>6.1%}  |"
        for ramp in ramps:
            c = row[f"ramp_{ramp:g}"]
            line += f" {c['old_flagged']:>11.1%} / {c['new_flagged']:>6.1%} ({c['laplace_flagged']:>5.1%}) |"
        print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "benchmark": "steadiness", "date": time.strftime("%Y-%m-%d"), "host": platform.node(),
            "pool": args.pool, "residence_mean_s": float(stays.mean()), "residences": len(stays),
            "arrival_process": args.arrival_process, "arrivals_per_window": args.arrivals,
            "replicates": args.replicates, "seed": args.seed, "slice_s": SLICE_S,
            "power_model": {"idle_w": IDLE_W, "k_w_per_request": K_W, "cap_w": CAP_W, "noise_w": NOISE_W},
            "wall_s": time.perf_counter() - started, "rows": rows,
        }, indent=1) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
