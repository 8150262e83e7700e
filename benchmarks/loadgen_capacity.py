"""How much open-loop traffic joulebench's replay sustains on this machine, and how well it times it.

Against ``joulebench mock-server`` (TTFT 50 ms, 10 ms per token), with ``joulebench replay`` as users
run it (one Locust process):

* sustained rate: constant arrivals at rising rates (short outputs, so the server is not the limit);
  the highest rate whose schedule lag p99 stays under 5 ms;
* TTFT error (measured minus the mock's configured 50 ms) p50/p99 at about 100 and 1000 concurrent
  streams (128 output tokens: each stream lasts about 1.3 s);
* client CPU seconds per 1000 requests.

The mock server shares the machine's cores, so at high rates part of the error is the server's.
Prints a table, writes JSON.

    python benchmarks/loadgen_capacity.py --out benchmarks/results/loadgen_capacity.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TTFT_S, ITL_S = 0.05, 0.01


def trace_file(folder: Path, n: int, n_in: int, n_out: int) -> Path:
    p = folder / f"fixed-{n_in}-{n_out}.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i},{n_in},{n_out}\n" for i in range(n)))
    return p


def replay(url: str, trace: Path, rate: float, duration: float, folder: Path) -> dict:
    summary = folder / f"summary-{rate}.json"
    records = folder / f"requests-{rate}.jsonl"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "joulebench", "replay", "--target", url, "--trace", str(trace),
           "--process", "constant", "--rate", str(rate), "--duration", str(duration), "--timeout", "60",
           "--records", str(records), "--summary", str(summary)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise SystemExit(f"replay at {rate}/s failed: {run.stderr[-2000:]}")
    s = json.loads(summary.read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    s["client_cpu_s_per_1000"] = 1000 * cpu / max(s["requests"], 1)
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="25,50,100,200,400,800", help="rates tried for the sustained rate")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/loadgen_capacity.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mock = subprocess.Popen(
            [sys.executable, "-m", "joulebench", "mock-server", "--port", "0", "--ttft-ms", str(TTFT_S * 1000),
             "--itl-ms", str(ITL_S * 1000)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert mock.stdout is not None
            url = re.search(r"listening on (\S+)", mock.stdout.readline()).group(1)  # type: ignore[union-attr]
            short = trace_file(folder, 1000, 64, 4)
            ladder = []
            for rate in (float(r) for r in args.rates.split(",")):
                s = replay(url, short, rate, args.duration, folder)
                lag = s["schedule_lag_s"]["p99"]
                ladder.append({"rate_per_s": rate, "achieved_per_s": s["achieved_rate_per_s"], "lag_p99_s": lag,
                               "ok": s["ok"], "requests": s["requests"],
                               "client_cpu_s_per_1000": s["client_cpu_s_per_1000"]})  # fmt: skip
                print(f"rate {rate:6.0f}/s: achieved {s['achieved_rate_per_s']:7.1f}/s, lag p99 {1000 * lag:7.2f} ms, "
                      f"{s['ok']}/{s['requests']} ok", flush=True)  # fmt: skip
                if lag >= 0.005:
                    break
            sustained = max((x["rate_per_s"] for x in ladder if x["lag_p99_s"] < 0.005), default=0.0)
            long = trace_file(folder, 1000, 64, 128)
            e2e = TTFT_S + 127 * ITL_S
            streams = {}
            for target in (100, 1000):
                rate = target / e2e
                s = replay(url, long, rate, args.duration, folder)
                ttft = s["ttft_s"]
                streams[str(target)] = {
                    "rate_per_s": rate, "achieved_per_s": s["achieved_rate_per_s"], "ok": s["ok"],
                    "requests": s["requests"], "concurrent_streams": rate * (s["e2e_s"]["p50"] or e2e),
                    "ttft_error_p50_ms": None if ttft["p50"] is None else 1000 * (ttft["p50"] - TTFT_S),
                    "ttft_error_p99_ms": None if ttft["p99"] is None else 1000 * (ttft["p99"] - TTFT_S),
                    "lag_p99_ms": 1000 * s["schedule_lag_s"]["p99"],
                    "client_cpu_s_per_1000": s["client_cpu_s_per_1000"],
                }  # fmt: skip
        finally:
            mock.terminate()
            mock.wait(timeout=30)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} ({platform.machine()}, {__import__('os').cpu_count()} cores)",
        "mock": {"ttft_ms": TTFT_S * 1000, "itl_ms": ITL_S * 1000},
        "sustained_rate_lag_p99_under_5ms_per_s": sustained,
        "ladder": ladder,
        "streams": streams,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'measure':<46} {'value':>12}")
    print(f"{'highest rate with schedule lag p99 < 5 ms':<46} {sustained:>10.0f}/s")
    for k, v in streams.items():
        print(f"{'~' + k + ' streams: achieved concurrency':<46} {v['concurrent_streams']:>12.0f}")
        print(f"{'~' + k + ' streams: TTFT error p50 / p99 (ms)':<46} "
              f"{v['ttft_error_p50_ms']:>5.1f} / {v['ttft_error_p99_ms']:.1f}")  # fmt: skip
        print(f"{'~' + k + ' streams: client CPU s per 1000 requests':<46} {v['client_cpu_s_per_1000']:>12.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
