"""joulebench's Locust plugin: replay a trace at a controlled arrival rate, open loop.

Run it with ``joulebench locust`` (Locust's web UI: trace, process, rate, duration and monitor are fields
of its start form) or headless with ``joulebench replay``. One ``TraceReplayUser`` per process is the
dispatcher: it builds the schedule, sleeps until each request's time and spawns a greenlet to send it,
never waiting for a response before sending the next.

Distributed (``--master`` and ``--worker``s): the user count is the workers' (set at the start whatever
the form says), so each worker runs one dispatcher. At test start the master sends every worker the
plan, a common start time and the number of workers; each worker builds the same seeded schedule and
sends the requests whose position modulo the number of workers is its index, so none is sent twice or
lost.

Each request fires Locust's own ``request`` event (so its UI and CSV stay right) and its full
``RequestRecord`` is appended to the run's records file as it ends (``RUNS_DIR/RUN_ID/requests.jsonl``,
``requests.workerN.jsonl`` per worker; ``--records`` in ``joulebench replay``); requests still in flight
when the user stops are recorded as interrupted. A request whose handling raises is a ``client_error``
record (``send`` never raises); only a records file that can no longer be written stops the replay. Every
record carries the run's id (one per test start, the master's on workers). Chat prompts are calibrated,
every length this process sends, before the schedule starts.

The web UI (``loadgen.webui``, ``loadgen.cockpit``) shows the run's energy and latency over its window
(first scheduled send → last request's end), stops the run by itself when the schedule is done and the
requests have drained (or at a dispatcher's error, shown in the UI), and writes the run directory. It
serves ``/metrics`` (``loadgen.metrics``): the schedule's target, requests sent, finished and in flight,
schedule lag and TTFT, summed over the workers on a master, for Prometheus and Grafana.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
import gevent.lock
import gevent.pool
import numpy as np
from gevent.event import AsyncResult
from locust import User, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from estimands.tokens import end_of
from loadgen import reference, webui
from loadgen.arrivals import CLOSED_LOOP
from loadgen.client import (
    ClientConfig,
    TextCalibrator,
    normalize_target,
    request_body,
    send,
    served_model,
    server_api,
)
from loadgen.cockpit import SETTLE_S, Cockpit, Outbox
from loadgen.errors import LoadgenError
from loadgen.metrics import ReferenceCollector, ReplayCollector, ReplayMetrics, merge
from loadgen.options import add_locust_options, build_schedule, check_options
from loadgen.records import RecordWriter, RequestRecord
from loadgen.rundir import records_name

log = logging.getLogger(__name__)


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    # Locust's own add_argument (not a group's) takes include_in_web_ui: the fields of its start form.
    add_locust_options(parser.add_argument, include_in_web_ui=True)


def _extend_web_ui(environment: Any) -> None:
    webui.extend(environment, environment.jb_cockpit)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReplayCollector(lambda: metrics_snapshot(environment)))
    registry.register(ReferenceCollector(lambda: getattr(environment, "jb_reference", None)))

    @environment.web_ui.app.route("/metrics")
    def metrics() -> Any:
        from flask import Response

        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def metrics_snapshot(environment: Any) -> dict[str, Any]:
    """This process's replay counts, plus (on Locust's master) the newest report of each worker."""
    own = replay_metrics(environment).snapshot()
    return merge([own, *getattr(environment, "jb_worker_metrics", {}).values()])


def replay_metrics(environment: Any) -> ReplayMetrics:
    """This process's counts (made on first use: ``joulebench replay`` builds its Environment without init)."""
    if getattr(environment, "jb_metrics", None) is None:
        environment.jb_metrics = ReplayMetrics()
    return environment.jb_metrics


#: The signals that asked this Locust process to stop (a headless run they cut short exits 128 + the signal).
_SIGNALLED: list[int] = []


