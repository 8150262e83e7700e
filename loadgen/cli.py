"""``joulebench mock-server``, ``replay`` and ``locust`` (also ``python -m loadgen mock-server|replay``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from estimands.summary import summarize
from joulebench.commands import Command, command_main
from joulebench.serving import AppServer
from loadgen.arrivals import CLOSED_LOOP, Schedule
from loadgen.client import normalize_target, served_model
from loadgen.errors import LoadgenError
from loadgen.faults import FAULTS, check_fault
from loadgen.options import OPTIONS, add_locust_options, build_schedule, check_options
from loadgen.records import RecordWriter, read_records
from loadgen.traces import NAMED, Trace
from loadgen.webguard import check_login_password

if TYPE_CHECKING:
    from monitor.meter import MonitorClient

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
    parser.add_argument(
        "--fault",
        default="",
        help=f"give requests that ask for none this fault (tests): status:CODE, {', '.join(FAULTS)}",
    )
    parser.add_argument(
        "--fault-every", type=int, default=1, help="--fault for every Nth request (default: %(default)s)"
    )
    parser.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM) …")
    parser.add_argument("--ssl-keyfile", help="… and this private key (PEM)")


#: The most worker processes ``mock-server`` forks.
MAX_MOCK_WORKERS = 64


def validate_mock(args: argparse.Namespace) -> None:
    check_listen(args.host, args.port)
    for name in ("ttft_ms", "itl_ms"):
        value = getattr(args, name)
        if not (math.isfinite(value) and 0 <= value <= 3_600_000):
            raise LoadgenError(f"--{name.replace('_', '-')} {value!r}: give milliseconds in 0–3600000")
    if not 2 <= args.max_model_len < 2**31:
        raise LoadgenError(f"--max-model-len {args.max_model_len}: give a context of at least 2 tokens")
    if not args.model.strip():
        raise LoadgenError("--model: give the model name the server answers to")
    if not 1 <= args.workers <= MAX_MOCK_WORKERS:
        raise LoadgenError(f"--workers {args.workers}: give 1 to {MAX_MOCK_WORKERS}")
    if not check_fault(args.fault):
        raise LoadgenError(f"--fault {args.fault!r}: give status:CODE (100–599) or one of {', '.join(FAULTS)}")
    if not 1 <= args.fault_every <= 2**31:
        raise LoadgenError(f"--fault-every {args.fault_every}: give a count ≥ 1")
    if not 0 <= args.max_num_seqs < 2**31:
        raise LoadgenError(f"--max-num-seqs {args.max_num_seqs}: give 0 (no limit) or a count")
    if not (math.isfinite(args.prefill_ms_per_token) and 0 <= args.prefill_ms_per_token <= 1000):
        raise LoadgenError(f"--prefill-ms-per-token {args.prefill_ms_per_token!r}: give milliseconds in 0–1000")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise LoadgenError("--ssl-certfile and --ssl-keyfile go together")


def check_listen(host: str, port: int) -> None:
    """A listener's --host and --port (0: a free one)."""
    if not host.strip():
        raise LoadgenError("--host: give an address to listen on, e.g. 127.0.0.1")
    if not 0 <= port <= 65535:
        raise LoadgenError(f"--port {port}: give 1–65535, or 0 for a free one")


def run_mock(args: argparse.Namespace) -> int:
    import tempfile

    from joulebench.processes import die_with_parent
    from loadgen.mock_server import MockConfig, create_app

    with tempfile.TemporaryDirectory(prefix="joulebench-arrivals-") as arrivals_dir:
        config = MockConfig(
            ttft_s=args.ttft_ms / 1000,
            itl_s=args.itl_ms / 1000,
            max_model_len=args.max_model_len,
            model=args.model,
            arrivals_dir=arrivals_dir if args.record_arrivals else None,
            max_num_seqs=args.max_num_seqs,
            prefill_s_per_token=args.prefill_ms_per_token / 1000,
            fault=args.fault,
            fault_every=args.fault_every,
        )
        app = create_app(config)
        with AppServer(app, args.host, args.port, ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile) as http:
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
    "with a progress bar and a summary table; every request's record goes to --records. Every option, the "
    "server, the monitor, the trace and the output files are checked before any traffic. Exit status: 0 every "
    "request ok; 1 finished, some requests failed (their records say why); 2 an error (before any traffic, "
    "or the records file failing: one line); 130/143/129 stopped by SIGINT/SIGTERM/SIGHUP (finished records kept, "
    "in-flight ones marked interrupted)."
)


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        default="http://127.0.0.1:8000",
        help="the server: http(s)://HOST:PORT[/PREFIX] or HOST:PORT (http); a trailing /v1 is fine "
        "(default: %(default)s)",
    )
    for name, (default, help_text) in OPTIONS.items():
        flag = "--" + name.removeprefix("jb_").replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, dest=name, action="store_true", help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=type(default), default=default,
                                metavar=name.removeprefix("jb_").upper(),
                                help=f"{help_text} (default: %(default)s)")  # fmt: skip
    parser.add_argument("--summary", type=Path, help="also write the summary as JSON here (folders made)")


