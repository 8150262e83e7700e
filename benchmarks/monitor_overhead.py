"""The monitor's own cost: sampler CPU at 10 ms polling, and /metrics and /v1/energy latency.

Starts ``python -m monitor`` as its own process (as users run it) and measures it from outside:

* sampler CPU: the sampling thread's CPU seconds (its ``joulebench_monitor_sampler_cpu_seconds_total``)
  and the whole process's (psutil) over ``--duration`` seconds with nobody scraping; goal < 2 % of a core;
* poll rate achieved and poll lag;
* scrape latency: ``--scrapes`` sequential GETs of /metrics over one keep-alive connection, as
  Prometheus does; goal p99 < 10 ms; and /v1/energy over a 10 s window.

Prints a table and writes JSON (``--out``).

    python benchmarks/monitor_overhead.py --duration 60 --source auto
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import numpy as np
import psutil
from rich.console import Console
from rich.table import Table


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    if m is None:
        raise SystemExit(f"metric {name} missing from /metrics")
    return float(m.group(1))


def latencies_ms(client: httpx2.Client, path: str, n: int, params: dict | None = None) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        r = client.get(path, params=params)
        out[i] = (time.perf_counter() - t) * 1000
        r.raise_for_status()
    return out


def bare_sleep_loop_pct(interval_s: float, seconds: float = 3.0) -> float:
    """CPU (% of a core) of a loop that only sleeps every interval: the platform's floor for any poller."""
    n = int(seconds / interval_s)
    c0 = time.thread_time()
    for _ in range(n):
        time.sleep(interval_s)
    return 100 * (time.thread_time() - c0) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of idle sampling to measure CPU over")
    ap.add_argument("--source", default="auto", help="power source for the monitor (default: auto)")
    ap.add_argument("--interval-ms", type=float, default=10.0)
    ap.add_argument("--counter-interval-ms", type=float, default=1000.0, help="NVML counter anchor spacing")
    ap.add_argument("--scrapes", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/monitor_overhead.json"))
    args = ap.parse_args()

    cmd = [
        sys.executable,
        "-m",
        "monitor",
        "--port",
        "0",
        "--quiet",
        "--source",
        args.source,
        "--interval-ms",
        str(args.interval_ms),
        "--counter-interval-ms",
        str(args.counter_interval_ms),
    ]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            source_line = proc.stdout.readline().strip()
            m = re.search(r"listening on (\S+)", proc.stdout.readline())
            if m is None:
                raise SystemExit("the monitor did not start")
            url = m.group(1)
            ps = psutil.Process(proc.pid)
            with httpx2.Client(base_url=url, timeout=10) as client:
                time.sleep(2.0)  # past start-up
                before = client.get("/metrics").text
                cpu0, wall0 = ps.cpu_times(), time.monotonic()
                time.sleep(args.duration)
                cpu1, wall1 = ps.cpu_times(), time.monotonic()
                after = client.get("/metrics").text
                wall = wall1 - wall0
                sampler_cpu = metric(after, "joulebench_monitor_sampler_cpu_seconds_total") - metric(
                    before, "joulebench_monitor_sampler_cpu_seconds_total"
                )
                process_cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
                polls = metric(after, "joulebench_monitor_polls_total") - metric(
                    before, "joulebench_monitor_polls_total"
                )
                lag = metric(after, "joulebench_monitor_poll_lag_seconds")
                devices = len(client.get("/v1/devices").json()["devices"])

                scrape = latencies_ms(client, "/metrics", args.scrapes)
                now = client.get("/v1/devices").json()["now_s"]
                energy = latencies_ms(
                    client, "/v1/energy", max(args.scrapes // 5, 50), {"start": now - 10.5, "end": now - 0.5}
                )
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    floor = bare_sleep_loop_pct(args.interval_ms / 1000)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": psutil.cpu_count(),
        "source": source_line,
        "devices": devices,
        "interval_ms": args.interval_ms,
        "counter_interval_ms": args.counter_interval_ms,
        "duration_s": wall,
        "polls_per_s": polls / wall,
        "sampler_cpu_core_pct": 100 * sampler_cpu / wall,
        "process_cpu_core_pct": 100 * process_cpu / wall,
        "bare_sleep_loop_cpu_core_pct": floor,
        "poll_lag_last_s": lag,
        "metrics_ms": {q: float(np.percentile(scrape, p)) for q, p in (("p50", 50), ("p99", 99), ("max", 100))},
        "energy_ms": {q: float(np.percentile(energy, p)) for q, p in (("p50", 50), ("p99", 99), ("max", 100))},
        "goals": {"sampler_cpu_core_pct_max": 2.0, "metrics_p99_ms_max": 10.0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    ok = lambda good: "[green]met[/]" if good else "[red]missed[/]"  # noqa: E731
    t = Table(title=f"monitor overhead — {result['source']}")
    for col in ("measure", "value", "goal", ""):
        t.add_column(col)
    t.add_row("poll rate", f"{result['polls_per_s']:.1f} /s", f"{1000 / args.interval_ms:.0f} /s", "")
    t.add_row(
        "sampler thread CPU",
        f"{result['sampler_cpu_core_pct']:.2f} % of a core",
        "< 2 %",
        ok(result["sampler_cpu_core_pct"] < 2),
    )
    t.add_row("whole monitor process CPU", f"{result['process_cpu_core_pct']:.2f} % of a core", "", "")
    t.add_row("(a bare sleep loop at that rate)", f"{floor:.2f} % of a core", "", "the platform's floor")
    t.add_row(
        "/metrics p50 / p99 / max",
        "{p50:.2f} / {p99:.2f} / {max:.2f} ms".format(**result["metrics_ms"]),
        "p99 < 10 ms",
        ok(result["metrics_ms"]["p99"] < 10),
    )
    t.add_row("/v1/energy (10 s) p50 / p99", "{p50:.2f} / {p99:.2f} ms".format(**result["energy_ms"]), "", "")
    Console().print(t)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
