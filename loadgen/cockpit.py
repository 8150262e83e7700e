"""A Locust run as its master (or a lone Locust process) sees it: the Energy tab's figures and charts,
the run's end and its result.

Each dispatcher keeps an ``Outbox`` of what happened since it last told: the requests it sent (scheduled
and sent times), the requests that ended (end time, tokens, TTFT, TPOT), the schedule's first send, and
at its end whether it drained, its last request's end and any error. A worker's outbox travels in
Locust's own worker reports; a lone process's is read in place.

The ``Cockpit`` keeps one run at a time:

- **The window** runs from the first scheduled send to the last request's end (from a RESET on, if
  any). Energy and tokens are counted over the same window: a request's tokens count when it ended in it.
- **Energy** is polled from the monitor every ``BIN_S`` and summed (``EnergyLedger``), each poll adding
  the energy since the last one, so the total does not need the monitor's whole history. The idle
  baseline is read from the monitor's history before the run (``ledger.IDLE_*``).
- **The end**: when every dispatcher has drained, the run stops by itself. Its final figures are computed
  once — over the whole window from the monitor when it still holds it, else the ledger's sum — stored
  and served from then on (a reload shows the same), and the run directory is written.
- **A failed start** (a missing trace, an unreachable server): the first dispatcher error stops the run;
  its one line is the run's error, shown in the UI.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gevent
from locust.runners import MasterRunner

from estimands.reference import premiums
from estimands.summary import summarize
from loadgen import reference, rundir
from loadgen.arrivals import CLOSED_LOOP
from loadgen.errors import LoadgenError
from loadgen.ledger import (
    ESTIMATE_NOTE,
    IDLE_BLOCK_S,
    IDLE_LOOKBACK_S,
    EnergyLedger,
    energy_figures,
    lowest_average_w,
)
from loadgen.timeline import BIN_S, Timeline

log = logging.getLogger(__name__)

#: The monitor's window ends this far behind now, so it ends on counter updates, not extrapolation.
SETTLE_S = 1.5
TICK_S = 0.5
#: After STOP, how long the master waits for every dispatcher's last report before closing the window.
DONE_TIMEOUT_S = 15.0
#: A monitor gap longer than this (it was down) is skipped and counted, rather than asked for again.
MAX_INTERVAL_S = 300.0


class Outbox:
    """One dispatcher's news since ``drain`` was last called."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.first_s: float | None = None
        self.schedule: dict[str, Any] | None = None
        self.sends: list[tuple[float, float]] = []
        self.ends: list[dict[str, Any]] = []
        self.done = False
        self.drained = False
        self.last_end_s: float | None = None
        self.error: str | None = None

    def end(self, end_s: float, ok: bool, input_tokens: int, output_tokens: int, ttft_s: Any, tpot_s: Any) -> None:
        self.last_end_s = end_s if self.last_end_s is None else max(self.last_end_s, end_s)
        self.ends.append({"end_s": end_s, "ok": ok, "input_tokens": input_tokens, "output_tokens": output_tokens,
                          "ttft_s": ttft_s, "tpot_s": tpot_s})  # fmt: skip

    def drain(self) -> dict[str, Any]:
        payload = {
            "run_id": self.run_id, "first_s": self.first_s, "schedule": self.schedule, "sends": self.sends,
            "ends": self.ends, "done": self.done, "drained": self.drained, "last_end_s": self.last_end_s,
            "error": self.error,
        }  # fmt: skip
        self.sends, self.ends = [], []
        return payload


