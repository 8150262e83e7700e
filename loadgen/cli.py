"""``joulebench mock-server`` (also ``python -m loadgen mock-server``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from joulebench.cli import Command, command_main
from joulebench.serving import AppServer
from loadgen.arrivals import PROCESSES
from loadgen.errors import LoadgenError
from loadgen.experiment import default_rates, parse_rates
from loadgen.options import OPTIONS

MOCK_DESCRIPTION = "An OpenAI-compatible streaming server with set TTFT and per-token latency, for calibration."


def add_mock_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free one (default: %(default)s)")
    parser.add_argument("--ttft-ms", type=float, default=50.0, help="time to first token (default: %(default)s)")
    parser.add_argument("--itl-ms", type=float, default=10.0, help="time per further token (default: %(default)s)")
    parser.add_argument("--max-model-len", type=int, default=32768)
    parser.add_argument("--model", default="mock", help="the model name it answers to (default: %(default)s)")
    parser.add_argument(
        "--record-arrivals", action="store_true", help="keep arrival times for GET /mock/arrivals (benchmarks)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes serving the one port, for high rates (default: %(default)s)"
    )


def run_mock(args: argparse.Namespace) -> int:
    import tempfile

    from joulebench.processes import die_with_parent
    from loadgen.mock_server import MockConfig, create_app

    if args.ttft_ms < 0 or args.itl_ms < 0:
        raise LoadgenError("--ttft-ms and --itl-ms must not be negative")
    if args.workers < 1:
        raise LoadgenError("--workers must be at least 1")
    with tempfile.TemporaryDirectory(prefix="joulebench-arrivals-") as arrivals_dir:
        config = MockConfig(
            ttft_s=args.ttft_ms / 1000,
            itl_s=args.itl_ms / 1000,
            max_model_len=args.max_model_len,
            model=args.model,
            arrivals_dir=arrivals_dir if args.record_arrivals else None,
        )
        with AppServer(create_app(config), args.host, args.port) as http:
            workers = []
            for _ in range(args.workers - 1):  # forked before any event loop or thread exists
                pid = os.fork()
                if pid == 0:  # a worker: the same app on the same socket until SIGTERM (or its parent's death)
                    try:
                        die_with_parent()
                        http.run()
                    finally:
                        os._exit(0)
                workers.append(pid)
            print(
                f"mock OpenAI server listening on {http.url} (TTFT {args.ttft_ms:g} ms, {args.itl_ms:g} ms/token"
                + (f", {args.workers} processes" if args.workers > 1 else "") + ")",
                flush=True,
            )  # fmt: skip
            try:
                http.run()
            finally:
                for pid in workers:
                    os.kill(pid, signal.SIGTERM)
                for pid in workers:
                    os.waitpid(pid, 0)
    return 0


REPLAY_DESCRIPTION = (
    "Replay a trace at a controlled arrival rate against an OpenAI server, headless (Locust as a library), "
    "with a progress bar and a summary table; every request's record goes to --records."
)


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="http://127.0.0.1:8000", help="the server (default: %(default)s)")
    for name, (default, help_text) in OPTIONS.items():
        flag = "--" + name.removeprefix("jb_").replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, dest=name, action="store_true", help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=type(default), default=default,
                                metavar=name.removeprefix("jb_").upper(),
                                help=f"{help_text} (default: %(default)s)")  # fmt: skip
    parser.add_argument("--summary", type=Path, help="also write the summary as JSON here")


def run_replay(args: argparse.Namespace) -> int:
    import gevent
    from locust import events
    from locust.env import Environment
    from rich.console import Console
    from rich.progress import Progress

    from loadgen.client import served_model
    from loadgen.locustfile import TraceReplayUser
    from loadgen.options import build_schedule
    from loadgen.records import RecordWriter, read_records
    from loadgen.summary import summarize

    options = argparse.Namespace(**{name: getattr(args, name) for name in OPTIONS})
    # Fail before any traffic: the server, the trace and the records file.
    _, max_len = served_model(args.target)
    if not options.jb_max_model_len and max_len:
        options.jb_max_model_len = int(max_len)
    _, schedule = build_schedule(options)
    RecordWriter(Path(options.jb_records)).open().close()
    records_before = len(read_records(Path(options.jb_records))) if Path(options.jb_records).exists() else 0

    env = Environment(user_classes=[TraceReplayUser], events=events, host=args.target, parsed_options=options)
    finished = [0]
    events.request.add_listener(lambda **_: finished.__setitem__(0, finished[0] + 1))
    runner = env.create_local_runner()
    stopped = [False]

    def stop(*_: object) -> None:
        stopped[0] = True
        runner.quit()

    gevent.signal_handler(signal.SIGINT, stop)
    gevent.signal_handler(signal.SIGTERM, stop)
    runner.start(1, spawn_rate=1)
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{schedule.label}: {len(schedule)} requests", total=len(schedule))
        while finished[0] < len(schedule) and not stopped[0] and getattr(env, "jb_error", None) is None:
            progress.update(task, completed=finished[0])
            gevent.sleep(0.2)
    if not stopped[0]:
        runner.quit()
    if (err := getattr(env, "jb_error", None)) is not None:
        raise LoadgenError(f"the replay stopped: {err}; records so far are in {options.jb_records}")
    records = read_records(Path(options.jb_records))[records_before:]
    summary = summarize(records)
    plan = getattr(env, "jb_plan", None)
    summary["schedule_start_s"] = plan.get()["start_s"] if plan is not None else None
    summary["schedule"] = {"label": schedule.label, "requests": len(schedule)}
    _print_summary(summary, schedule.label, options.jb_records)
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=2) + "\n")
    return 130 if stopped[0] else 0


def _print_summary(s: dict, label: str, records: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def ms(v: float | None) -> str:
        return "–" if v is None else f"{1000 * v:.1f}"

    t = Table(title=f"replay {label}: {s['ok']}/{s['requests']} ok, {s['achieved_rate_per_s']:.2f} req/s achieved")
    for col in ("", "p50 ms", "p90 ms", "p99 ms"):
        t.add_column(col, justify="right")
    for name in ("ttft_s", "ttft_from_schedule_s", "tpot_s", "itl_s", "e2e_s", "schedule_lag_s"):
        t.add_row(name.removesuffix("_s").replace("_", " "), *(ms(s[name][p]) for p in ("p50", "p90", "p99")))
    Console().print(t)
    errors = {k: v for k, v in s["statuses"].items() if k != "ok"}
    print(f"tokens in/out: {s['input_tokens']}/{s['output_tokens']}; errors: {errors or 'none'}; records: {records}")


COMPARE_DESCRIPTION = (
    "Online vs offline energy per token, end to end: start (or attach to) the energy monitor and vLLM, measure "
    "idle power until stable, replay a trace at a ladder of arrival rates (warm-up, then a steady-state window), "
    "serve the same tokens offline in full batches, attribute energy to requests, and write a run directory with "
    "summary.json, report.md and report.html. With no arguments: the tiny preset on vLLM's CPU build. "
    "Exit status: 0 complete; 1 finished, but windows without energy (the monitor restarted; listed in the "
    "report); 2 an error (vLLM died: the report covers what finished); 130/143 stopped by SIGINT/SIGTERM."
)


def _rates(text: str) -> list[float]:
    try:
        return parse_rates(text)
    except LoadgenError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_traffic_arguments(parser: argparse.ArgumentParser) -> None:
    """The rate ladder's options, shared by ``compare`` and ``sweep``."""
    g = parser.add_argument_group("traffic")
    g.add_argument(
        "--trace", default="azure-conv", help="azure-conv, azure-code, or a CSV/JSONL path (default: %(default)s)"
    )
    g.add_argument(
        "--trace-dir", default="", help="folder with the Azure trace files (else the cache, else downloaded)"
    )
    g.add_argument("--process", default="trace", help=f"arrival process: {', '.join(PROCESSES)} (default: %(default)s)")
    g.add_argument("--cv", type=float, default=1.0, help="gamma process: CV of the gaps (default: %(default)s)")
    g.add_argument(
        "--rates",
        type=_rates,
        default=default_rates(),
        metavar="LIST",
        help="multiples of the trace's own rate, e.g. 0.25,0.5,1,2,4 (the default); the ladder stops above "
        "the first saturated rate",
    )
    g.add_argument(
        "--start", type=float, default=0.0, help="start this many seconds into the trace (default: %(default)s)"
    )
    g.add_argument("--warmup-s", type=float, default=10.0, help="per rate, before the window (default: %(default)s)")
    g.add_argument(
        "--window-s", type=float, default=30.0, help="the steady-state window per rate (default: %(default)s)"
    )
    g.add_argument(
        "--drain-s",
        type=float,
        default=120.0,
        help="after the schedule, wait this long for requests in flight (default: %(default)s)",
    )
    g.add_argument("--request-timeout-s", type=float, default=300.0, help="(default: %(default)s)")


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    from server.cli import DEFAULT_CACHE
    from server.options import add_engine_arguments

    add_engine_arguments(parser)
    parser.add_argument("--model-cache", type=Path, default=DEFAULT_CACHE, help="where presets are written")
    parser.add_argument(
        "--max-num-seqs",
        type=int,
        default=256,
        help="max batch, online and offline (offline batches are this full) (default: %(default)s)",
    )
    add_traffic_arguments(parser)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="replays per rate, and offline runs per request set: 2+ give the premium a 95%% interval "
        "(default: %(default)s)",
    )
    g = parser.add_argument_group("energy and servers")
    g.add_argument("--monitor", help="URL of a running joulebench monitor (default: start one)")
    g.add_argument("--source", default="auto", help="power source of the monitor started here (default: %(default)s)")
    g.add_argument("--target", help="URL of a running OpenAI server to measure (default: start vLLM)")
    g.add_argument("--start-timeout-s", type=float, default=900.0, help="for vLLM to start (default: %(default)s)")
    g.add_argument(
        "--idle-max-s",
        type=float,
        default=60.0,
        help="idle power is measured in 2 s blocks until three agree, at most this long (default: %(default)s)",
    )
    g.add_argument("--slice-s", type=float, default=0.25, help="energy slices for attribution (default: %(default)s)")
    g.add_argument("--no-offline", action="store_true", help="skip the offline runs (no premium, no binning)")
    g.add_argument("--no-binning", action="store_true", help="skip measuring the binning estimator's bins")
    g.add_argument("--bin-batch", type=int, default=32, help="requests per bin batch (default: %(default)s)")
    g.add_argument("--out", type=Path, help="the run directory (default: runs/compare-DATE-TIME)")


