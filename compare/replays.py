"""One replay of the comparison, in its own process: its options, its plan over the rates, how it is run and
stopped, and the exceptions that stop a comparison.

Each replay runs as ``python -m loadgen replay`` (Locust and gevent never enter the comparison's process),
with a progress bar, stopped by SIGTERM (in-flight requests recorded as interrupted) when it overruns its
schedule or the server is gone. Used by ``compare.experiment``, ``compare.counterfactual`` and ``compare.sweep``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from compare.rundir import rate_label
from joulebench.processes import Child
from loadgen.errors import LoadgenError
from loadgen.options import build_schedule
from loadgen.records import read_records


class Stopped(LoadgenError):
    """The comparison stopped before its end; the report covers what finished."""


class Interrupted(Stopped):
    """SIGINT or SIGTERM during a comparison."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum


class ServerGone(Stopped):
    """vLLM exited, or the server stopped answering, during the ladder."""


#: The interrupts raised by ``signals_interrupt``'s handler: one raised where Python ignores exceptions (a
#: signal arriving in logging's at-fork hook while a child starts: "Exception ignored in: _releaseLock") is
#: raised again by ``raise_if_interrupted``, the wait loops' check, so no SIGTERM is lost.
_RAISED: list[Interrupted] = []


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Interrupted`` here, so every ``finally`` stops its child."""

    def handler(signum: int, _: object) -> None:
        err = Interrupted(f"stopped by {signal.Signals(signum).name}", signum)
        _RAISED.append(err)
        raise err

    _RAISED.clear()
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _RAISED.clear()


def raise_if_interrupted() -> None:
    """Raise the interrupt a signal already raised, in case it was swallowed where it was raised."""
    if _RAISED:
        raise _RAISED[0]


def replay_options(
    args: argparse.Namespace, multiplier: float, trace_rate: float, duration_s: float
) -> argparse.Namespace:
    """The replay options of one rung: ``trace`` scales time; the other processes get requests/s."""
    rate = multiplier if args.process in ("trace", "trace-resample") else multiplier * trace_rate
    return argparse.Namespace(
        jb_trace=args.trace, jb_trace_dir=args.trace_dir, jb_process=args.process, jb_rate=rate, jb_cv=args.cv,
        jb_duration=duration_s, jb_start=args.start, jb_seed=args.seed,
        jb_max_model_len=args.max_model_len or 0,
    )  # fmt: skip


def rate_plan(
    args: argparse.Namespace, max_model_len: int | None
) -> tuple[list[tuple[float, argparse.Namespace, int, float]], dict[str, Any]]:
    """Each rung of ``args.rates``: (multiplier, replay options, scheduled requests, offered requests/s: the
    multiplier × the trace's mean rate), and the trace's facts. Fails early on a bad trace or process."""
    duration = args.warmup_s + args.window_s
    probe = replay_options(args, 1.0, 1.0, duration)
    probe.jb_max_model_len = max_model_len or 0
    trace, _ = build_schedule(probe)
    plan = []
    for m in args.rates:
        opts = replay_options(args, m, trace.rate_per_s, duration)
        opts.jb_max_model_len = max_model_len or 0
        _, schedule = build_schedule(opts)
        if len(schedule) == 0:
            raise LoadgenError(f"rate {rate_label(m)} schedules no request in {opts.jb_duration:g} s: raise it")
        plan.append((m, opts, len(schedule), m * trace.rate_per_s))
    facts = {"name": trace.name, "requests": len(trace.requests), "rate_per_s": trace.rate_per_s,
             "duration_s": trace.duration_s}  # fmt: skip
    return plan, facts


def run_replay(
    args: argparse.Namespace,
    opts: argparse.Namespace,
    target: str,
    out: Path,
    prompt_seed: int,
    n: int,
    what: str,
    console: Any,
    server_gone: Callable[[], str | None] | None = None,
    schedule_s: float | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """One headless replay in its own process (``python -m loadgen replay``) with a progress bar, into ``out``.

    Stopped (SIGTERM: in-flight requests recorded as interrupted) if it runs ``args.drain_s`` past its
    schedule (``schedule_s`` long; default: ``opts.jb_duration``). Returns the replay's summary, its
    records, and whether the drain was cut. If ``server_gone()`` says why the server is gone, the replay
    is stopped the same way and ``ServerGone`` raised: what finished is in ``out``.
    """
    from rich.progress import Progress

    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "requests.jsonl"
    records_path.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "loadgen", "replay", "--target", target, "--trace", opts.jb_trace,
        "--trace-dir", opts.jb_trace_dir, "--process", opts.jb_process, "--rate", repr(opts.jb_rate),
        "--cv", repr(opts.jb_cv), "--duration", repr(opts.jb_duration), "--start", repr(opts.jb_start),
        "--seed", str(opts.jb_seed), "--prompt-seed", str(prompt_seed),
        "--max-model-len", str(opts.jb_max_model_len),
        "--timeout", repr(args.request_timeout_s), "--records", str(records_path),
        "--summary", str(out / "replay.json"),
    ]  # fmt: skip
    if getattr(opts, "jb_first", 0):
        cmd += ["--first", str(opts.jb_first), "--overlong", opts.jb_overlong]
    if getattr(opts, "jb_leave_out", 0):
        cmd += ["--leave-out", str(opts.jb_leave_out)]
    if getattr(opts, "jb_columns", ""):
        cmd += ["--columns", opts.jb_columns]
    if opts.jb_process == "saturate":
        cmd += ["--concurrency", str(opts.jb_concurrency)]
        if getattr(opts, "jb_send_s", 0.0):
            cmd += ["--send-s", repr(opts.jb_send_s)]
        if getattr(opts, "jb_steady_s", 0.0):
            cmd += ["--steady-s", repr(opts.jb_steady_s)]
    replay = Child(f"the replay ({what})", cmd, out / "replay.log", stop_timeout_s=30).start()
    deadline = time.monotonic() + (opts.jb_duration if schedule_s is None else schedule_s) + args.drain_s + 30
    cut = False
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(what, total=n)
            while replay.poll() is None:
                raise_if_interrupted()
                if time.monotonic() > deadline and not cut:
                    cut = True
                    replay.stop()
                if server_gone is not None and (why := server_gone()) is not None:
                    replay.stop()
                    finished = _count_lines(records_path)
                    raise ServerGone(f"during {what}, {why}; {finished} of {n} requests recorded in {out}")
                progress.update(task, completed=_count_lines(records_path))
                time.sleep(0.5)
            raise_if_interrupted()
    finally:
        replay.stop()
    code = replay.poll()
    if code not in REPLAY_FINISHED or not (out / "replay.json").exists():
        raise replay.failed(f"exited with code {code}")
    return json.loads((out / "replay.json").read_text()), read_records(records_path), cut


#: Exit codes of a replay that finished (some requests may have failed) or was stopped by a signal.
REPLAY_FINISHED = (0, 1, 130, 143)


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0
