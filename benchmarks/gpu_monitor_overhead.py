"""Does the monitor change what it measures? GPU power under the same workload with the sampler at 10 ms
and with no monitor at all, alternated.

Starts vLLM (a preset, dummy weights) once; then ``--pairs`` times: one replay with ``python -m monitor
--interval-ms 10`` running (as users run it) and one without, in alternating order. The GPU's energy in
each replay's window is read here from NVML's counter, twice per run (start and end), so both arms are
measured the same way and only the monitor differs. Prints a table and writes JSON (``--out``).

    python benchmarks/gpu_monitor_overhead.py --model llama-3.1-8b --trace-dir TRACES --pairs 3
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pynvml
from rich.console import Console
from rich.table import Table

from joulebench.processes import Child, free_port
from server.launch import VllmServer, vllm_install
from server.models import resolve_model
from server.options import EngineOptions


def gpu_energy_j(handles: list) -> float:
    return sum(pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in handles) / 1000.0


def replay(url: str, args: argparse.Namespace, out: Path, seed: int) -> None:
    cmd = [sys.executable, "-m", "loadgen", "replay", "--target", url, "--trace", args.trace, "--trace-dir",
           args.trace_dir, "--process", "poisson", "--rate", str(args.rate), "--duration", str(args.duration_s),
           "--seed", "0", "--prompt-seed", str(seed), "--records", str(out / f"requests-{seed}.jsonl")]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--trace", default="azure-conv")
    p.add_argument("--trace-dir", default="")
    p.add_argument("--rate", type=float, default=4.0, help="Poisson requests/s (default: %(default)s)")
    p.add_argument("--duration-s", type=float, default=40.0, help="per replay (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=3, help="monitor-on/off pairs (default: %(default)s)")
    p.add_argument("--work", type=Path, default=Path("runs/gpu-overhead"))
    p.add_argument("--out", type=Path, default=Path("gpu_monitor_overhead.json"))
    args = p.parse_args()
    console = Console(stderr=True)
    args.work.mkdir(parents=True, exist_ok=True)

    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    spec = resolve_model(args.model, args.work / "models")
    server = VllmServer(spec, EngineOptions(enforce_eager=True), args.work / "vllm.log", port=free_port())
    runs = []
    try:
        server.start()
        with console.status("starting vLLM"):
            server.wait_ready(900)
        replay(server.url, args, args.work, seed=999)  # warm-up, not measured
        for k in range(2 * args.pairs):
            monitor_on = (k % 2 == 0) == (k // 2 % 2 == 0)  # on, off, off, on, on, off: no drift favours one arm
            monitor = None
            if monitor_on:
                cmd = [sys.executable, "-m", "monitor", "--source", "nvml", "--interval-ms", "10", "--port", "0",
                       "--quiet"]  # fmt: skip
                monitor = Child("monitor", cmd, args.work / f"monitor-{k}.log").start()
                monitor.wait_for_line(r"listening on", 60)
                time.sleep(2.0)
            t0, e0 = time.time(), gpu_energy_j(handles)
            with console.status(f"run {k + 1}/{2 * args.pairs}: monitor {'on' if monitor_on else 'off'}"):
                replay(server.url, args, args.work, seed=k)
            t1, e1 = time.time(), gpu_energy_j(handles)
            if monitor is not None:
                monitor.stop()
            runs.append(
                {"monitor": monitor_on, "seconds": t1 - t0, "energy_j": e1 - e0, "power_w": (e1 - e0) / (t1 - t0)}
            )
    finally:
        server.stop()

    on = np.array([r["power_w"] for r in runs if r["monitor"]])
    off = np.array([r["power_w"] for r in runs if not r["monitor"]])
    diff = float(on.mean() - off.mean())
    se = math.sqrt(on.var(ddof=1) / len(on) + off.var(ddof=1) / len(off))
    result = {
        "benchmark": "gpu_monitor_overhead", "date": time.strftime("%Y-%m-%d"), "host": platform.node(),
        "gpu": pynvml.nvmlDeviceGetName(handles[0]), "vllm": vllm_install().version, "model": spec.name,
        "weights": spec.weights, "workload": {"trace": args.trace, "process": "poisson", "rate_per_s": args.rate,
                                              "duration_s": args.duration_s},
        "runs": runs, "monitor_on_w": {"mean": float(on.mean()), "sd": float(on.std(ddof=1))},
        "monitor_off_w": {"mean": float(off.mean()), "sd": float(off.std(ddof=1))},
        "difference_w": diff, "difference_95ci_w": [diff - 2 * se, diff + 2 * se],
        "within_noise": abs(diff) <= 2 * se,
    }  # fmt: skip
    pynvml.nvmlShutdown()
    t = Table(title=f"GPU power with and without the monitor (10 ms), {args.rate:g} req/s Poisson, {result['gpu']}")
    for col in ("arm", "runs", "mean W", "sd W"):
        t.add_column(col, justify="right")
    t.add_row("monitor on", str(len(on)), f"{on.mean():.1f}", f"{on.std(ddof=1):.1f}")
    t.add_row("monitor off", str(len(off)), f"{off.mean():.1f}", f"{off.std(ddof=1):.1f}")
    console.print(t)
    console.print(f"difference {diff:+.1f} W (95 % interval {diff - 2 * se:+.1f} to {diff + 2 * se:+.1f} W): "
                  + ("within noise" if result["within_noise"] else "NOT within noise"))  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
