"""``joulebench sweep``: energy per token against GPU clocks and power limits (DVFS), at each arrival rate.

For each setting (locked SM clocks × power limits) and each rate, an online replay against a running
server (warm-up, then the steady-state window, as in ``compare``): J/token, tokens per joule, TTFT and
TPOT p50/p99, the SM clock achieved in the window and the throttle reasons seen. Per rate, the Pareto
frontier of tokens per joule against TPOT p99, and the settings that meet the SLO. Maliakel et al.
(2025) found lower clocks can cut energy per token for a small latency cost; this measures it on the
user's own workload.

GPU settings change only with ``--allow-gpu-settings`` and are restored on every exit path (see
``monitor.gpu_control``). ``--dry-run`` reads the GPUs and prints the plan, changing nothing.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compare.replays import rate_plan, run_replay, signals_interrupt
from compare.rundir import rate_label, write_json
from estimands.summary import percentiles
from estimands.tokens import tokens_in_window
from estimands.windows import Window, steadiness
from loadgen.errors import LoadgenError
from monitor.gpu_control import GpuControl, GpuLimits, GpuSettingsError, RestoreGuard, Setting, parse_settings


def pareto(points: Sequence[tuple[float | None, float | None]]) -> list[bool]:
    """Which (tokens per joule: more is better, TPOT p99: less is better) points no other point beats."""
    out = []
    for i, (e, t) in enumerate(points):
        if e is None or t is None:
            out.append(False)
            continue
        beaten = any(
            j != i and e2 is not None and t2 is not None and e2 >= e and t2 <= t and (e2 > e or t2 < t)
            for j, (e2, t2) in enumerate(points)
        )
        out.append(not beaten)
    return out


def meets_slo(row: dict[str, Any], tpot_p99_ms: float | None, ttft_p99_ms: float | None) -> bool:
    for limit, key in ((tpot_p99_ms, "tpot_p99_s"), (ttft_p99_ms, "ttft_p99_s")):
        if limit is not None and (row[key] is None or row[key] * 1000 > limit):
            return False
    return not row["saturated"]


def analyze(rows: list[dict[str, Any]], tpot_p99_ms: float | None, ttft_p99_ms: float | None) -> dict[str, Any]:
    """Per rate: each row marked on the frontier or not and meeting the SLO or not; the best within the SLO."""
    per_rate: dict[str, Any] = {}
    for rate in dict.fromkeys(r["rate"] for r in rows):
        mine = [r for r in rows if r["rate"] == rate]
        for r, front in zip(mine, pareto([(r["tokens_per_joule"], r["tpot_p99_s"]) for r in mine]), strict=True):
            r["frontier"] = front
            r["meets_slo"] = meets_slo(r, tpot_p99_ms, ttft_p99_ms)
        ok = [r for r in mine if r["meets_slo"] and r["tokens_per_joule"] is not None]
        best = max(ok, key=lambda r: r["tokens_per_joule"]) if ok else None
        per_rate[rate_label(rate)] = {"best_within_slo": best["setting"] if best else None,
                                      "frontier": [r["setting"] for r in mine if r["frontier"]]}  # fmt: skip
    return per_rate


class ClockWatch:
    """Reads the GPUs' SM clocks and throttle reasons every ``interval_s`` in a thread, with times."""

    def __init__(self, control: GpuControl, interval_s: float = 0.5) -> None:
        self._control = control
        self._interval_s = interval_s
        self.samples: list[tuple[float, list[tuple[int, frozenset[str]]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clock-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.samples.append((time.time(), self._control.clocks()))
            except GpuSettingsError:
                continue  # a missed read; the window's figure uses the others

    def window(self, t0: float, t1: float) -> tuple[float | None, list[str]]:
        """The mean SM clock (MHz, over GPUs and reads) and every throttle reason seen in [t0, t1]."""
        inside = [gpus for t, gpus in self.samples if t0 <= t <= t1]
        clocks = [mhz for gpus in inside for mhz, _ in gpus]
        reasons = sorted({reason for gpus in inside for _, rs in gpus for reason in rs})
        return (sum(clocks) / len(clocks) if clocks else None), reasons

    def __enter__(self) -> ClockWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def measure(
    args: argparse.Namespace,
    setting: Setting,
    rate: float,
    offered: float,
    summary: dict[str, Any],
    records: list[dict[str, Any]],
    reading: Any,
    clocks: tuple[float | None, list[str]],
    cut: bool,
) -> dict[str, Any]:
    """One (setting, rate) row from the replay's records and the window's energy."""
    s0 = summary["schedule_start_s"]
    t0, t1 = s0 + args.warmup_s, s0 + args.warmup_s + args.window_s
    n_in, n_out = tokens_in_window(records, t0, t1)
    ok = [r for r in records if r["status"] == "ok" and t0 <= r["scheduled_s"] < t1]
    ttft = percentiles([v for r in ok if (v := r.get("ttft_s")) is not None])
    tpot = percentiles([v for r in ok if (v := r.get("tpot_s")) is not None])
    e, tokens = reading.energy_j, n_in + n_out
    done = [r for r in records if r["status"] == "ok" and t0 <= (r.get("last_token_s") or -1) < t1]
    return {
        "setting": setting.label, "sm_clock_mhz": setting.sm_clock_mhz, "power_limit_w": setting.power_limit_w,
        "rate": rate, "offered_rate_per_s": offered, "achieved_rate_per_s": len(done) / args.window_s,
        "window": [t0, t1], "energy_j": e, "uncertainty_j": reading.uncertainty_j,
        "average_power_w": e / args.window_s, "tokens": {"input": n_in, "output": n_out},
        "j_per_token": e / tokens if tokens else None, "j_per_output_token": e / n_out if n_out else None,
        "tokens_per_joule": tokens / e if e > 0 else None,
        "ttft_p50_s": ttft["p50"], "ttft_p99_s": ttft["p99"], "tpot_p50_s": tpot["p50"], "tpot_p99_s": tpot["p99"],
        "achieved_sm_clock_mhz": clocks[0], "throttle_reasons": clocks[1],
        "saturated": bool(steadiness(records, [t0, t1], [e], Window(t0, t1, 0.0, 0.0, t1))["saturated"] or cut),
        "statuses": {s: sum(1 for r in records if r["status"] == s) for s in {r["status"] for r in records}},
    }  # fmt: skip


class Sweep:
    def __init__(self, args: argparse.Namespace, run_dir: Path, control: GpuControl | None = None) -> None:
        from rich.console import Console

        self.args = args
        self.run_dir = run_dir
        self.console = Console(stderr=True)
        self.control = control or GpuControl()

    def say(self, text: str) -> None:
        self.console.print(f"[bold]sweep[/bold] {text}")

    def run(self) -> int:
        args = self.args
        control = self.control.open()
        try:
            original = control.limits()
            settings = parse_settings(args.sm_clocks, args.power_limits, original)
            plan, trace = rate_plan(args, args.max_model_len)
            if args.dry_run:
                self._print_plan(original, settings, plan, trace)
                return 0
            if not args.allow_gpu_settings:
                raise LoadgenError(
                    f"this sweep would change {len(original)} GPU(s) to {len(settings)} setting(s): pass "
                    "--allow-gpu-settings to let it (they are restored after), or --dry-run to see the plan"
                )
            return self._sweep(control, original, settings, plan, trace)
        finally:
            control.close()

    def _print_plan(self, gpus: list[GpuLimits], settings: list[Setting], plan: list, trace: dict) -> None:
        from rich.table import Table

        t = Table(title="GPUs now (nothing is changed by --dry-run)")
        for col in ("GPU", "name", "SM MHz", "memory MHz", "supported SM MHz", "power limit W", "default W",
                    "allowed W"):  # fmt: skip
            t.add_column(col)
        for g in gpus:
            t.add_row(str(g.index), g.name, str(g.sm_clock_mhz), str(g.memory_clock_mhz),
                      f"{g.min_sm_clock_mhz}–{g.max_sm_clock_mhz} ({len(g.supported_sm_clocks_mhz)} steps)",
                      f"{g.power_limit_w:g}", f"{g.default_power_limit_w:g}",
                      f"{g.min_power_limit_w:g}–{g.max_power_limit_w:g}")  # fmt: skip
        self.console.print(t)
        p = Table(title=f"plan: {len(settings)} setting(s) × {len(plan)} rate(s) of {trace['name']}")
        for col in ("setting", "rate", "offered req/s", "requests"):
            p.add_column(col)
        for s in settings:
            for m, _, n, offered in plan:
                p.add_row(s.label, rate_label(m), f"{offered:.2f}", str(n))
        self.console.print(p)
        per_run = self.args.warmup_s + self.args.window_s
        self.say(f"at least {len(settings) * len(plan) * per_run / 60:.1f} min of replays; clocks are unlocked and "
                 "power limits set back to the values above when it ends")  # fmt: skip

    def _sweep(self, control: GpuControl, original: list[GpuLimits], settings: list[Setting], plan: list,
               trace: dict) -> int:  # fmt: skip
        from monitor.meter import LocalMeter, MonitorClient

        args = self.args
        self.run_dir.mkdir(parents=True, exist_ok=True)
        out = {"command": ["joulebench", *sys.argv[1:]], "gpus": [g.to_json() for g in original],
               "trace": trace, "settings": [s.label for s in settings], "rows": [], "complete": False}  # fmt: skip
        write_json(self.run_dir / "sweep.json", out)
        guard = RestoreGuard(control, original).start()  # before any thread: it is a fork
        meter = MonitorClient(args.monitor) if args.monitor else LocalMeter(args.source)
        try:
            with signals_interrupt(), ClockWatch(control) as watch:
                run_index = 0
                for k, setting in enumerate(settings):
                    self.say(f"setting {k + 1}/{len(settings)}: {setting.label}")
                    control.apply(setting)
                    time.sleep(args.settle_s)
                    for m, opts, n, offered in plan:
                        run_index += 1
                        where = self.run_dir / "runs" / f"{k}-{rate_label(m)}"
                        summary, records, cut = run_replay(
                            args, opts, args.target, where, 1000 * (opts.jb_seed + 1) + run_index, n,
                            f"{setting.label} at {rate_label(m)} ({offered:.2f} req/s)", self.console,
                        )  # fmt: skip
                        s0 = summary["schedule_start_s"]
                        t0, t1 = s0 + args.warmup_s, s0 + args.warmup_s + args.window_s
                        row = measure(args, setting, m, offered, summary, records, meter.energy(t0, t1),
                                      watch.window(t0, t1), cut)  # fmt: skip
                        out["rows"].append(row)
                        out["per_rate"] = analyze(out["rows"], args.slo_tpot_p99_ms, args.slo_ttft_p99_ms)
                        write_json(self.run_dir / "sweep.json", out)
                        self.say(
                            f"{setting.label} at {rate_label(m)}: {_fmt(row['j_per_token'], 4)} J/token, TPOT p99 "
                            f"{_fmt(row['tpot_p99_s'], 4)} s, SM {_fmt(row['achieved_sm_clock_mhz'], 0)} MHz"
                        )
            out["complete"] = True
        finally:
            failures = control.restore(original) if control.changed else []
            guard.disarm()
            meter.close()
            out["restored"] = not failures
            write_json(self.run_dir / "sweep.json", out)
            if out["rows"]:
                self._report(out)
            if failures:
                raise GpuSettingsError("could not restore every GPU setting: " + "; ".join(failures))
        self.say("GPU settings restored")
        return 0

    def _report(self, out: dict[str, Any]) -> None:
        from rich.table import Table

        rows = out["rows"]
        t = Table(title="sweep: * on the tokens/J–TPOT p99 frontier, ✓ meets the SLO")
        for col in ("setting", "rate", "J/token", "tokens/J", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99",
                    "SM MHz", "throttle", ""):  # fmt: skip
            t.add_column(col, justify="right")
        lines = ["| " + " | ".join(c.header for c in t.columns) + " |", "|" + "---|" * len(t.columns)]
        for r in rows:
            cells = [r["setting"], rate_label(r["rate"]), _fmt(r["j_per_token"], 4), _fmt(r["tokens_per_joule"], 2),
                     _fmt(r["ttft_p50_s"], 3), _fmt(r["ttft_p99_s"], 3), _fmt(r["tpot_p50_s"], 4),
                     _fmt(r["tpot_p99_s"], 4), _fmt(r["achieved_sm_clock_mhz"], 0),
                     ",".join(r["throttle_reasons"]) or "–",
                     ("*" if r.get("frontier") else "") + ("✓" if r.get("meets_slo") else "")]  # fmt: skip
            t.add_row(*cells)
            lines.append("| " + " | ".join(cells) + " |")
        self.console.print(t)
        best = [f"- {rate}: best within the SLO: {v['best_within_slo'] or 'none'}" for rate, v in
                out.get("per_rate", {}).items()]  # fmt: skip
        text = ["# joulebench sweep", "", f"Trace {out['trace']['name']}; GPUs: "
                + ", ".join(f"{g['index']} {g['name']}" for g in out["gpus"]), "",
                *lines, "", *best, "", "![frontier](sweep.png)", ""]  # fmt: skip
        (self.run_dir / "sweep.md").write_text("\n".join(text))
        _plot(rows, self.run_dir / "sweep.png")


def _fmt(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = list(dict.fromkeys(r["rate"] for r in rows))
    fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 4), squeeze=False)
    for ax, rate in zip(axes[0], rates, strict=True):
        mine = [r for r in rows if r["rate"] == rate and r["tpot_p99_s"] is not None and r["tokens_per_joule"]]
        for r in mine:
            ax.scatter(1000 * r["tpot_p99_s"], r["tokens_per_joule"], marker="o" if r.get("meets_slo") else "x")
            ax.annotate(r["setting"], (1000 * r["tpot_p99_s"], r["tokens_per_joule"]), fontsize=7)
        front = sorted((r for r in mine if r.get("frontier")), key=lambda r: r["tpot_p99_s"])
        ax.plot([1000 * r["tpot_p99_s"] for r in front], [r["tokens_per_joule"] for r in front], "k--", lw=1)
        ax.set(title=f"rate {rate_label(rate)}", xlabel="TPOT p99 (ms)", ylabel="tokens per joule")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