def run_compare(args: argparse.Namespace) -> int:
    import time

    from loadgen.experiment import Comparison, Interrupted

    for name in ("warmup_s", "window_s", "slice_s", "idle_max_s", "drain_s"):
        if not getattr(args, name) > 0 and not (name == "warmup_s" and args.warmup_s == 0):
            raise LoadgenError(f"--{name.replace('_', '-')} must be positive")
    if args.repeats < 1 or args.bin_batch < 1 or args.max_num_seqs < 1:
        raise LoadgenError("--repeats, --bin-batch and --max-num-seqs must be at least 1")
    if args.process not in PROCESSES:
        raise LoadgenError(f"unknown arrival process {args.process!r}: use one of {', '.join(PROCESSES)}")
    run_dir = args.out or Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S")
    if (run_dir / "config.json").exists():
        raise LoadgenError(f"{run_dir} already holds a run: choose another --out")
    comparison = Comparison(args, run_dir)
    try:
        comparison.run()
    except Interrupted as err:  # the conventional 128 + signal number, e.g. 130 after Ctrl-C
        print(f"joulebench compare: {err}", file=sys.stderr)
        return 128 + err.signum
    print(f"report: {run_dir / 'report.md'} and {run_dir / 'report.html'}")
    if comparison.problems:
        print(f"joulebench compare: incomplete, {len(comparison.problems)} problem(s):", file=sys.stderr)
        print("".join(f"  - {p}\n" for p in comparison.problems), end="", file=sys.stderr)
        return 1
    return 0


