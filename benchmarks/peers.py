"""joulebench's load generator beside its peers, on this machine, against the same mock server.

Tools: ``joulebench replay`` (headless, one Locust process; ``joulebench`` over its default HTTP client,
geventhttpclient, and ``joulebench http.client`` over the standard library's, the client to 0.1.0), vLLM's
``vllm bench serve`` (from the installed vLLM build, driven through ``vllm.benchmarks.serve``), and GuideLLM
(installed here into its own venv, ``.peers/guidellm``). Server: ``joulebench mock-server`` (TTFT 50 ms, 10 ms per
token) with ``--record-arrivals``; every request asks for 32 prompt tokens and exactly 128 output tokens.

The same arrival schedule for all: constant rate (vllm: ``--burstiness`` 1e6, i.e. gaps with a CV of
0.001; GuideLLM: ``constant``). Measured the same way for all, from outside:

* **schedule lag**: the server's arrival times against the ideal constant schedule, aligned so that no
  request is early; p99. A tool sustains a rate if every request completes and this p99 < 5 ms. (The
  mock shares the 2 cores: at high rates its own event loop delays arrivals too, for every tool alike.)
* **TTFT error**: the tool's own reported TTFT p50/p99 minus the configured 50 ms, at about 100 and 1000
  concurrent streams (each stream lasts 50 ms + 127 × 10 ms = 1.32 s).
* **client CPU per 1000 requests**: the tool's process tree's CPU seconds (getrusage of children), its
  start-up cost removed by subtracting a 50-request run.

Also: Locust's distributed mode (one master, ``--locust-workers`` workers, default two) against one
process, same lag bound; it can also run the whole ladder as a tool (``--tools "joulebench distributed"``).
On a machine with cores to spare, ``--mock-workers N`` lets the mock server itself keep up.
Prints one table, writes JSON (``--out``); the table is kept in ``benchmarks/README.md``.

    python benchmarks/peers.py --out benchmarks/results/peers.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from joulebench.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
TTFT_S, ITL_S, N_IN, N_OUT = 0.05, 0.01, 32, 128
N_OUT_SHORT = 4  # Locust distributed vs one process: short streams, so the client is what runs out first
STREAM_S = TTFT_S + (N_OUT - 1) * ITL_S
LAG_BOUND_S = 0.005
SETUP = {"mock_workers": 1, "locust_workers": 2}  # from the command line
GUIDELLM = "guidellm==0.8.1"
console = Console(stderr=True)


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    before = children_cpu_s()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return out, children_cpu_s() - before


def schedule_lag_p99_s(arrivals: list[float], rate: float) -> float | None:
    if len(arrivals) < 2:
        return None
    a = np.sort(np.asarray(arrivals))
    late = a - (a[0] + np.arange(len(a)) / rate)
    return float(np.percentile(late - late.min(), 99))


class Mock:
    def __init__(self, work: Path) -> None:
        self.work = work

    def __enter__(self) -> Mock:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "joulebench", "mock-server", "--port", "0", "--ttft-ms", str(1000 * TTFT_S),
             "--itl-ms", str(1000 * ITL_S), "--record-arrivals", "--workers", str(SETUP["mock_workers"])],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = line.split("listening on ")[1].split()[0]
        return self

    def arrivals(self) -> list[float]:
        with urllib.request.urlopen(f"{self.url}/mock/arrivals", timeout=30) as r:
            return json.loads(r.read())["arrivals_s"]

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# -- the tools: each runs n requests at a constant rate ------------------------------------------------------


def figures(ttft_p50_s: float | None, ttft_p99_s: float | None, completed: int, cpu_s: float,
            client_lag_p99_s: float | None = None) -> dict:  # fmt: skip
    """What a tool reports: TTFT p50/p99, requests completed, CPU seconds, and its own schedule lag p99 if it
    measures one (joulebench: send minus scheduled time; GuideLLM: its dispatch delay; vllm: none)."""
    return {"ttft_p50_s": ttft_p50_s, "ttft_p99_s": ttft_p99_s, "completed": completed, "cpu_s": cpu_s,
            "client_lag_p99_s": client_lag_p99_s}  # fmt: skip


def fixed_trace(work: Path, n: int, n_out: int) -> Path:
    trace = work / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i},{N_IN},{n_out}\n" for i in range(n)))
    return trace


def joulebench(url: str, rate: float, n: int, work: Path, n_out: int = N_OUT, client: str | None = None) -> dict:
    """``joulebench replay``, one process, over its default HTTP client or ``client``."""
    trace = fixed_trace(work, n, n_out)
    summary, records = work / "summary.json", work / "requests.jsonl"
    records.unlink(missing_ok=True)
    out, cpu = run([sys.executable, "-m", "joulebench", "replay", "--target", url, "--trace", str(trace),
                    "--process", "constant", "--rate", str(rate), "--duration", str(n / rate - 0.5 / rate),
                    "--timeout", "120", "--records", str(records), "--summary", str(summary),
                    *(["--client", client] if client else [])], timeout=600)  # fmt: skip
    if out.returncode not in (0, 1):  # 1: finished, some requests failed (counted: completed is the ok ones)
        raise SystemExit(f"joulebench replay failed: {out.stderr[-2000:]}")
    s = json.loads(summary.read_text())
    got = figures(s["ttft_s"]["p50"], s["ttft_s"]["p99"], s["ok"], cpu, s["schedule_lag_s"]["p99"])
    return got | {"statuses": s["statuses"]}


def joulebench_distributed(url: str, rate: float, n: int, work: Path, n_out: int = N_OUT) -> dict:
    """Locust's distributed mode: a master and ``--locust-workers`` workers, each sending its share of one schedule."""
    from estimands.summary import summarize
    from loadgen.records import read_records

    trace = fixed_trace(work, n, n_out)
    for old in work.glob("requests.worker*.jsonl"):
        old.unlink()
    duration = n / rate - 0.5 / rate
    common = [sys.executable, "-m", "joulebench", "locust", "--headless", "--jb-records", str(work / "requests.jsonl")]
    port = free_port()
    before = children_cpu_s()
    k = SETUP["locust_workers"]
    master = subprocess.Popen(
        [*common, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
         "--expect-workers", str(k), "-u", str(k), "-r", "100", "-t", f"{int(duration + 15)}s", "--host", url,
         "--jb-trace", str(trace), "--jb-process", "constant", "--jb-rate", str(rate), "--jb-duration", str(duration),
         "--jb-timeout", "120"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    workers = [subprocess.Popen([*common, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(k)]  # fmt: skip
    for p in (master, *workers):
        p.wait(timeout=duration + 120)
    cpu = children_cpu_s() - before
    records = [r for f in sorted(work.glob("requests.worker*.jsonl")) for r in read_records(f)]
    s = summarize(records)
    return figures(s["ttft_s"]["p50"], s["ttft_s"]["p99"], s["ok"], cpu, s["schedule_lag_s"]["p99"])


VLLM_BENCH = """
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def vllm_bench(url: str, rate: float, n: int, work: Path) -> dict:
    out, cpu = run([sys.executable, "-c", VLLM_BENCH, "--backend", "openai", "--base-url", url, "--endpoint",
                    "/v1/completions", "--model", "mock", "--tokenizer", str(work / "tokenizer"), "--dataset-name",
                    "random", "--random-input-len", str(N_IN), "--random-output-len", str(N_OUT), "--num-prompts",
                    str(n), "--request-rate", str(rate), "--burstiness", "1000000", "--ignore-eos", "--num-warmups",
                    "0", "--disable-tqdm", "--save-result", "--result-dir", str(work), "--result-filename",
                    "vllm.json", "--percentile-metrics", "ttft", "--metric-percentiles", "50,99"],
                   timeout=900)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"vllm bench serve failed: {out.stderr[-2000:]}")
    r = json.loads((work / "vllm.json").read_text())
    return figures(r["p50_ttft_ms"] / 1000, r["p99_ttft_ms"] / 1000, r["completed"], cpu)


def guidellm_venv(root: Path) -> Path:
    venv = root / ".peers" / "guidellm"
    exe = venv / "bin" / "guidellm"
    if not exe.exists():
        console.print(f"installing {GUIDELLM} into {venv} (torch's CPU build from this disk)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "torch==2.13.0", GUIDELLM], check=True)
    return exe


def guidellm(url: str, rate: float, n: int, work: Path) -> dict:
    exe = guidellm_venv(ROOT)
    report = work / "guidellm.json"
    report.unlink(missing_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out, cpu = run([str(exe), "run", "--backend", f"kind=openai_http,target={url},model=mock",
                    "--profile", f"kind=constant,rate={rate}", "--constraint", f"kind=max_requests,count={n}",
                    "--data", f"kind=synthetic_text,prompt_tokens={N_IN},output_tokens={N_OUT}",
                    "--tokenizer", f"kind=huggingface_auto,model={work / 'tokenizer'}",
                    "--output", f"kind=json,path={report}", "--disable-console-interactive"],
                   timeout=900, env=env)  # fmt: skip
    if out.returncode != 0 or not report.exists():
        raise SystemExit(f"guidellm failed: {(out.stdout + out.stderr)[-3000:]}")
    (bench,) = json.loads(report.read_text())["benchmarks"]
    ttft = bench["metrics"]["time_to_first_token_ms"]["successful"]["percentiles"]
    delay = bench["metrics"]["request_dispatch_delay"]["successful"]["percentiles"]["p99"]  # seconds
    return figures(ttft["p50"] / 1000, ttft["p99"] / 1000, int(bench["metrics"]["request_totals"]["successful"]), cpu,
                   delay)  # fmt: skip


TOOLS: dict[str, Callable[..., dict]] = {
    "joulebench": joulebench, "joulebench http.client": functools.partial(joulebench, client="http.client"),
    "vllm bench serve": vllm_bench, "GuideLLM": guidellm, "joulebench distributed": joulebench_distributed,
}  # fmt: skip
PEERS = ["joulebench", "joulebench http.client", "vllm bench serve", "GuideLLM"]


def measure(tool: str, rate: float, n: int, work: Path, **kwargs: int) -> dict:
    load_before = os.getloadavg()  # the machine may be shared: its 1/5/15-minute load averages, kept with each row
    with Mock(work) as mock:
        got = TOOLS[tool](mock.url, rate, n, work, **kwargs)
        lag = schedule_lag_p99_s(mock.arrivals(), rate)
    row = {"tool": tool, "rate_per_s": rate, "requests": n, "lag_p99_s": lag, **got,
           "loadavg_before": load_before, "loadavg_after": os.getloadavg()}  # fmt: skip
    own = "" if got["client_lag_p99_s"] is None else f" (its own: {1000 * got['client_lag_p99_s']:.1f} ms)"
    console.print(f"  {tool} at {rate:g}/s: {got['completed']}/{n} done, lag p99 {1000 * (lag or 0):.1f} ms{own}, "
                  f"TTFT p50/p99 {1000 * (got['ttft_p50_s'] or 0):.0f}/{1000 * (got['ttft_p99_s'] or 0):.0f} ms, "
                  f"CPU {got['cpu_s']:.1f} s")  # fmt: skip
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", default=",".join(PEERS), help="comma list, empty for none (default: %(default)s)")
    ap.add_argument("--distributed-rates", default="100,200,400,800,1200,1600",
                    help="the ladder for Locust's master and its workers (empty: skip)")  # fmt: skip
    ap.add_argument("--locust-workers", type=int, default=2, help="workers in distributed mode (default: %(default)s)")
    ap.add_argument("--mock-workers", type=int, default=1, help="the mock server's processes (default: %(default)s)")
    ap.add_argument("--rates", default="10,25,50,100,200", help="the ladder for the sustained rate")
    ap.add_argument("--seconds", type=float, default=8.0, help="of schedule per ladder rung")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "peers")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "peers.json")
    args = ap.parse_args()
    SETUP.update(mock_workers=args.mock_workers, locust_workers=args.locust_workers)
    args.work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "joulebench", "model", "tiny", "--out", str(args.work / "tokenizer")],
                   check=True, capture_output=True)  # fmt: skip
    rates = [float(r) for r in args.rates.split(",")]
    results: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} ({platform.machine()}, "
                     f"{os.cpu_count()} cores)", "mock": {"ttft_ms": 1000 * TTFT_S, "itl_ms": 1000 * ITL_S,
                     "input_tokens": N_IN, "output_tokens": N_OUT, "workers": SETUP["mock_workers"]},
                     "locust_workers": SETUP["locust_workers"], "loadavg_start": os.getloadavg(),
                     "tools": {}}  # fmt: skip
    for tool in [t for t in args.tools.split(",") if t]:
        console.print(f"[bold]{tool}[/bold]")
        ladder = []
        for rate in rates:
            row = measure(tool, rate, int(rate * args.seconds), args.work)
            ladder.append(row)
            if row["completed"] < row["requests"] or (row["lag_p99_s"] or 1) >= LAG_BOUND_S:
                break
        ok = [r["rate_per_s"] for r in ladder if r["completed"] == r["requests"] and r["lag_p99_s"] < LAG_BOUND_S]
        streams = {}
        for s in (100, 1000):
            rate = s / STREAM_S
            row = measure(tool, rate, int(rate * 10), args.work)
            streams[str(s)] = row | {"ttft_error_p50_ms": 1000 * (row["ttft_p50_s"] - TTFT_S),
                                     "ttft_error_p99_ms": 1000 * (row["ttft_p99_s"] - TTFT_S)}  # fmt: skip
        small = measure(tool, 100.0, 50, args.work)
        big = streams["100"]
        cpu_per_1000 = 1000 * (big["cpu_s"] - small["cpu_s"]) / (big["requests"] - small["requests"])
        results["tools"][tool] = {"sustained_rate_per_s": max(ok) if ok else None, "ladder": ladder,
                                  "streams": streams, "client_cpu_s_per_1000": cpu_per_1000}  # fmt: skip
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    if args.distributed_rates:
        # Both joulebench, so both judged by joulebench's own schedule lag (send minus scheduled time).
        results["distributed"] = {"output_tokens": N_OUT_SHORT}
        for tool in ("joulebench", "joulebench distributed"):
            console.print(f"[bold]{tool}[/bold], {N_OUT_SHORT} output tokens")
            ladder = []
            for rate in [float(r) for r in args.distributed_rates.split(",")]:
                row = measure(tool, rate, int(rate * args.seconds), args.work, n_out=N_OUT_SHORT)
                ladder.append(row)
                if row["completed"] < row["requests"] or (row["client_lag_p99_s"] or 1) >= LAG_BOUND_S:
                    break
            ok = [r["rate_per_s"] for r in ladder
                  if r["completed"] == r["requests"] and r["client_lag_p99_s"] < LAG_BOUND_S]  # fmt: skip
            results["distributed"][tool] = {"sustained_rate_per_s": max(ok) if ok else None, "ladder": ladder}
        one, two = (results["distributed"][t]["sustained_rate_per_s"] for t in ("joulebench", "joulebench distributed"))
        results["distributed"]["gain"] = two / one if one and two else None
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    t = Table(title=f"load generators against the mock server, {results['machine']}, {results['date']}")
    for col in ("tool", "sustained req/s (lag p99 < 5 ms, seen by the server)",
                "lag p99 @100 streams: server / own (ms)", "TTFT err p50/p99 @100 (ms)",
                "TTFT err p50/p99 @1000 (ms)", "CPU s / 1000 req"):  # fmt: skip
        t.add_column(col, justify="right")

    def ms(v: float | None) -> str:
        return "–" if v is None else f"{1000 * v:.1f}"

    for tool, r in results["tools"].items():
        s1, s2 = r["streams"]["100"], r["streams"]["1000"]
        t.add_row(tool, f"{r['sustained_rate_per_s'] or 0:g}", f"{ms(s1['lag_p99_s'])} / {ms(s1['client_lag_p99_s'])}",
                  f"{s1['ttft_error_p50_ms']:.1f} / {s1['ttft_error_p99_ms']:.1f}",
                  f"{s2['ttft_error_p50_ms']:.1f} / {s2['ttft_error_p99_ms']:.1f}",
                  f"{r['client_cpu_s_per_1000']:.2f}")  # fmt: skip
    Console().print(t)
    if "distributed" in results:
        d = results["distributed"]
        one, two = d["joulebench"]["sustained_rate_per_s"], d["joulebench distributed"]["sustained_rate_per_s"]
        Console().print(f"joulebench, {N_OUT_SHORT}-token streams, its own lag p99 < 5 ms: {one} req/s in one "
                        f"process, {two} with a Locust master and {SETUP['locust_workers']} workers "
                        f"(gain {d['gain']})")  # fmt: skip
    results["loadavg_end"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