def _options(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{name: getattr(args, name) for name in OPTIONS})


def validate_replay(args: argparse.Namespace) -> None:
    normalize_target(args.target)
    check_options(_options(args))


@dataclass
class Replay:
    """What a replay needs, every part checked before any traffic (``prepare_replay``)."""

    options: argparse.Namespace
    target: str
    trace: Trace
    schedule: Schedule
    meter: MonitorClient | None


def prepare_replay(args: argparse.Namespace) -> Replay:
    """The server, the monitor, the trace and its schedule, the records file and the summary's path, checked
    in that order; a ``LoadgenError`` (or the monitor's error) for the first that is wrong. Sends no request."""
    from monitor.meter import MonitorClient

    validate_replay(args)
    options = _options(args)
    _check_apart(options, args.summary)
    target = normalize_target(args.target)
    _, max_len = served_model(target)
    if not options.jb_max_model_len and max_len:
        options.jb_max_model_len = int(max_len)
    meter = None
    if options.jb_monitor:
        meter = MonitorClient(normalize_target(options.jb_monitor, "--monitor"))
        meter.now()
    trace, schedule = build_schedule(options)
    if not len(schedule):
        raise LoadgenError(f"{schedule.label} schedules no request in {options.jb_duration:g} s: raise --duration")
    RecordWriter(Path(options.jb_records)).open(append=options.jb_append).close()
    if args.summary is not None:
        _check_writable(args.summary, "the summary")
    return Replay(options, target, trace, schedule, meter)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # a hard link is the same file too
    except OSError:
        return False


def _check_apart(options: argparse.Namespace, summary: Path | None) -> None:
    """The files a replay writes are neither its trace nor each other: written over, the trace or the records
    would be lost."""
    records = Path(options.jb_records)
    inputs = [] if options.jb_trace in NAMED else [("--trace", "the trace", Path(options.jb_trace))]
    outputs = [("--records", records, inputs)]
    if summary is not None:
        outputs.append(("--summary", summary, [*inputs, ("--records", "the records file", records)]))
    for flag, path, others in outputs:
        for other_flag, what, other in others:
            if _same_file(path, other):
                raise LoadgenError(f"{flag} {path}: that is {what} ({other_flag}): give {flag} another path")


def _check_writable(path: Path, what: str) -> None:
    """Make ``path``'s folders and prove it can be written, leaving no file behind that was not there."""
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
        if not existed:
            path.unlink()
    except OSError as err:
        raise LoadgenError(f"cannot write {what} to {path}: {err.strerror or err}") from None


