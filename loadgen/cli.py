"""``joulebench mock-server``, ``replay`` and ``locust`` (also ``python -m loadgen mock-server|replay``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from joulebench.commands import Command, command_main
from joulebench.serving import AppServer
from loadgen.errors import LoadgenError
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
    parser.add_argument(
        "--max-num-seqs",
        type=int,
        default=0,
        help="requests served at once, the others queue (vLLM's waiting queue); 0: no limit (default: %(default)s)",
    )
    parser.add_argument(
        "--prefill-ms-per-token",
        type=float,
        default=0.0,
        help="after admission the first token waits this long per input token (default: %(default)s)",
    )


def run_mock(args: argparse.Namespace) -> int:
    import tempfile

    from joulebench.processes import die_with_parent
    from loadgen.mock_server import MockConfig, create_app

    if args.ttft_ms < 0 or args.itl_ms < 0:
        raise LoadgenError("--ttft-ms and --itl-ms must not be negative")
    if args.workers < 1:
        raise LoadgenError("--workers must be at least 1")
    if args.max_num_seqs < 0 or args.prefill_ms_per_token < 0:
        raise LoadgenError("--max-num-seqs and --prefill-ms-per-token must not be negative")
    with tempfile.TemporaryDirectory(prefix="joulebench-arrivals-") as arrivals_dir:
        config = MockConfig(
            ttft_s=args.ttft_ms / 1000,
            itl_s=args.itl_ms / 1000,
            max_model_len=args.max_model_len,
            model=args.model,
            arrivals_dir=arrivals_dir if args.record_arrivals else None,
            max_num_seqs=args.max_num_seqs,
            prefill_s_per_token=args.prefill_ms_per_token / 1000,
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

    from loadgen import locustfile

    args = [sys.executable, "-m", "locust", "-f", locustfile.__file__, *loopback_by_default(extra)]
    os.execv(sys.executable, args)
    return 0  # not reached


COMMANDS = [
    Command("mock-server", "an OpenAI-compatible streaming server with set latencies", MOCK_DESCRIPTION,
            add_mock_arguments, run_mock),
    Command("replay", "replay a trace at a controlled rate, headless, with a summary", REPLAY_DESCRIPTION,
            add_replay_arguments, run_replay),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m loadgen mock-server|replay``: the same commands as ``joulebench …``."""
    return command_main("python -m loadgen", COMMANDS, argv)