def _interrupt_in_main() -> None:
    """Ctrl-C (SIGINT) as a KeyboardInterrupt in Locust's main greenlet only, where its main loop takes it
    (writes the --html report, shuts down). Python raises it in whichever greenlet runs when the signal lands:
    one inside Locust's stop (a run stopping itself) left the runner half-stopped, and Locust hung at exit
    until SIGTERM. SIGTERM is only noted: Locust's own handler, registered after this one, shuts down (libev
    calls both, in that order). A hang-up (SIGHUP, the terminal closed), whose default would kill the process
    with its requests in flight unrecorded, is noted and turned into that SIGTERM. ``joulebench replay`` fires
    no init event: its own handlers stand."""
    main = gevent.get_hub().parent

    def on_sigint() -> None:
        _SIGNALLED.append(signal.SIGINT)
        main.throw(KeyboardInterrupt)

    gevent.signal_handler(signal.SIGINT, on_sigint)
    gevent.signal_handler(signal.SIGTERM, _SIGNALLED.append, signal.SIGTERM)

    def on_sighup() -> None:
        _SIGNALLED.append(signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)

    gevent.signal_handler(signal.SIGHUP, on_sighup)


def incomplete_exit_code(run: Any, signalled: list[int]) -> int | None:
    """A headless run's exit status where it did not complete: 2 when it stopped at an error (it could not
    start, its records could not be written), 128 + the signal when a signal cut it short before its run
    directory was written; None when it completed (Locust's own status stands)."""
    if run is not None and run.error:
        return 2
    if signalled and (run is None or run.result is None):
        return 128 + signalled[0]
    return None


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    _interrupt_in_main()
    runner = environment.runner
    if not isinstance(runner, WorkerRunner):
        environment.jb_cockpit = Cockpit(environment)
        runs_dir = getattr(environment.parsed_options, "jb_runs_dir", None)
        environment.jb_reference = reference.load(Path(runs_dir)) if runs_dir else None  # kept across runs
        _ENVIRONMENTS.append(environment)
        _one_dispatcher_each(environment)
    if getattr(environment, "web_ui", None) is not None:
        _extend_web_ui(environment)
    if isinstance(runner, MasterRunner):
        environment.jb_worker_metrics = {}

        @environment.events.worker_report.add_listener
        def on_worker_report(client_id: str, data: dict[str, Any]) -> None:
            if "jb_metrics" in data:
                environment.jb_worker_metrics[client_id] = data["jb_metrics"]
            if "jb" in data:
                environment.jb_cockpit.ingest(client_id, data["jb"])

    if isinstance(runner, WorkerRunner):

        @environment.events.report_to_master.add_listener
        def on_report(client_id: str, data: dict[str, Any]) -> None:
            data["jb_metrics"] = replay_metrics(environment).snapshot()
            if (outbox := getattr(environment, "jb_outbox", None)) is not None:
                data["jb"] = outbox.drain()

        def on_plan(msg: Any, **__: Any) -> None:
            plan = AsyncResult()
            plan.set(msg.data)
            environment.jb_plan = plan

        runner.register_message("jb_plan", on_plan)


def _one_dispatcher_each(environment: Any) -> None:
    """Headless and --autostart runs start with the command line's user count: the workers' instead
    (the web UI's start sets it per start, ``loadgen.webui``)."""
    opts = environment.parsed_options
    if opts is None:
        return
    n = max(1, int(getattr(opts, "expect_workers", 1) or 1)) if isinstance(environment.runner, MasterRunner) else 1
    if getattr(opts, "num_users", None) not in (None, n):
        log.info("%d users: one dispatcher per %s", n, "worker" if n > 1 else "process")
    opts.num_users, opts.spawn_rate = n, float(n)


@events.reset_stats.add_listener
def _on_reset(**_: Any) -> None:
    for environment in _environments():
        environment.jb_cockpit.reset(time.time())


@events.test_stop.add_listener
def _on_test_stop(environment: Any, **_: Any) -> None:
    if (cockpit := getattr(environment, "jb_cockpit", None)) is not None:
        cockpit.stopping()


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    if getattr(environment.parsed_options, "headless", False) and environment.process_exit_code is None:
        cockpit = getattr(environment, "jb_cockpit", None)
        if cockpit is not None and (code := incomplete_exit_code(cockpit.run, _SIGNALLED)) is not None:
            environment.process_exit_code = code


