"""The replay's options (``--jb-*`` in Locust, plain in ``joulebench replay``).

Kept apart from ``loadgen.locustfile``: importing that imports Locust, which monkey-patches the whole
process with gevent; building joulebench's parser must not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadgen.arrivals import PROCESSES, Schedule, workload
from loadgen.errors import LoadgenError
from loadgen.traces import OVERLONG_POLICIES, Trace, resolve_trace

#: The options joulebench adds to Locust (``--jb-*``): name → (default, help).
OPTIONS: dict[str, tuple[Any, str]] = {
    "jb_trace": ("azure-conv", "trace: azure-conv, azure-code, or a CSV/JSONL path"),
    "jb_trace_dir": ("", "folder holding the Azure trace files (else the cache, else downloaded)"),
    "jb_process": ("trace", f"arrival process: {', '.join(PROCESSES)}"),
    "jb_rate": (1.0, "time factor for trace/trace-resample (2: twice as fast), requests/s for the others"),
    "jb_cv": (1.0, "gamma process: coefficient of variation of the gaps (1: Poisson)"),
    "jb_duration": (60.0, "seconds of schedule to replay (with --first: not used)"),
    "jb_first": (
        0,
        "replay exactly the first N requests from --start, each once, at the process's times (the same requests "
        "at every rate); 0: every request the duration holds",
    ),
    "jb_start": (0.0, "start this many seconds into the trace"),
    "jb_seed": (0, "seed of the arrival process and the prompts"),
    "jb_prompt_seed": (
        -1,
        "seed of the prompts alone (-1: the seed); runs with the same one send the same prompts, "
        "which a prefix cache serves cheaper",
    ),
    "jb_model": ("", "model name (default: the server's first)"),
    "jb_chat": (False, "use /v1/chat/completions with text calibrated by /tokenize (serve with prefix caching off)"),
    "jb_max_model_len": (0, "the context requests must fit (0: the server's max_model_len if it says)"),
    "jb_overlong": ("drop", f"requests longer than the context: {', '.join(OVERLONG_POLICIES)}"),
    "jb_vocab": (2000, "token ids of prompts are drawn from [2, vocab)"),
    "jb_timeout": (300.0, "seconds without a byte before a request times out"),
    "jb_records": ("requests.jsonl", "append every request's record to this file"),
    "jb_monitor": ("", "URL of a joulebench monitor: the web UI's Energy tab then shows live J/token"),
}


def build_schedule(options: Any) -> tuple[Trace, Schedule]:
    """The trace as replayed (from ``--start``, fitted to the context) and its schedule of sends."""
    if options.jb_process not in PROCESSES:
        raise LoadgenError(f"unknown arrival process {options.jb_process!r}: use one of {', '.join(PROCESSES)}")
    trace = resolve_trace(options.jb_trace, trace_dir=Path(options.jb_trace_dir) if options.jb_trace_dir else None)
    if options.jb_start:
        trace = trace.window(options.jb_start, trace.duration_s + 1.0)
    first = int(getattr(options, "jb_first", 0) or 0)
    if options.jb_max_model_len:
        trace = trace.fit(options.jb_max_model_len, getattr(options, "jb_overlong", "drop"), first or None)
    if first:
        if len(trace.requests) < first:
            raise LoadgenError(
                f"--first {first}: the trace holds only {len(trace.requests)} requests from --start "
                f"{options.jb_start:g} s that fit: lower --first or --start"
            )
        trace = trace.first(first)
        return trace, workload(options.jb_process, trace, options.jb_rate, options.jb_seed, options.jb_cv)
    schedule = PROCESSES[options.jb_process](
        trace, options.jb_rate, options.jb_duration, options.jb_seed, options.jb_cv
    )
    return trace, schedule
