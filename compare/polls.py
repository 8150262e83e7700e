"""What the server and the monitor say during a replay, polled beside it, and what a window reads from it.

``Poller`` asks, every ``interval_s`` in a thread, vLLM's ``/metrics`` (requests running and waiting,
the queue- and prefill-time histograms' sums and counts, prompt tokens) and the monitor's
``/v1/devices`` (clocks, throttle reasons), and appends one JSON line per poll to ``polls.jsonl``.
The pure functions below read those lines: the engine's prefill rate over the replay (vLLM's own
timing: Σ prompt tokens ÷ Σ prefill time), its requests in system (running + waiting) over time, the
throttle reasons seen in a window. ``clock_offset`` measures the load generator's clock against the
monitor's (NTP's way: the midpoint of the fastest of a few round trips).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

#: vLLM's metric (sample) names → the keys of a poll's ``server`` part.
VLLM_SAMPLES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:request_prefill_time_seconds_sum": "prefill_s_sum",
    "vllm:request_prefill_time_seconds_count": "prefill_count",
    "vllm:request_queue_time_seconds_sum": "queue_s_sum",
    "vllm:request_queue_time_seconds_count": "queue_count",
    "vllm:prompt_tokens_total": "prompt_tokens",
}


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """The samples of ``VLLM_SAMPLES`` in a Prometheus text page, summed over their label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = VLLM_SAMPLES.get(sample.name)
            if key is not None:
                out[key] = out.get(key, 0.0) + float(sample.value)
    return out


def _get(url: str, timeout_s: float) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.read()
    except (urllib.error.URLError, OSError, ValueError):
        return None


class Poller:
    """``with Poller(target, monitor, path):`` polls both every ``interval_s`` until the block ends."""

    def __init__(self, target: str, monitor: str | None, path: Path, interval_s: float = 0.5) -> None:
        self.target = target.rstrip("/")
        self.monitor = monitor.rstrip("/") if monitor else None
        self.path = path
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poller", daemon=True)

    def poll(self) -> dict[str, Any]:
        line: dict[str, Any] = {"t": time.time()}
        page = _get(f"{self.target}/metrics", 2.0)
        if page is not None:
            with contextlib.suppress(ValueError):
                line["server"] = parse_vllm_metrics(page.decode(errors="replace"))
        if self.monitor is not None and (body := _get(f"{self.monitor}/v1/devices", 2.0)) is not None:
            with contextlib.suppress(ValueError):
                line["devices"] = {
                    d["device"]: {k: (d.get("status") or {}).get(k) for k in ("sm_clock_hz", "throttle_reasons")}
                    for d in json.loads(body)["devices"]
                }
        return line

    def _run(self) -> None:
        with self.path.open("a") as f:
            while True:
                f.write(json.dumps(self.poll()) + "\n")
                f.flush()
                if self._stop.wait(self.interval_s):
                    return

    def __enter__(self) -> Poller:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def clock_offset(now: Any, tries: int = 5) -> dict[str, float]:
    """The monitor's clock minus this process's (``now()``: the monitor's time), from the fastest try."""
    best: tuple[float, float] | None = None
    for _ in range(tries):
        a = time.time()
        theirs = float(now())
        b = time.time()
        if best is None or b - a < best[1]:
            best = (theirs - (a + b) / 2, b - a)
    assert best is not None
    return {"offset_s": best[0], "round_trip_s": best[1]}