SWEEP_DESCRIPTION = (
    "Energy per token against GPU clocks and power limits (DVFS): for each setting of --sm-clocks × "
    "--power-limits and each rate, a replay against a running server; J/token, TTFT/TPOT p50/p99, the clocks "
    "achieved and throttle reasons; per rate the tokens-per-joule vs TPOT p99 frontier and the settings that "
    "meet the SLO. Changes GPU settings only with --allow-gpu-settings (root), and restores them on every exit; "
    "--dry-run reads the GPUs and prints the plan."
)


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("GPU settings")
    g.add_argument("--sm-clocks", default="", metavar="LIST",
                   help="locked SM clocks in MHz, 'max' (the highest supported) or 'auto' (unlocked), e.g. "
                   "900,1200,1500,max")  # fmt: skip
    g.add_argument("--power-limits", default="", metavar="LIST",
                   help="power limits in W or 'default', e.g. 300,450,700")  # fmt: skip
    g.add_argument("--allow-gpu-settings", action="store_true", help="let the sweep change them (needs root)")
    g.add_argument("--dry-run", action="store_true", help="read the GPUs and print the plan; change nothing")
    g.add_argument("--settle-s", type=float, default=5.0, help="after each change (default: %(default)s)")
    add_traffic_arguments(parser)
    g = parser.add_argument_group("server, energy and SLO")
    g.add_argument("--target", default="http://127.0.0.1:8000", help="the running server (default: %(default)s)")
    g.add_argument("--monitor", help="URL of a running joulebench monitor (default: sample NVML in-process)")
    g.add_argument("--source", default="nvml", help="in-process power source (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="arrivals and prompts (default: %(default)s)")
    g.add_argument("--max-model-len", type=int, help="clip requests to this context (default: the server's)")
    g.add_argument("--slo-tpot-p99-ms", type=float, help="the SLO's TPOT p99 bound")
    g.add_argument("--slo-ttft-p99-ms", type=float, help="the SLO's TTFT p99 bound")
    g.add_argument("--out", type=Path, help="the run directory (default: runs/sweep-DATE-TIME)")


def run_sweep(args: argparse.Namespace) -> int:
    import time

    from loadgen.sweep import Sweep

    if not args.sm_clocks.strip() and not args.power_limits.strip():
        raise LoadgenError("nothing to sweep: give --sm-clocks and/or --power-limits")
    if not (args.window_s > 0 and args.warmup_s >= 0 and args.drain_s > 0 and args.settle_s >= 0):
        raise LoadgenError("--window-s and --drain-s must be positive, --warmup-s and --settle-s not negative")
    if args.process not in PROCESSES:
        raise LoadgenError(f"unknown arrival process {args.process!r}: use one of {', '.join(PROCESSES)}")
    run_dir = args.out or Path("runs") / time.strftime("sweep-%Y%m%d-%H%M%S")
    if not args.dry_run and (run_dir / "sweep.json").exists():
        raise LoadgenError(f"{run_dir} already holds a sweep: choose another --out")
    code = Sweep(args, run_dir).run()
    if not args.dry_run:
        print(f"sweep: {run_dir / 'sweep.json'} and {run_dir / 'sweep.md'}")
    return code


REPORT_DESCRIPTION = "Analyse a compare run directory again and rewrite summary.json, report.md, report.html and plots."


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a directory written by joulebench compare")


def run_report(args: argparse.Namespace) -> int:
    from loadgen.report import write_report

    paths = write_report(args.run_dir)
    print(f"wrote {paths['summary']}, {paths['md']} and {paths['html']}")
    return 0


def loopback_by_default(extra: list[str]) -> list[str]:
    """Locust listens on every interface unless told; joulebench's listeners bind 127.0.0.1 unless told."""

    def given(flag: str) -> bool:
        return any(a == flag or a.startswith(flag + "=") for a in extra)

    out = list(extra)
    if not given("--web-host") and "--headless" not in extra and "--worker" not in extra:
        out += ["--web-host", "127.0.0.1"]
    if "--master" in extra and not given("--master-bind-host"):
        out += ["--master-bind-host", "127.0.0.1"]
    return out


def run_locust(extra: list[str]) -> int:
    import os
    import sys

    from loadgen import locustfile

    args = [sys.executable, "-m", "locust", "-f", locustfile.__file__, *loopback_by_default(extra)]
    os.execv(sys.executable, args)
    return 0  # not reached


COMMANDS = [
    Command("compare", "online vs offline energy per token: the whole comparison and its report",
            COMPARE_DESCRIPTION, add_compare_arguments, run_compare),
    Command("sweep", "J/token against GPU clocks and power limits (DVFS)", SWEEP_DESCRIPTION,
            add_sweep_arguments, run_sweep),
    Command("report", "rewrite a compare run's summary and report from its files", REPORT_DESCRIPTION,
            add_report_arguments, run_report),
    Command("mock-server", "an OpenAI-compatible streaming server with set latencies", MOCK_DESCRIPTION,
            add_mock_arguments, run_mock),
    Command("replay", "replay a trace at a controlled rate, headless, with a summary", REPLAY_DESCRIPTION,
            add_replay_arguments, run_replay),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m loadgen mock-server|replay``: the same commands as ``joulebench …``."""
    return command_main("python -m loadgen", COMMANDS, argv)