@dataclass
class Run:
    run_id: str
    started_s: float
    expected: int  # dispatchers (1, or the workers)
    folder: Path
    config: dict[str, Any]
    meter: Any = None
    first_s: float | None = None
    base_s: float | None = None  # the window's start: the first send, or a RESET after it
    reset_s: float | None = None
    end_s: float | None = None
    schedule: dict[str, Any] | None = None
    timeline: Timeline | None = None
    ledger: EnergyLedger | None = None
    chart_end_s: float | None = None  # energy read up to here (the charts' bins)
    until_s: float | None = None  # tokens counted up to here (the ledger's end)
    input_tokens: int = 0
    output_tokens: int = 0
    pending: list[tuple[float, int, int]] = field(default_factory=list)  # ok ends after until_s
    early: list[dict[str, Any]] = field(default_factory=list)  # ends before the first send was known
    reported_at: dict[str, float] = field(default_factory=dict)
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    monitor_error: str | None = None
    idle_power_w: float | None = None
    idle_note: str = ""
    power_w: dict[str, float] = field(default_factory=dict)  # the last interval's, per device
    current_power_w: float | None = None
    kind: str = ""
    sources: list[str] = field(default_factory=list)
    simulated: list[str] = field(default_factory=list)  # what simulates the measured devices, as the monitor says
    gap_s: float = 0.0
    stopping_s: float | None = None  # STOP (or the run's own stop) was seen
    result: dict[str, Any] | None = None
    greenlet: Any = None

    @property
    def phase(self) -> str:
        if self.result is not None:
            return "failed" if self.error else "final"
        if self.end_s is not None or self.stopping_s is not None:
            return "finishing"
        return "running" if self.first_s is not None else "starting"


def idle_baseline(meter: Any, before_s: float) -> tuple[float | None, str]:
    """The lowest ``IDLE_BLOCK_S`` average power in the monitor's history (up to ``IDLE_LOOKBACK_S``, less
    where the monitor keeps less) before ``before_s``, and how it was measured."""
    from monitor.errors import MonitorError

    for lookback in (IDLE_LOOKBACK_S, 6 * IDLE_BLOCK_S, IDLE_BLOCK_S):
        try:
            reading = meter.energy(before_s - lookback, before_s)
            break
        except MonitorError:
            if lookback == IDLE_BLOCK_S:
                raise
    covered = min(d.get("covered_s", 0.0) for d in reading.devices.values() if d["kind"] == reading.kind)
    blocks = math.floor(covered / IDLE_BLOCK_S + 1e-9)
    if blocks < 1:
        return None, (
            f"no idle baseline: the monitor held {covered:.0f} s before the run, less than one {IDLE_BLOCK_S:g} s "
            "block (start the run a little later)"
        )
    series = meter.series(before_s - blocks * IDLE_BLOCK_S, before_s, IDLE_BLOCK_S)
    idle = lowest_average_w(series.edges.tolist(), series.energy_j.tolist())
    return idle, f"lowest {IDLE_BLOCK_S:g} s average of {blocks * IDLE_BLOCK_S:g} s before the run"


