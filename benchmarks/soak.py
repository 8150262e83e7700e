"""Soaks: does anything grow or get lost over a long run?

* ``monitor``: ``python -m monitor`` at 10 ms polling for ``--minutes`` (the goal: 120), scraped every
  second like Prometheus does; its resident memory sampled each minute. Goal: growth under 5 % from the
  first minute (after the series' ring buffers have filled their ``--retention-s``) to the last.
* ``replay``: ``joulebench replay`` against the mock server at ``--rate`` req/s (goal: 200 for 30
  minutes); every scheduled request must have exactly one record, and the server must have seen each.

Prints a table and writes JSON (``--out``).

    python benchmarks/soak.py monitor --minutes 120
    python benchmarks/soak.py replay --minutes 30 --rate 200
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import psutil
from rich.console import Console
from rich.table import Table

from joulebench.processes import Child

console = Console(stderr=True)
ROOT = Path(__file__).resolve().parent.parent


def rss_tree_mb(pid: int) -> float:
    p = psutil.Process(pid)
    return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20


def soak_monitor(args: argparse.Namespace, work: Path) -> dict:
    # --fake-gpu: the monitor's NVML path on a machine without a GPU (a fake library at the NVML boundary)
    head = ([sys.executable, str(ROOT / "tests" / "fake_gpu_joulebench.py"), "--", "monitor"] if args.fake_gpu
            else [sys.executable, "-m", "monitor"])  # fmt: skip
    cmd = [*head, "--port", "0", "--interval-ms", "10", "--source", "nvml" if args.fake_gpu else args.source,
           "--retention-s", str(args.retention_s), "--quiet"]  # fmt: skip
    samples = []
    with Child("monitor", cmd, work / "monitor.log") as monitor, httpx2.Client(timeout=10) as client:
        url = monitor.wait_for_line(r"listening on (http://\S+)", 60).group(1)
        start = time.monotonic()
        next_sample = start
        scrapes = 0
        with console.status("monitor soak") as status:
            while (elapsed := time.monotonic() - start) < 60 * args.minutes:
                client.get(f"{url}/metrics").raise_for_status()
                scrapes += 1
                if time.monotonic() >= next_sample:
                    samples.append({"minute": elapsed / 60, "rss_mb": rss_tree_mb(monitor.pid or 0)})
                    next_sample += 60
                    status.update(f"monitor soak: {elapsed / 60:.0f}/{args.minutes:g} min, "
                                  f"RSS {samples[-1]['rss_mb']:.1f} MB")  # fmt: skip
                time.sleep(1.0)
        samples.append({"minute": (time.monotonic() - start) / 60, "rss_mb": rss_tree_mb(monitor.pid or 0)})
    settled = [s for s in samples if s["minute"] * 60 >= min(args.retention_s, 60 * args.minutes / 2)]
    first, last = (settled or samples)[0]["rss_mb"], samples[-1]["rss_mb"]
    return {"soak": "monitor", "minutes": args.minutes, "source": "fake nvml" if args.fake_gpu else args.source,
            "scrapes": scrapes, "rss_mb": samples,
            "growth_percent": 100 * (last - first) / first, "goal_percent": 5.0}  # fmt: skip


def soak_replay(args: argparse.Namespace, work: Path) -> dict:
    n = int(args.rate * 60 * args.minutes)
    trace = work / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i},32,16\n" for i in range(n + 1)))
    mock_cmd = [sys.executable, "-m", "joulebench", "mock-server", "--port", "0", "--ttft-ms", "50", "--itl-ms",
                "10", "--record-arrivals"]  # fmt: skip
    with Child("mock", mock_cmd, work / "mock.log") as mock:
        url = mock.wait_for_line(r"listening on (http://\S+)", 60).group(1)
        records = work / "requests.jsonl"
        run = subprocess.run(
            [sys.executable, "-m", "joulebench", "replay", "--target", url, "--trace", str(trace), "--process",
             "constant", "--rate", str(args.rate), "--duration", str(60 * args.minutes), "--records", str(records),
             "--summary", str(work / "summary.json")], capture_output=True, text=True, timeout=60 * args.minutes + 600,
        )  # fmt: skip
        if run.returncode != 0:
            raise SystemExit(f"the replay failed: {run.stderr[-2000:]}")
        arrivals = len(httpx2.get(f"{url}/mock/arrivals", timeout=60).json()["arrivals_s"])
    summary = json.loads((work / "summary.json").read_text())
    lines = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
    ids = [r["request_id"] for r in lines]
    return {"soak": "replay", "minutes": args.minutes, "rate_per_s": args.rate,
            "scheduled": summary["schedule"]["requests"], "records": len(lines), "unique_records": len(set(ids)),
            "server_arrivals": arrivals, "statuses": summary["statuses"],
            "schedule_lag_p99_s": summary["schedule_lag_s"]["p99"],
            "lost": summary["schedule"]["requests"] - len(set(ids))}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("soak", choices=["monitor", "replay"])
    ap.add_argument("--minutes", type=float, default=None, help="(default: 120 monitor, 30 replay)")
    ap.add_argument("--rate", type=float, default=200.0, help="replay: requests/s (default: %(default)s)")
    ap.add_argument("--source", default="auto", help="monitor: power source (default: %(default)s)")
    ap.add_argument("--fake-gpu", action="store_true", help="monitor: one fake GPU at the NVML boundary")
    ap.add_argument("--retention-s", type=float, default=600.0, help="monitor: series kept (default: %(default)s)")
    ap.add_argument("--out", type=Path, help="JSON (default: benchmarks/results/soak-SOAK.json)")
    args = ap.parse_args()
    args.minutes = args.minutes or (120.0 if args.soak == "monitor" else 30.0)
    with tempfile.TemporaryDirectory() as tmp:
        result = (soak_monitor if args.soak == "monitor" else soak_replay)(args, Path(tmp))
    result.update(date=time.strftime("%Y-%m-%d"), machine=f"{platform.node()} ({psutil.cpu_count()} cores)")
    t = Table(title=f"{args.soak} soak, {args.minutes:g} min, {result['machine']}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in result.items():
        if not isinstance(v, list | dict):
            t.add_row(k, f"{v:.3g}" if isinstance(v, float) else str(v))
    Console().print(t)
    out = args.out or Path(__file__).parent / "results" / f"soak-{args.soak}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
