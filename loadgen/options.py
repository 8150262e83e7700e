"""The replay's options (``--jb-*`` in Locust, plain in ``joulebench replay``).

Kept apart from ``loadgen.locustfile``: importing that imports Locust, which monkey-patches the whole
process with gevent; building joulebench's parser must not.
"""

from __future__ import annotations

from typing import Any

from loadgen.arrivals import PROCESSES

#: The options joulebench adds to Locust (``--jb-*``): name → (default, help).
OPTIONS: dict[str, tuple[Any, str]] = {
    "jb_trace": ("azure-conv", "trace: azure-conv, azure-code, or a CSV/JSONL path"),
    "jb_trace_dir": ("", "folder holding the Azure trace files (else the cache, else downloaded)"),
    "jb_process": ("trace", f"arrival process: {', '.join(PROCESSES)}"),
    "jb_rate": (1.0, "time factor for trace/trace-resample (2: twice as fast), requests/s for the others"),
    "jb_cv": (1.0, "gamma process: coefficient of variation of the gaps (1: Poisson)"),
    "jb_duration": (60.0, "seconds of schedule to replay"),
    "jb_start": (0.0, "start this many seconds into the trace"),
    "jb_seed": (0, "seed of the arrival process and the prompts"),
    "jb_model": ("", "model name (default: the server's first)"),
    "jb_chat": (False, "use /v1/chat/completions with text calibrated by /tokenize (serve with prefix caching off)"),
    "jb_max_model_len": (0, "clip requests to this context (0: the server's max_model_len if it says)"),
    "jb_vocab": (2000, "token ids of prompts are drawn from [2, vocab)"),
    "jb_timeout": (300.0, "seconds without a byte before a request times out"),
    "jb_records": ("requests.jsonl", "append every request's record to this file"),
    "jb_monitor": ("", "URL of a joulebench monitor: the web UI's Energy tab then shows live J/token"),
}