class Cockpit:
    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.run: Run | None = None

    # -- the run's life -------------------------------------------------------------------------------

    def start(self, plan: dict[str, Any], meter: Any) -> Run:
        """A new run (Locust's test start): its directory made, its idle baseline and energy polled. A run
        still finishing goes on finishing on its own (its late reports are no longer taken)."""
        self.stopping()  # a run not yet stopped closes its window at its last report
        opts = self.environment.parsed_options
        folder = (Path(opts.jb_runs_dir) / plan["run_id"]).resolve()
        config = {
            "run_id": plan["run_id"], "started_s": time.time(), "target": self.environment.host,
            "dispatchers": plan["count"], "plan_start_s": plan["start_s"],
            "options": {k: v for k, v in sorted(vars(opts).items()) if k.startswith("jb_")},
        }  # fmt: skip
        run = Run(plan["run_id"], time.time(), plan["count"], folder, config, meter=meter)
        self.run = run
        try:
            rundir.start(folder, config)
        except LoadgenError as err:
            run.error = str(err)
        run.greenlet = gevent.spawn(self._life, run)
        return run

    def ingest(self, source: str, payload: dict[str, Any]) -> None:
        """A dispatcher's news (its outbox drained), from a worker's report or in place."""
        run = self.run
        if run is None or payload.get("run_id") != run.run_id or run.result is not None:
            return
        run.reported_at[source] = time.time()
        if payload.get("first_s") is not None and run.first_s is None:
            run.first_s = payload["first_s"]
            run.base_s = max(run.first_s, run.reset_s or run.first_s)
            run.timeline = Timeline(run.first_s)
            run.chart_end_s = run.until_s = run.first_s
            if run.meter is not None:
                run.ledger = EnergyLedger(run.base_s)
            self._ends(run, run.early)
            run.early = []
        if payload.get("schedule") and run.schedule is None:
            run.schedule = payload["schedule"]
        if run.timeline is not None:
            run.timeline.add_sends(payload.get("sends", []))
            self._ends(run, payload.get("ends", []))
        else:
            run.early.extend(payload.get("ends", []))
        if payload.get("error") and run.error is None:
            run.error = payload["error"]
            self._stop_runner(run, final=False)  # the other dispatchers stop sending too
        if payload.get("done"):
            run.done[source] = {"drained": payload.get("drained", False), "last_end_s": payload.get("last_end_s")}
            if len(run.done) >= run.expected:
                ends = [d["last_end_s"] for d in run.done.values() if d["last_end_s"] is not None]
                run.end_s = max(ends) if ends else None
                if run.end_s is None:  # nothing was sent: no window
                    run.end_s = run.base_s or time.time()

    def _ends(self, run: Run, ends: list[dict[str, Any]]) -> None:
        if run.timeline is not None:
            run.timeline.add_ends(ends)
        for e in ends:
            if not e["ok"] or e["end_s"] < (run.base_s or 0.0):
                continue
            if run.until_s is not None and e["end_s"] <= run.until_s:
                run.input_tokens += e["input_tokens"]
                run.output_tokens += e["output_tokens"]
            else:
                run.pending.append((e["end_s"], e["input_tokens"], e["output_tokens"]))

    def reset(self, at_s: float) -> None:
        """Locust's RESET: energy and tokens start again from now, together."""
        run = self.run
        if run is None or run.result is not None or run.end_s is not None:
            return
        run.reset_s = at_s
        if run.first_s is None:
            return
        run.base_s = max(at_s, run.first_s)
        run.input_tokens = run.output_tokens = 0
        run.pending = [p for p in run.pending if p[0] >= run.base_s]
        run.until_s = max(run.until_s or run.base_s, run.base_s)
        if run.ledger is not None:
            run.ledger = EnergyLedger(run.base_s)

    def stopping(self) -> None:
        """Locust's test stop (STOP, or the run stopping itself)."""
        if self.run is not None and self.run.stopping_s is None:
            self.run.stopping_s = time.time()

    def _stop_runner(self, run: Run, final: bool) -> None:
        """Stop Locust's run (``final``: the result is stored; headless, Locust then exits)."""
        runner = self.environment.runner
        if runner is None or self.run is not run:
            return
        if final and getattr(self.environment.parsed_options, "headless", False):
            gevent.spawn(runner.quit)
        elif runner.state not in ("stopping", "stopped", "cleanup"):
            gevent.spawn(runner.stop)

    def finish_now(self) -> None:
        """Locust is quitting before the run ended by itself (a signal): its window closes at what has been
        reported and its run directory is written now, rather than left without a summary."""
        run = self.run
        if run is None or run.result is not None:
            return
        if run.greenlet is not None:
            run.greenlet.kill(block=True)
        try:
            self._read_local(run)  # a lone process's last news: its in-flight requests ended as interrupted
            if run.end_s is None:
                ends = [d["last_end_s"] for d in run.done.values() if d["last_end_s"] is not None]
                run.end_s = max(ends) if ends else time.time()
            self._finish(run)
        except Exception as err:  # a bug: the exit says the run did not complete; the log says why
            log.exception("the run directory could not be written at exit")
            run.error = run.error or f"the run directory could not be written at exit: {err}"

    def _life(self, run: Run) -> None:
        try:
            if run.meter is not None:
                self._baseline(run)
            while run.end_s is None:
                self._read_local(run)
                if run.stopping_s is not None and time.time() - run.stopping_s > DONE_TIMEOUT_S:
                    run.end_s = max([d["last_end_s"] or 0 for d in run.done.values()] + [run.stopping_s])
                    log.warning("not every dispatcher reported its end within %.0f s of the stop", DONE_TIMEOUT_S)
                    break
                if run.first_s is not None:
                    self._poll(run, final=False)
                gevent.sleep(TICK_S)
            if run.first_s is not None:
                while (run.chart_end_s or 0) < run.end_s:
                    self._read_local(run)
                    if not self._poll(run, final=True):
                        gevent.sleep(TICK_S)
            self._finish(run)
        except gevent.GreenletExit:
            raise
        except Exception as err:  # a bug: say so in the UI too, not only in the log
            log.exception("the Energy tab's run loop failed")
            run.error = run.error or f"the Energy tab failed: {type(err).__name__}: {err}"
            run.result = {"error": run.error}
        self._stop_runner(run, final=True)

    def _read_local(self, run: Run) -> None:
        outbox = getattr(self.environment, "jb_outbox", None)
        if outbox is not None and outbox.run_id == run.run_id and not isinstance(self.environment.runner, MasterRunner):
            self.ingest("local", outbox.drain())

    def _baseline(self, run: Run) -> None:
        from monitor.errors import MonitorError

        try:
            run.idle_power_w, run.idle_note = idle_baseline(run.meter, run.started_s)
        except MonitorError as err:
            run.idle_note = f"no idle baseline: {err}"
            run.monitor_error = str(err)

    def _reported_until(self, run: Run) -> float:
        """Events are known up to here: every dispatcher still running has reported since."""
        active = [t for s, t in run.reported_at.items() if s not in run.done]
        if len(run.reported_at) < run.expected and len(run.done) < run.expected:
            return run.first_s or 0.0
        return min(active) if active else math.inf

    def _poll(self, run: Run, final: bool) -> bool:
        """Read the next interval (one bin, or up to the window's end); whether one was read."""
        from monitor.errors import MonitorError

        a = run.chart_end_s
        assert a is not None and run.first_s is not None
        k = math.floor((a - run.first_s) / BIN_S + 1e-9) + 1
        b = run.first_s + k * BIN_S
        if run.end_s is not None:
            b = min(b, run.end_s)
        limit = min(time.time() - SETTLE_S, self._reported_until(run))
        if b > limit or b <= a:
            return False
        if run.meter is not None:
            try:
                reading = run.meter.energy(a, b)
                ledger = run.ledger
                if ledger is not None and ledger.end_s <= a:
                    ledger.add(reading)
                elif ledger is not None and ledger.end_s < b:  # a RESET inside this interval
                    ledger.add(run.meter.energy(ledger.end_s, b))
            except MonitorError as err:
                run.monitor_error = str(err)
                if b - a > MAX_INTERVAL_S:  # the monitor was gone too long: skip, and say so
                    run.gap_s += b - a
                    run.ledger = EnergyLedger(b) if run.ledger is not None else None
                    self._advance(run, a, b, None)
                return False
            run.monitor_error = None
            self._advance(run, a, b, reading)
        else:
            self._advance(run, a, b, None)
        return True

    def _advance(self, run: Run, a: float, b: float, reading: Any) -> None:
        run.chart_end_s = b
        run.until_s = b
        keep = []
        for end_s, n_in, n_out in run.pending:
            if end_s <= b:
                run.input_tokens += n_in
                run.output_tokens += n_out
            else:
                keep.append((end_s, n_in, n_out))
        run.pending = keep
        if reading is None or run.timeline is None:
            return
        chosen = {k: d for k, d in reading.devices.items() if d["kind"] == reading.kind}
        run.power_w = {k: d["energy_j"] / (b - a) for k, d in chosen.items()}
        if len(chosen) > 1:
            run.power_w["total"] = reading.energy_j / (b - a)
        run.current_power_w = reading.energy_j / (b - a)
        run.kind, run.sources = reading.kind, list(reading.sources)
        run.simulated = sorted({d["simulated"] for d in chosen.values() if d.get("simulated")})
        run.timeline.add_power(a, run.power_w)

    # -- the result -----------------------------------------------------------------------------------

    def live_figures(self, run: Run) -> dict[str, Any] | None:
        if run.result is not None:
            return run.result.get("energy") if isinstance(run.result.get("energy"), dict) else None
        ledger = run.ledger
        if ledger is None or ledger.intervals == 0:
            return None
        return energy_figures(
            ledger.energy_j, ledger.uncertainty_j, ledger.base_s, ledger.end_s, run.input_tokens,
            run.output_tokens, run.idle_power_w, ledger.kind, ledger.sources, ledger.short_window,
        )  # fmt: skip

    def _final_energy(self, run: Run) -> dict[str, Any]:
        from monitor.errors import MonitorError

        assert run.base_s is not None and run.end_s is not None
        n_in = run.input_tokens + sum(p[1] for p in run.pending)
        n_out = run.output_tokens + sum(p[2] for p in run.pending)
        if run.meter is None:
            return {"error": "no monitor: start Locust with --jb-monitor URL for the run's energy"}
        if run.end_s <= run.base_s:
            return {"error": "no request ended in the window: no energy to share"}
        how = "the monitor's energy over the whole window"
        try:
            reading = run.meter.energy(run.base_s, run.end_s)
            energy, u, kind, sources, short = (reading.energy_j, reading.uncertainty_j, reading.kind,
                                               reading.sources, reading.short_window)  # fmt: skip
            devices = {k: d["energy_j"] for k, d in reading.devices.items()}
            gap_s = max(run.gap_s, reading.unread_s)  # a skipped poll is unread in the whole window too
        except MonitorError as err:
            ledger = run.ledger
            if ledger is None or ledger.intervals == 0 or not math.isclose(ledger.end_s, run.end_s):
                return {"error": f"no energy for the window: {err}"}
            how = f"the sum of the polls (the monitor answered for the whole window: {err})"
            energy, u, kind, sources, short = (ledger.energy_j, ledger.uncertainty_j, ledger.kind,
                                               ledger.sources, ledger.short_window)  # fmt: skip
            devices = {k: d["energy_j"] for k, d in ledger.devices.items()}
            gap_s = run.gap_s + ledger.unread_s
        figures = energy_figures(energy, u, run.base_s, run.end_s, n_in, n_out, run.idle_power_w, kind,
                                 sources, short)  # fmt: skip
        figures.update(how=how, devices=devices, idle_how=run.idle_note, monitor=run.meter.url,
                       monitor_gap_s=gap_s)  # fmt: skip
        return figures

    def _finish(self, run: Run) -> None:
        """The final figures, stored; the run directory's files; Locust's CSV beside its own."""
        opts = self.environment.parsed_options
        drained = run.done and all(d["drained"] for d in run.done.values())
        stopped_by = "error" if run.error else ("drained" if drained else "stop")
        window = {
            "run_id": run.run_id, "start_s": run.first_s, "end_s": run.end_s, "reset_s": run.reset_s,
            "energy_start_s": run.base_s, "stopped_by": stopped_by,
            "definition": "first scheduled send → last request's end (from a RESET on, if any)",
        }  # fmt: skip
        energy = (
            self._final_energy(run) if run.first_s is not None else {"error": run.error or "the replay sent no request"}
        )
        records, files = rundir.run_records(run.folder, run.run_id) if run.folder.is_dir() else ([], [])
        summary: dict[str, Any] = summarize(records) if records else {"requests": 0}
        if run.config["options"].get("jb_process") == CLOSED_LOOP and run.meter is not None and records:
            summary["reference"] = self._reference(run, records)
        summary.update(
            run_id=run.run_id, target=self.environment.host, schedule=run.schedule, window=window, energy=energy,
            records=files, error=run.error, run_dir=str(run.folder),
        )  # fmt: skip
        if run.expected > 1 and len(files) < run.expected:
            summary["records_note"] = (
                f"{len(files)} of {run.expected} workers' records are in {run.folder}: the others are in the same "
                "folder on their own hosts"
            )
        text = rundir.energy_csv(energy if "error" not in energy else None, run.run_id, str(run.folder))
        try:
            rundir.finish(run.folder, window, summary, run.timeline.series() if run.timeline else {}, text)
            if getattr(opts, "csv_prefix", None):
                Path(f"{opts.csv_prefix}_energy.csv").write_text(text, encoding="utf-8")
        except (LoadgenError, OSError) as err:
            run.error = run.error or str(err)
        run.result = {"energy": energy, "window": window, "summary": summary}
        log.info("run %s: %s; run directory %s", run.run_id, stopped_by, run.folder)

    def _reference(self, run: Run, records: list[dict[str, Any]]) -> dict[str, Any]:
        """A saturate run's reference (``estimands.reference``); a valid one becomes the stack's, kept in the
        runs folder and published on ``/metrics``."""
        opts = SimpleNamespace(**run.config["options"])  # the run's own, whatever a later form says
        ref = reference.measure(records, run.meter, opts.jb_concurrency, reference.workload_of(records, opts),
                                run.run_id)  # fmt: skip
        try:
            if reference.save(Path(opts.jb_runs_dir), ref) is not None:
                self.environment.jb_reference = ref
        except LoadgenError as err:
            run.error = run.error or str(err)
        how = "the stack's reference now" if ref["valid"] else "not valid: " + "; ".join(ref["reasons"])
        log.info("run %s: saturated reference %s J/token (%s)", run.run_id, ref.get("j_per_token"), how)
        return ref

    def live(self, series: bool = True) -> dict[str, Any]:
        """Everything the Energy tab shows, as JSON (``series``: with the charts' data)."""
        run = self.run
        if run is None:
            return {"phase": "idle"}
        figures = self.live_figures(run)
        ref = getattr(self.environment, "jb_reference", None)
        estimated = "estimate" in (run.sources or (figures or {}).get("sources") or [])
        notes = [f"Simulated, not measured: {'; '.join(run.simulated)}."] if run.simulated else []
        notes += [ESTIMATE_NOTE] if estimated else []
        return {
            "run_id": run.run_id, "phase": run.phase, "error": run.error, "monitor_error": run.monitor_error,
            "monitor": run.meter.url if run.meter is not None else None, "run_dir": str(run.folder),
            "figures": figures, "final_error": (run.result or {}).get("energy", {}).get("error"),
            "idle_power_w": run.idle_power_w, "idle_note": run.idle_note,
            "current_power_w": run.current_power_w, "power_w": run.power_w, "kind": run.kind,
            "estimated": estimated, "simulated": run.simulated, "note": " ".join(notes),
            "window": {"start_s": run.first_s, "base_s": run.base_s, "reset_s": run.reset_s, "end_s": run.end_s,
                       "until_s": run.until_s},
            "schedule": run.schedule, "expected": run.expected,
            "reference": ref, "premium": premiums(figures, ref),
            "measures_reference": run.config["options"].get("jb_process") == CLOSED_LOOP,
            "options": {k: run.config["options"].get(k) for k in ("jb_trace", "jb_process", "jb_rate")},
            "run_reference": (run.result or {}).get("summary", {}).get("reference"),
            "series": run.timeline.series() if series and run.timeline is not None else {"t_s": []},
        }  # fmt: skip
