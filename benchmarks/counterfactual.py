"""Does the attribution charge requests what they cost? The counterfactual check against a running server.

Replays the first ``--requests`` requests of a trace at ``--rate`` with every request (A) and with every
``--every``-th left out (B), ABBA, reads each over the same span, and compares ΔE = E(A) − E(B) with the
dynamic energy the attribution charges the left-out requests in run A (``compare.counterfactual``, which
``joulebench compare --counterfactual K`` also runs). Prints a table and writes JSON (``--out``).

    python benchmarks/counterfactual.py --target http://127.0.0.1:8000 --monitor http://127.0.0.1:9400 \\
        --trace-dir TRACES --requests 200 --rate 2 --every 3
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from compare.counterfactual import counterfactual
from compare.experiment import segment_options
from loadgen.client import served_model
from loadgen.traces import resolve_trace
from monitor.meter import MonitorClient, stable_power


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help="the running OpenAI server")
    p.add_argument("--monitor", required=True, help="the running joulebench monitor")
    p.add_argument("--trace", default="azure-conv")
    p.add_argument("--trace-dir", default="")
    p.add_argument("--requests", type=int, default=200, help="the schedule's requests (default: %(default)s)")
    p.add_argument("--rate", type=float, default=1.0, help="× the trace's own rate (default: %(default)s)")
    p.add_argument("--every", type=int, default=3, help="leave out every K-th request (default: %(default)s)")
    p.add_argument("--order", default="ABBA", help="A: all requests, B: left out (default: %(default)s)")
    p.add_argument("--work", type=Path, default=Path("runs/counterfactual"))
    p.add_argument("--out", type=Path, default=Path("counterfactual.json"))
    args = p.parse_args()
    console = Console(stderr=True)
    meter = MonitorClient(args.monitor)
    _, max_len = served_model(args.target)
    trace = resolve_trace(args.trace, trace_dir=Path(args.trace_dir) if args.trace_dir else None)
    run = argparse.Namespace(trace=args.trace, trace_dir=args.trace_dir, process="trace", cv=1.0, seed=0,
                             warmup_s=0.0, window_s=0.0, start=0.0, max_model_len=max_len, requests=args.requests,
                             overlong="drop", request_timeout_s=300.0, drain_s=120.0)  # fmt: skip
    opts = segment_options(run, 0.0, args.rate, trace.rate_per_s, max_len)
    with console.status("loaded-idle power, until stable"):
        idle = stable_power(meter, max_s=60.0)
    result = counterfactual(run, opts, args.target, meter, args.work, args.every, idle.power_w, console, args.order)
    result.update(benchmark="counterfactual", date=time.strftime("%Y-%m-%d"), host=platform.node(),
                  devices=meter.devices(), loaded_idle_w=idle.power_w, trace=args.trace, rate=args.rate)  # fmt: skip
    t = Table(title=f"counterfactual: one in {args.every} of {args.requests} requests left out, {args.order}")
    for col in ("E(A) J", "E(B) J", "ΔE J", "attributed J", "attributed ÷ ΔE"):
        t.add_column(col, justify="right")
    t.add_row("/".join(f"{v:.1f}" for v in result["energy_a_j"]), "/".join(f"{v:.1f}" for v in result["energy_b_j"]),
              f"{result['delta_j']:.1f} ± {result['delta_uncertainty_j']:.1f}", f"{result['attributed_dynamic_j']:.1f}",
              "–" if result["ratio"] is None else f"{result['ratio']:.3f}")  # fmt: skip
    console.print(t)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
