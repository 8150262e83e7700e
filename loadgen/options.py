"""The replay's options (``--jb-*`` in Locust, plain in ``joulebench replay``).

Kept apart from ``loadgen.locustfile``: importing that imports Locust, which monkey-patches the whole
process with gevent; building joulebench's parser must not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from loadgen.arrivals import CLOSED_LOOP, PROCESSES, Schedule, workload
from loadgen.client import CLIENTS, normalize_target
from loadgen.errors import LoadgenError
from loadgen.traces import NAMED, OVERLONG_POLICIES, Trace, parse_columns, resolve_trace

#: The most requests one schedule may hold (its arrays, and at the end its records, are in memory).
MAX_REQUESTS = 1_000_000
#: The most arrivals a process may draw on the way to a schedule (resampling draws the whole trace, ×rate).
MAX_DRAWN = 10_000_000
#: The longest a duration, a timeout or a schedule may be: 30 days.
MAX_SECONDS = 30 * 86400

#: The replay's options, in the order a person fills them (Locust's start form and ``--help`` keep it):
#: name → (default, help). ``--jb-*`` in Locust, plain in ``joulebench replay``.
OPTIONS: dict[str, tuple[Any, str]] = {
    "jb_trace": ("azure-conv", f"trace: {', '.join(NAMED)}, or a CSV/JSONL path"),
    "jb_process": ("trace", f"arrival process: {', '.join(PROCESSES)}"),
    "jb_rate": (1.0, "time factor for trace/trace-resample (2: twice as fast), requests/s for the others"),
    "jb_duration": (60.0, "seconds of schedule to replay (with --first: not used)"),
    "jb_first": (
        0,
        "replay exactly the first N requests from --start, each once, at the process's times (the same requests "
        "at every rate); 0: every request the duration holds",
    ),
    "jb_concurrency": (256, "the saturate process: requests kept in flight, split over the workers"),
    "jb_send_s": (
        0.0,
        "the saturate process: stop sending after this many seconds, those in flight finishing (0: the whole pool)",
    ),
    "jb_steady_s": (
        0.0,
        "the saturate process: stop sending this many seconds after every request of the start cohort (the "
        "first --concurrency sent) has ended, those in flight finishing: a steady part of that length, however "
        "long the cohort's longest request runs (0: not used)",
    ),
    "jb_cv": (1.0, "gamma process: coefficient of variation of the gaps (1: Poisson)"),
    "jb_monitor": (
        "",
        "URL of a joulebench monitor: the replay's summary gets the run's energy (J, W, J/output token, with "
        "the monitor's uncertainty); the web UI's Energy tab shows it live",
    ),
    "jb_start": (0.0, "start this many seconds into the trace"),
    "jb_leave_out": (
        0,
        "leave out every K-th request of the schedule, the others at their times (0: none): a counterfactual replay",
    ),
    "jb_seed": (0, "seed of the arrival process and the prompts"),
    "jb_prompt_seed": (
        -1,
        "seed of the prompts alone (-1: the seed); runs with the same one send the same prompts, "
        "which a prefix cache serves cheaper",
    ),
    "jb_model": ("", "model name (default: the server's first)"),
    "jb_chat": (
        False,
        "use /v1/chat/completions with text whose length is calibrated against that endpoint's own prompt_tokens, "
        "every length before the schedule starts (serve with prefix caching off)",
    ),
    "jb_max_model_len": (0, "the context requests must fit (0: the server's max_model_len if it says)"),
    "jb_overlong": ("drop", f"requests longer than the context: {', '.join(OVERLONG_POLICIES)}"),
    "jb_columns": (
        "",
        "the trace file's columns: timestamp=NAME,input=NAME,output=NAME (a key not given: the Azure name, "
        "TIMESTAMP, ContextTokens, GeneratedTokens)",
    ),
    "jb_trace_dir": ("", "folder holding the Azure trace files (else the cache, else downloaded)"),
    "jb_vocab": (2000, "token ids of prompts are drawn from [2, vocab)"),
    "jb_timeout": (300.0, "seconds without a byte before a request times out"),
    "jb_keep_reference": (
        "",
        "with --process saturate and --monitor: keep a valid saturated reference as the stack's in this folder "
        "(the Locust master's --jb-runs-dir), where /metrics publishes it for the live premium",
    ),
    "jb_client": (
        CLIENTS[0],
        "the HTTP client: geventhttpclient (Locust's C parser, every event that has arrived taken in one read) or "
        "http.client (the standard library's, one read per event: the client until 0.1.0); the records are the same",
    ),
    "jb_records": ("requests.jsonl", "append every request's record to this file"),
    "jb_append": (False, "add to a --records file that already holds records (each record carries its run_id)"),
}

#: Locust keeps every run in a run directory of its own, so its records need no file option.
LOCUST_OPTIONS: dict[str, tuple[Any, str]] = {
    **{k: v for k, v in OPTIONS.items() if k not in ("jb_records", "jb_append", "jb_keep_reference")},
    "jb_runs_dir": (
        "runs",
        "every run writes RUNS_DIR/RUN_ID/: its records (requests.jsonl, one per worker), summary.json with its "
        "energy, window.json and energy.csv",
    ),
}

#: The options whose values are a choice (Locust's start form shows them as one); a trace may also be a path.
CHOICES: dict[str, tuple[str, ...]] = {
    "jb_trace": tuple(NAMED),
    "jb_process": tuple(PROCESSES),
    "jb_overlong": tuple(OVERLONG_POLICIES),
    "jb_client": CLIENTS,
}


def add_locust_options(add_argument: Callable[..., Any], **extra: Any) -> None:
    """The options as Locust takes them (``--jb-rate``): Locust's own ``add_argument`` passes ``extra``
    (``include_in_web_ui``); ``joulebench locust`` parses them the same way to check them first."""
    for name, (default, help_text) in LOCUST_OPTIONS.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            add_argument(flag, action="store_true", default=default, help=help_text, **extra)
        else:
            add_argument(flag, type=type(default), default=default, help=help_text, **extra)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: name → (test, what a valid value is).
_RULES: dict[str, tuple[Any, str]] = {
    "jb_rate": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "jb_cv": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "jb_duration": (lambda v: _finite(v) and 0 < v <= MAX_SECONDS, f"seconds > 0, at most {MAX_SECONDS} (30 days)"),
    "jb_start": (lambda v: _finite(v) and v >= 0, "seconds ≥ 0"),
    "jb_timeout": (lambda v: _finite(v) and 0 < v <= MAX_SECONDS, f"seconds > 0, at most {MAX_SECONDS} (30 days)"),
    "jb_first": (lambda v: _integer(v) and 0 <= v <= MAX_REQUESTS, f"0 (all the duration holds) to {MAX_REQUESTS}"),
    "jb_leave_out": (lambda v: _integer(v) and (v == 0 or 2 <= v <= MAX_REQUESTS), "0 (none) or K ≥ 2"),
    "jb_concurrency": (lambda v: _integer(v) and 1 <= v <= 100_000, "1 to 100000 requests in flight"),
    "jb_send_s": (
        lambda v: _finite(v) and 0 <= v <= MAX_SECONDS,
        f"seconds ≥ 0 (0: the whole pool), at most {MAX_SECONDS}",
    ),
    "jb_steady_s": (
        lambda v: _finite(v) and 0 <= v <= MAX_SECONDS,
        f"seconds ≥ 0 (0: not used), at most {MAX_SECONDS}",
    ),
    "jb_seed": (lambda v: _integer(v) and 0 <= v < 2**63, "an integer ≥ 0"),
    "jb_prompt_seed": (lambda v: _integer(v) and -1 <= v < 2**63, "-1 (the seed) or an integer ≥ 0"),
    "jb_max_model_len": (
        lambda v: _integer(v) and (v == 0 or 2 <= v < 2**31),
        "0 (the server's) or a context of at least 2 tokens (one in, one out)",
    ),
    "jb_vocab": (
        lambda v: _integer(v) and 3 <= v < 2**31,
        "an integer ≥ 3 (prompt ids are drawn from [2, vocab))",
    ),
    "jb_process": (lambda v: v in PROCESSES, f"one of {', '.join(PROCESSES)}"),
    "jb_overlong": (lambda v: v in OVERLONG_POLICIES, f"one of {', '.join(OVERLONG_POLICIES)}"),
    "jb_client": (lambda v: v in CLIENTS, f"one of {', '.join(CLIENTS)}"),
    "jb_trace": (lambda v: isinstance(v, str) and v.strip() != "", "a named trace or a path"),
    "jb_records": (lambda v: isinstance(v, str) and v.strip() != "", "a path"),
    "jb_runs_dir": (lambda v: isinstance(v, str) and v.strip() != "", "a folder"),
}


def check_options(options: Any, locust: bool = False) -> None:
    """Every replay option's value, before any traffic; a ``LoadgenError`` names the option as given:
    ``--rate`` (``joulebench replay``) or ``--jb-rate`` (Locust). An option ``options`` lacks has its default."""

    def flag(name: str) -> str:
        return "--" + (name if locust else name.removeprefix("jb_")).replace("_", "-")

    def get(name: str) -> Any:
        return getattr(options, name, LOCUST_OPTIONS.get(name, OPTIONS.get(name, (None,)))[0])

    for name, (test, valid) in _RULES.items():
        if not test(get(name)):
            raise LoadgenError(f"{flag(name)} {get(name)!r}: give {valid}")
    if get("jb_columns"):
        try:
            parse_columns(get("jb_columns"))
        except LoadgenError as err:
            raise LoadgenError(str(err).replace("--columns", flag("jb_columns"), 1)) from None
        if get("jb_trace") in NAMED:
            raise LoadgenError(f"{flag('jb_columns')} is for a CSV/JSONL path; {get('jb_trace')} has its own columns")
    if get("jb_monitor"):
        normalize_target(get("jb_monitor"), flag("jb_monitor"))
    for name in ("jb_send_s", "jb_steady_s"):
        if get(name) and get("jb_process") != CLOSED_LOOP:
            raise LoadgenError(f"{flag(name)} ends a closed loop: give {flag('jb_process')} {CLOSED_LOOP} with it")
    if get("jb_keep_reference") and (get("jb_process") != CLOSED_LOOP or not get("jb_monitor")):
        raise LoadgenError(f"{flag('jb_keep_reference')} keeps a saturated reference: give {flag('jb_process')} "
                           f"{CLOSED_LOOP} and {flag('jb_monitor')} URL")  # fmt: skip


def build_schedule(options: Any) -> tuple[Trace, Schedule]:
    """The trace as replayed (from ``--start``, fitted to the context) and its schedule of sends."""
    if options.jb_process not in PROCESSES:
        raise LoadgenError(f"unknown arrival process {options.jb_process!r}: use one of {', '.join(PROCESSES)}")
    columns_text = getattr(options, "jb_columns", "")
    trace = resolve_trace(
        options.jb_trace,
        trace_dir=Path(options.jb_trace_dir) if options.jb_trace_dir else None,
        columns=parse_columns(columns_text) if columns_text else None,
    )
    if options.jb_start:
        trace = trace.window(options.jb_start, trace.duration_s + 1.0)
    first = int(getattr(options, "jb_first", 0) or 0)
    if options.jb_max_model_len:
        trace = trace.fit(options.jb_max_model_len, getattr(options, "jb_overlong", "drop"), first or None)
    if not trace.requests:
        dropped = f": {trace.overlong.describe()}" if trace.overlong is not None and trace.overlong.requests else ""
        raise LoadgenError(f"{trace.name}: no request to replay from --start {options.jb_start:g} s{dropped}")
    if first:
        if len(trace.requests) < first:
            raise LoadgenError(
                f"--first {first}: the trace holds only {len(trace.requests)} requests from --start "
                f"{options.jb_start:g} s that fit: lower --first or --start"
            )
        trace = trace.first(first)
        _check_draws(options.jb_process, len(trace.requests), options.jb_rate, None)
        schedule = workload(options.jb_process, trace, options.jb_rate, options.jb_seed, options.jb_cv)
    else:
        _check_draws(options.jb_process, len(trace.requests), options.jb_rate, options.jb_duration)
        schedule = PROCESSES[options.jb_process](
            trace, options.jb_rate, options.jb_duration, options.jb_seed, options.jb_cv
        )
    if len(schedule) > MAX_REQUESTS:
        raise LoadgenError(
            f"{schedule.label}: {len(schedule)} requests, more than one replay holds ({MAX_REQUESTS}): "
            "shorten the duration, or give --first"
        )
    if len(schedule) and not (np.isfinite(schedule.times_s[-1]) and schedule.times_s[-1] <= MAX_SECONDS):
        raise LoadgenError(f"{schedule.label}: the schedule would last more than 30 days: raise the rate")
    every = int(getattr(options, "jb_leave_out", 0) or 0)
    if every:
        keep = np.arange(len(schedule)) % every != every - 1
        schedule = Schedule(schedule.times_s[keep], schedule.index[keep], f"{schedule.label}, one in {every} left out")
    return trace, schedule


def _check_draws(process: str, n: int, rate: float, duration_s: float | None) -> None:
    """Refuse a schedule whose drawing alone would exhaust memory (estimated before drawing)."""
    if process in ("trace", CLOSED_LOOP):
        drawn = float(n)
    elif process == "trace-resample":  # a fixed workload tiles the trace until thinning leaves n
        copies = 1.0 if duration_s is not None else math.ceil(1.0 / min(rate, 1.0)) + 1.0
        drawn = copies * n * max(rate, 1.0)
    else:
        drawn = rate * duration_s if duration_s is not None else 2.0 * n + 10.0
    if drawn > MAX_DRAWN:
        raise LoadgenError(
            f"{process} at rate {rate:g} would draw about {drawn:.3g} arrivals (at most {MAX_DRAWN}): "
            "lower the rate or the duration"
        )