#: The signals that stop a replay the way Ctrl-C does: in-flight requests recorded as interrupted, exit 128 + it.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_replay(args: argparse.Namespace) -> int:
    # Importing Locust monkey-patches the process with gevent; a signal in the middle of it left the process
    # half-patched and hanging at exit. Held until the import is done, then delivered as usual.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
    try:
        import gevent
        from locust import events
        from locust.env import Environment

        from loadgen.locustfile import TraceReplayUser
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    from rich.console import Console
    from rich.progress import Progress

    replay = prepare_replay(args)
    options, schedule = replay.options, replay.schedule
    console = Console(stderr=True)
    console.print(f"{replay.trace.name}: {len(schedule)} requests, {schedule.label}; {_overlong_line(replay.trace)}")
    if options.jb_chat:
        lengths = {replay.trace.requests[i].input_tokens for i in schedule.index.tolist()}
        console.print(f"calibrating {len(lengths)} chat prompt lengths against the server before the schedule starts")

    env = Environment(user_classes=[TraceReplayUser], events=events, host=replay.target, parsed_options=options)
    env.jb_caller_reports = True
    finished = [0]
    events.request.add_listener(lambda **_: finished.__setitem__(0, finished[0] + 1))
    runner = env.create_local_runner()
    stopped: list[int] = []
    for sig in STOP_SIGNALS:  # a closed terminal (SIGHUP) too: its default would lose the requests in flight
        gevent.signal_handler(sig, stopped.append, sig)
    runner.start(1, spawn_rate=1)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"{schedule.label}: {len(schedule)} requests", total=len(schedule))
        # Until the dispatcher has written its last record, a signal, or an error: nothing waits on one request.
        while not getattr(env, "jb_ended", False) and not stopped and getattr(env, "jb_error", None) is None:
            progress.update(task, completed=finished[0])
            gevent.sleep(0.2)
    runner.quit()  # here, not in the signal handler: when it returns, requests in flight are recorded
    if (err := getattr(env, "jb_error", None)) is not None:
        written, sent = getattr(env, "jb_recorded", (0, 0))
        lost = f"{sent - written} of the {sent} requests sent have no record; " if sent > written else ""
        raise LoadgenError(f"the replay stopped: {err}; {lost}the records so far are in {options.jb_records}")
    run_id = env.jb_plan.get()["run_id"]
    records = [r for r in read_records(Path(options.jb_records)) if r.get("run_id") == run_id]
    summary = summarize(records)
    summary["run_id"] = run_id
    summary["target"] = replay.target
    summary["schedule_start_s"] = getattr(env, "jb_schedule_start_s", None)
    summary["schedule"] = {"label": schedule.label, "requests": len(schedule)}
    summary["overlong"] = replay.trace.overlong.record() if replay.trace.overlong is not None else None
    summary["stopped_by"] = signal.Signals(stopped[0]).name if stopped else None
    if replay.meter is not None:
        summary["energy"] = run_energy(
            replay.meter, summary["schedule_start_s"], records, summary["input_tokens"], summary["output_tokens"]
        )
        if options.jb_process == CLOSED_LOOP:
            summary["reference"] = _reference(replay.meter, records, options, run_id)
    _print_summary(summary, schedule.label, options.jb_records, _overlong_line(replay.trace))
    if args.summary:
        try:
            args.summary.write_text(json.dumps(summary, indent=2) + "\n")
        except OSError as err:
            raise LoadgenError(f"cannot write the summary to {args.summary}: {err.strerror or err}") from None
    if stopped:
        return 128 + stopped[0]
    return 0 if summary["ok"] == summary["requests"] else 1


def _reference(meter: MonitorClient, records: list[dict[str, Any]], options: Any, run_id: str) -> dict[str, Any]:
    """A saturate run's reference (``estimands.reference``), kept as the stack's with ``--keep-reference``."""
    from loadgen import reference

    ref = reference.measure(records, meter, options.jb_concurrency, reference.workload_of(records, options), run_id)
    if options.jb_keep_reference:
        kept = reference.save(Path(options.jb_keep_reference), ref)
        ref["kept_in"] = str(kept) if kept else None
    return ref


def _overlong_line(trace: Trace) -> str:
    if trace.overlong is None:
        return "the context is unknown (the server does not say; give --max-model-len): no length checked"
    return trace.overlong.describe()


