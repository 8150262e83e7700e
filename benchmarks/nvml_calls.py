"""What each NVML call the monitor makes costs: wall and CPU time per call, on a real GPU.

The sampler's CPU at 10 ms polling is the sum of these per poll. Prints a table, writes JSON.

    python benchmarks/nvml_calls.py --reps 300 --out results/nvml_calls.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import pynvml


def cost(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    fn()
    w0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - w0) / reps * 1e6, (time.thread_time() - c0) / reps * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("results/nvml_calls.json"))
    args = ap.parse_args()
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    calls: dict[str, Callable[[], object]] = {
        "nvmlDeviceGetTotalEnergyConsumption": lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h),
        "nvmlDeviceGetFieldValues(POWER_INSTANT)": lambda: pynvml.nvmlDeviceGetFieldValues(h, [186]),
        "nvmlDeviceGetFieldValues(TOTAL_ENERGY)": lambda: pynvml.nvmlDeviceGetFieldValues(h, [83]),
        "nvmlDeviceGetFieldValues(ENERGY, POWER_INSTANT)": lambda: pynvml.nvmlDeviceGetFieldValues(h, [83, 186]),
        "nvmlDeviceGetPowerUsage": lambda: pynvml.nvmlDeviceGetPowerUsage(h),
        "nvmlDeviceGetClockInfo(SM)": lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
        "nvmlDeviceGetUtilizationRates": lambda: pynvml.nvmlDeviceGetUtilizationRates(h),
        "nvmlDeviceGetTemperature": lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
        "nvmlDeviceGetMemoryInfo": lambda: pynvml.nvmlDeviceGetMemoryInfo(h),
        "nvmlDeviceGetCurrentClocksEventReasons": lambda: pynvml.nvmlDeviceGetCurrentClocksEventReasons(h),
    }
    rows = {}
    print(f"{'call':<50} {'wall µs':>9} {'CPU µs':>9}")
    for name, fn in calls.items():
        try:
            wall, cpu = cost(fn, args.reps)
        except pynvml.NVMLError as err:
            print(f"{name:<50} {err}")
            continue
        rows[name] = {"wall_us": wall, "cpu_us": cpu}
        print(f"{name:<50} {wall:>9.1f} {cpu:>9.1f}")
    fv = pynvml.nvmlDeviceGetFieldValues(h, [83, 186])
    timestamps = [(f.fieldId, f.timestamp, f.latencyUsec) for f in fv]
    print("field timestamps (id, µs, latency µs):", timestamps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": pynvml.nvmlDeviceGetName(h), "calls": rows}, indent=2) + "\n")
    pynvml.nvmlShutdown()


if __name__ == "__main__":
    main()