@events.quit.add_listener
def _on_quit(**_: Any) -> None:
    for environment in _environments():
        environment.jb_cockpit.finish_now()  # a run cut short: its records are written now, its directory next
        webui.add_to_html_file(getattr(environment.parsed_options, "html_file", None), environment.jb_cockpit)


_ENVIRONMENTS: list[Any] = []


def _environments() -> list[Any]:
    """The environments with a cockpit (Locust's events ``reset_stats`` and ``quit`` name none)."""
    return [e for e in _ENVIRONMENTS if getattr(e, "jb_cockpit", None) is not None]


def new_run_id() -> str:
    """When the run started and a random suffix: sorts by time, unique across hosts."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    environment.jb_test_start_s = time.time()
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        return
    if isinstance(runner, MasterRunner):
        plan = {"start_s": time.time() + 1.0, "count": runner.worker_count, "run_id": new_run_id()}
        runner.send_message("jb_plan", plan)
    else:
        plan = {"start_s": time.time() + 0.2, "count": 1, "run_id": new_run_id()}
        result = AsyncResult()
        result.set(plan)
        environment.jb_plan = result
    if (cockpit := getattr(environment, "jb_cockpit", None)) is not None:
        from monitor.meter import MonitorClient

        url = environment.parsed_options.jb_monitor
        cockpit.start(plan, MonitorClient(url, settle_s=SETTLE_S) if url else None)


def records_path(path: str, index: int, count: int) -> Path:
    p = Path(path)
    return p if count == 1 else p.with_name(f"{p.stem}.worker{index}{p.suffix}")


def token_prompt(index: int, n_tokens: int, vocab: int, seed: int) -> list[int]:
    """Distinct token-id prompts (so no prefix cache makes a request cheaper than the trace says)."""
    return np.random.default_rng((seed, index)).integers(2, vocab, n_tokens).tolist()


class TraceReplayUser(User):
    """The dispatcher: one per process (a second user in the same process stops at once)."""

    writer: RecordWriter | None = None
    slots: Any = None  # the closed loop's slots (saturate), or None
    cohort: set[str] | None = None  # --steady-s: the start cohort's requests still running
    cohort_last_s: float = -math.inf  # --steady-s: the latest end among those that have ended
    cohort_ended_s: float | None = None  # --steady-s: when the whole cohort had ended
    outbox: Outbox | None = None  # what the web UI's master is told (none under `joulebench replay`)
    dispatcher = False

    def on_start(self) -> None:
        self.in_flight: dict[str, RequestRecord] = {}
        self.pool = gevent.pool.Pool()
        self.sent = 0

    def on_stop(self) -> None:
        if not self.dispatcher:
            return
        self.pool.kill(block=True)  # requests still running end here; their records are written below
        if self.writer is not None:
            self.writer.close(in_flight=list(self.in_flight.values()))
            self.environment.jb_recorded = (self.writer.written, self.sent)
            for record in self.in_flight.values():
                replay_metrics(self.environment).on_finished(record)
        if self.outbox is not None:
            for _ in self.in_flight.values():
                self.outbox.end(time.time(), False, 0, 0, None, None)
            self.outbox.done = True
        self.environment.jb_dispatching = False
        self.environment.jb_ended = True  # every record is written: `joulebench replay` may read them

    @task
    def replay(self) -> None:
        env = self.environment
        if getattr(env, "jb_dispatching", False):
            raise StopUser()  # this process already has its dispatcher
        env.jb_dispatching = self.dispatcher = True
        env.jb_error, env.jb_ended = None, False  # a new test in the web UI starts clean
        try:
            self._dispatch(env)
        except LoadgenError as err:  # a one-line reason (the server, the trace, an option, the records file)
            if not getattr(env, "jb_caller_reports", False):  # `joulebench replay` prints it as its error line
                log.error("the replay stopped: %s", err)
            env.jb_error = err
            self._tell_error(str(err))
        except Exception as err:  # Locust would log it and run the task again: say so once, and stop
            log.exception("the replay stopped")
            env.jb_error = err
            self._tell_error(f"{type(err).__name__}: {err} (the traceback is in Locust's log)")
        raise StopUser()

    def _tell_error(self, message: str) -> None:
        if self.outbox is not None and self.outbox.error is None:
            what = "stopped" if self.sent else "could not start"
            self.outbox.error = f"the replay {what}: {message}"

    def _dispatch(self, env: Any) -> None:
        opts = env.parsed_options
        try:
            plan = env.jb_plan.get(timeout=60)
        except gevent.Timeout:
            raise LoadgenError("no plan from Locust's master within 60 s") from None
        distributed = isinstance(env.runner, WorkerRunner)
        if distributed or getattr(env, "jb_cockpit", None) is not None:
            self.outbox = env.jb_outbox = Outbox(plan["run_id"])
        check_options(opts, locust=True)
        index = getattr(env.runner, "worker_index", 0) if distributed else 0
        if runs_dir := getattr(opts, "jb_runs_dir", None):  # Locust: the run's own directory
            path = Path(runs_dir) / plan["run_id"] / records_name(index, plan["count"])
        else:  # `joulebench replay`
            path = records_path(opts.jb_records, index, plan["count"])
        self.writer = RecordWriter(path).open()
        base_url = normalize_target(self.host or "http://127.0.0.1:8000", "--host")
        model, max_len = served_model(base_url)
        if not opts.jb_max_model_len and max_len:
            opts.jb_max_model_len = int(max_len)
        trace, schedule = build_schedule(opts)
        reported = getattr(env, "jb_caller_reports", False)  # `joulebench replay` prints it in its own summary
        if trace.overlong is not None:
            log.log(logging.WARNING if trace.overlong.requests and not reported else logging.INFO, "%s",
                    trace.overlong.describe())  # fmt: skip
        api = server_api(base_url)  # transformers serve takes text only: chat, calibrated
        config = ClientConfig(base_url=base_url, model=opts.jb_model or model, chat=opts.jb_chat or api != "vllm",
                              timeout_s=opts.jb_timeout, api=api, client=opts.jb_client)  # fmt: skip
        calibrator = TextCalibrator(base_url, config.model, api=api) if config.chat else None
        prompt_seed = opts.jb_seed if opts.jb_prompt_seed < 0 else opts.jb_prompt_seed
        mine = [i for i in range(len(schedule)) if i % plan["count"] == index]
        texts: dict[int, str] = {}
        if calibrator is not None:  # before the schedule starts: calibrating inside it would delay the sends
            lengths = [trace.requests[int(schedule.index[i])].input_tokens for i in mine]
            log.info("calibrating chat prompts: %d lengths", len(set(lengths)))
            texts = calibrator.texts(lengths)
            if api == "transformers" and lengths:
                calibrator.distinct(lengths[0], 0)  # its fillers are found now, not inside the schedule
        start = plan["start_s"]
        if time.time() > start:
            if distributed:
                log.warning("this worker is %.1f s behind the common start (its calibration)", time.time() - start)
            else:
                start = time.time() + 0.2
        env.jb_schedule_start_s = start
        closed = opts.jb_process == CLOSED_LOOP
        if self.outbox is not None:
            first = 0.0 if closed or not len(schedule) else float(schedule.times_s[0])
            self.outbox.first_s, self.outbox.schedule = start + first, {"label": schedule.label,
                                                                         "requests": len(schedule)}  # fmt: skip
        log.info("replaying %s: %d requests (%s), %s API", trace.name, len(schedule), schedule.label, api)
        metrics = replay_metrics(env)
        metrics.start_schedule((start + schedule.times_s[mine]).tolist())
        times, indices = schedule.times_s.tolist(), schedule.index.tolist()
        # Closed loop: a slot per request in flight (this worker's share); each send waits for one.
        self.slots = gevent.lock.BoundedSemaphore(max(1, opts.jb_concurrency // plan["count"])) if closed else None
        if closed and time.time() < start:
            gevent.sleep(start - time.time())
        send_until = start + opts.jb_send_s if closed and getattr(opts, "jb_send_s", 0.0) > 0 else None
        steady_s = getattr(opts, "jb_steady_s", 0.0) if closed else 0.0
        if steady_s > 0 and plan["count"] > 1:  # each worker would stop on its own cohort, leaving slots empty
            raise LoadgenError("--steady-s reads one closed loop's start cohort: run it with one worker, not "
                               f"{plan['count']}")  # fmt: skip
        # --steady-s: the start cohort (the first sends, a slot each) is watched until every one of them has ended
        self.cohort = {f"{i}" for i in mine[: opts.jb_concurrency]} if steady_s > 0 else None
        self.cohort_last_s, self.cohort_ended_s = -math.inf, None
        held = False
        for i in mine:
            t, idx = times[i], indices[i]
            req = trace.requests[idx]
            record = RequestRecord(
                request_id=f"{i}", trace_index=idx, scheduled_s=start + t, run_id=plan["run_id"],
                input_tokens=req.input_tokens, output_tokens=req.output_tokens, klass=req.klass,
            )  # fmt: skip
            if req.clipped_from is not None:
                record.original_input_tokens, record.original_output_tokens = req.clipped_from
            if calibrator is None:
                prompt: list[int] | str = token_prompt(idx, req.input_tokens, opts.jb_vocab, prompt_seed)
            elif api == "transformers":  # its prefix cache cannot be turned off: text distinct per request
                prompt = calibrator.distinct(req.input_tokens, (prompt_seed, idx))
            else:
                prompt = texts[req.input_tokens]
            body = request_body(config, prompt, req.output_tokens)
            if self.slots is not None:
                self.slots.acquire()
                record.scheduled_s = time.time()  # closed loop: due as soon as a slot freed
                if send_until is not None and record.scheduled_s >= send_until:
                    self.slots.release()  # --send-s is over: no more sends, those in flight finish
                    break
                if held:
                    self.slots.release()  # --steady-s of steady part held: no more sends, those in flight finish
                    break
                # the first send at or past it is the last: the steady part (to the last send) holds --steady-s
                held = self.cohort_ended_s is not None and record.scheduled_s >= self.cohort_ended_s + steady_s
            delay = record.scheduled_s - time.time()
            if delay > 0:
                gevent.sleep(delay)
            if getattr(env, "jb_error", None) is not None:
                raise env.jb_error  # the records file failed: sending more would lose their records
            self.in_flight[record.request_id] = record
            metrics.on_sent()
            self.sent += 1
            if self.outbox is not None:
                self.outbox.sends.append((record.scheduled_s, time.time()))
            self.pool.spawn(self._one, config, record, body)
        self.pool.join()
        if self.outbox is not None:
            self.outbox.drained = True

    def _one(self, config: ClientConfig, record: RequestRecord, body: dict[str, Any]) -> None:
        send(config, record, body)  # never raises: a failure is the record's status
        self.in_flight.pop(record.request_id, None)
        if self.cohort is not None and record.request_id in self.cohort:
            self.cohort.discard(record.request_id)
            # each ended as the steady part reads it (estimands.reference.steady_span): the latest of them counts
            self.cohort_last_s = max(end_of(record.to_json()), self.cohort_last_s)
            if not self.cohort:
                self.cohort_ended_s = self.cohort_last_s
        if self.slots is not None:
            self.slots.release()
        try:
            if self.writer is not None:
                self.writer.write(record)
        except LoadgenError as err:  # a full disk mid-run: stop rather than send requests whose records are lost
            if not getattr(self.environment, "jb_caller_reports", False):  # `joulebench replay` says it once
                log.error("request %s: its record could not be written: %s", record.request_id, err)
            if getattr(self.environment, "jb_error", None) is None:
                self.environment.jb_error = err
                self._tell_error(str(err))  # the run stopped at an error, even with its last request sent
            return
        replay_metrics(self.environment).on_finished(record)
        failed = record.status != "ok"
        if self.outbox is not None:
            n_in, n_out = (record.usage_input_tokens or 0, record.usage_output_tokens or 0) if not failed else (0, 0)
            self.outbox.end(record.last_token_s or time.time(), not failed, n_in, n_out, record.ttft_s, record.tpot_s)
        self.environment.events.request.fire(
            request_type="POST",
            name=config.path,
            response_time=1000 * (record.e2e_s or 0.0),
            response_length=record.usage_output_tokens or 0,
            exception=LoadgenError(f"{record.status}: {record.error}") if failed else None,
            context={"ttft_s": record.ttft_s, "schedule_lag_s": record.schedule_lag_s, "klass": record.klass},
        )