def run_energy(
    meter: MonitorClient, start_s: float | None, records: list[dict[str, Any]], input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    """The monitor's energy from the schedule's start to the last byte of the run (attributional: all the
    energy of the measured devices), per output token and per token of the requests that finished ok
    (``loadgen.ledger``'s definitions, as the web UI's)."""
    from loadgen.ledger import energy_figures
    from monitor.errors import MonitorError

    ends = [r.get("last_token_s") or r.get("sent_s") for r in records if r.get("sent_s") is not None]
    if start_s is None or not ends or max(ends) <= start_s:
        return {"monitor": meter.url, "error": "no request was sent: no window to measure"}
    end_s = max(ends)
    try:
        reading = meter.energy(start_s, end_s)
    except MonitorError as err:  # the records are kept; the summary says why it has no energy
        return {"monitor": meter.url, "error": str(err)}
    figures = energy_figures(reading.energy_j, reading.uncertainty_j, start_s, end_s, input_tokens, output_tokens,
                             kind=reading.kind, sources=reading.sources, short_window=reading.short_window)  # fmt: skip
    # seconds of the window with no reading (the monitor started late, a device went stale): its energy is missing
    return {"monitor": meter.url, **figures, "monitor_gap_s": reading.unread_s}


def _print_summary(s: dict, label: str, records: str, overlong: str) -> None:
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
    print(f"overlong: {overlong}")
    if (e := s.get("energy")) is not None:
        if "error" in e:
            print(f"energy: none ({e['error']})")
        else:
            per = (
                "–"
                if e["j_per_output_token"] is None
                else f"{e['j_per_output_token']:.4g} ± {e['uncertainty_j_per_output_token']:.2g}"
            )
            estimated = " (ESTIMATED)" if e["estimated"] else ""
            per_token = "–" if e["j_per_token"] is None else f"{e['j_per_token']:.4g}"
            print(f"energy: {e['energy_j']:.1f} ± {e['uncertainty_j']:.1f} J, {e['average_power_w']:.1f} W average, "
                  f"{per_token} J/token, {per} J/output token; {e['kind']} from {', '.join(e['sources'])}"
                  f"{estimated}")  # fmt: skip
    if (r := s.get("reference")) is not None:
        if not r["valid"]:
            print(f"saturated reference: not valid ({'; '.join(r['reasons'])})")
        else:
            kept = f"; kept in {r['kept_in']}" if r.get("kept_in") else ""
            print(f"saturated reference: {r['j_per_token']:.4g} ± {r['uncertainty_j_per_token']:.2g} J/token, "
                  f"{r['j_per_output_token']:.4g} ± {r['uncertainty_j_per_output_token']:.2g} J/output token over "
                  f"its steady part ({r['duration_s']:.1f} s, {r['completed']} requests ended){kept}")  # fmt: skip


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


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise LoadgenError(message)


def validate_locust(extra: list[str]) -> None:
    """The replay's ``--jb-*`` options (and ``--host``) among Locust's arguments, checked as ``replay`` checks
    its own; Locust checks the rest."""
    parser = _RaisingParser(prog="joulebench locust", add_help=False, allow_abbrev=False)
    parser.add_argument("-H", "--host")
    add_locust_options(parser.add_argument)
    known, _ = parser.parse_known_args(extra)
    if known.host is not None:
        normalize_target(known.host, "--host")
    check_options(known, locust=True)
    check_login_password(extra)


LOCUST_DESCRIPTION = (
    "Locust's web UI (or --headless) with joulebench's trace replay loaded. joulebench's options below are also "
    "fields of the start form; every other argument is Locust's own (listed after them). Each run stops by itself "
    "when its schedule is done and its requests have drained, and writes RUNS_DIR/RUN_ID/."
)


def locust_help() -> str:
    """joulebench's part of ``joulebench locust --help`` (Locust's own help follows it)."""
    parser = argparse.ArgumentParser(
        prog="joulebench locust", usage="%(prog)s [joulebench's options] [Locust's options]", add_help=False,
        description=LOCUST_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    group = parser.add_argument_group("joulebench's options")
    add_locust_options(group.add_argument)
    return parser.format_help()


def run_locust(extra: list[str]) -> int:
    import os

    from loadgen import locustfile

    if "-h" in extra or "--help" in extra:
        print(locust_help() + "\nLocust's own options:\n", flush=True)
    else:
        validate_locust(extra)
    args = [sys.executable, "-m", "locust", "-f", locustfile.__file__, *loopback_by_default(extra)]
    os.execv(sys.executable, args)
    return 0  # not reached


COMMANDS = [
    Command("mock-server", "an OpenAI-compatible streaming server with set latencies", MOCK_DESCRIPTION,
            add_mock_arguments, run_mock, validate_mock),
    Command("replay", "replay a trace at a controlled rate, headless, with a summary", REPLAY_DESCRIPTION,
            add_replay_arguments, run_replay, validate_replay),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m loadgen mock-server|replay``: the same commands as ``joulebench …``."""
    return command_main("python -m loadgen", COMMANDS, argv)
