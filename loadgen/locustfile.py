"""joulebench's Locust plugin: replay a trace at a controlled arrival rate, open loop.

Run it with ``joulebench locust`` (Locust's web UI: trace, process, rate, duration and target are
fields of its start form) or headless with ``joulebench replay``. One ``TraceReplayUser`` per process
is the dispatcher: it builds the schedule, sleeps until each request's time and spawns a greenlet to
send it, never waiting for a response before sending the next.

Distributed (``--master`` and ``--worker``s, one user per worker): at test start the master sends
every worker the plan, a common start time and the number of workers; each worker builds the same
seeded schedule and sends the requests whose position modulo the number of workers is its index, so
none is sent twice or lost, and writes its own records file (``requests.workerN.jsonl``).

Each request fires Locust's own ``request`` event (so its UI and CSV stay right) and its full
``RequestRecord`` is appended to the records file as it ends; requests still in flight when the user
stops are recorded as interrupted. A request whose handling raises is a ``client_error`` record
(``send`` never raises); only a records file that can no longer be written stops the replay. Every
record carries the run's id (one per test start, the master's on workers). Chat prompts are
calibrated, every length this process sends, before the schedule starts: in one process the start
waits for the calibration; a worker that finishes after the master's common start says so.

The web UI serves ``/metrics`` (``loadgen.metrics``): the schedule's target, requests sent, finished
and in flight, schedule lag and TTFT, summed over the workers on a master, for Prometheus and Grafana.
"""

from __future__ import annotations

import json
import logging
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
from loadgen.errors import LoadgenError
from loadgen.metrics import ReplayCollector, ReplayMetrics, merge
from loadgen.options import add_locust_options, build_schedule, check_options
from loadgen.records import RecordWriter, RequestRecord

log = logging.getLogger(__name__)

ENERGY_TAB = "joulebench-energy"
ENERGY_COLUMNS = [
    ("device", "Device"), ("source", "Source"), ("average_power_w", "Avg power (W)"), ("energy_j", "Energy (J)"),
    ("output_tokens", "Output tokens"), ("j_per_output_token", "J / output token"),
]  # fmt: skip
#: The monitor's window ends this far behind now, so it ends on counter updates, not extrapolation.
ENERGY_SETTLE_S = 1.5


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    # Locust's own add_argument (not a group's) takes include_in_web_ui: the fields of its start form.
    add_locust_options(parser.add_argument, include_in_web_ui=True)


def energy_rows(environment: Any) -> list[dict[str, Any]]:
    """Energy since the test started per device, and J per output token Locust has counted."""
    from monitor.errors import MonitorError
    from monitor.meter import MonitorClient

    url = environment.parsed_options.jb_monitor
    start = getattr(environment, "jb_test_start_s", None)
    end = time.time() - ENERGY_SETTLE_S
    if not url or start is None or end <= start:
        return []
    tokens = environment.runner.stats.total.total_content_length  # response_length is output tokens
    try:
        reading = MonitorClient(url, settle_s=0).energy(start, end)
    except MonitorError as err:  # the tab says what is wrong rather than breaking the UI
        return [{"device": f"monitor error: {err}", "source": "", "average_power_w": "", "energy_j": "",
                 "output_tokens": tokens, "j_per_output_token": ""}]  # fmt: skip
    rows = []
    for key, d in reading.devices.items():
        rows.append({"device": key, "source": d["source"], "average_power_w": round(d["energy_j"] / (end - start), 1),
                     "energy_j": round(d["energy_j"], 1), "output_tokens": tokens,
                     "j_per_output_token": round(d["energy_j"] / tokens, 4) if tokens else ""})  # fmt: skip
    rows.append({"device": f"total ({reading.kind})", "source": ",".join(reading.sources),
                 "average_power_w": round(reading.average_power_w, 1), "energy_j": round(reading.energy_j, 1),
                 "output_tokens": tokens,
                 "j_per_output_token": round(reading.energy_j / tokens, 4) if tokens else ""})  # fmt: skip
    return rows


def _extend_web_ui(environment: Any) -> None:
    """The Energy tab, through Locust's documented extension points."""
    web_ui = environment.web_ui
    web_ui.template_args["extended_tabs"] = [{"title": "Energy", "key": ENERGY_TAB}]
    web_ui.template_args["extended_tables"] = [
        {"key": ENERGY_TAB, "structure": [{"key": k, "title": t} for k, t in ENERGY_COLUMNS]}
    ]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReplayCollector(lambda: metrics_snapshot(environment)))

    @web_ui.app.route("/metrics")
    def metrics() -> Any:
        from flask import Response

        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @web_ui.app.after_request
    def add_energy(response: Any) -> Any:
        from flask import request

        if request.path != "/stats/requests" or response.status_code != 200:
            return response
        body = json.loads(response.get_data())
        body["extended_stats"] = [{"key": ENERGY_TAB, "data": energy_rows(environment)}]
        response.set_data(json.dumps(body))
        return response


def metrics_snapshot(environment: Any) -> dict[str, Any]:
    """This process's replay counts, plus (on Locust's master) the newest report of each worker."""
    own = replay_metrics(environment).snapshot()
    return merge([own, *getattr(environment, "jb_worker_metrics", {}).values()])


def replay_metrics(environment: Any) -> ReplayMetrics:
    """This process's counts (made on first use: ``joulebench replay`` builds its Environment without init)."""
    if getattr(environment, "jb_metrics", None) is None:
        environment.jb_metrics = ReplayMetrics()
    return environment.jb_metrics


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    if getattr(environment, "web_ui", None) is not None:
        _extend_web_ui(environment)
    if isinstance(environment.runner, MasterRunner):
        environment.jb_worker_metrics = {}

        @environment.events.worker_report.add_listener
        def on_worker_report(client_id: str, data: dict[str, Any]) -> None:
            if "jb_metrics" in data:
                environment.jb_worker_metrics[client_id] = data["jb_metrics"]

    if isinstance(environment.runner, WorkerRunner):

        @environment.events.report_to_master.add_listener
        def on_report(client_id: str, data: dict[str, Any]) -> None:
            data["jb_metrics"] = replay_metrics(environment).snapshot()

        def on_plan(msg: Any, **__: Any) -> None:
            plan = AsyncResult()
            plan.set(msg.data)
            environment.jb_plan = plan

        environment.runner.register_message("jb_plan", on_plan)


def new_run_id() -> str:
    """When the run started and a random suffix: sorts by time, unique across hosts."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    environment.jb_test_start_s = time.time()
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        plan = {"start_s": time.time() + 1.0, "count": runner.worker_count, "run_id": new_run_id()}
        runner.send_message("jb_plan", plan)
    elif not isinstance(runner, WorkerRunner):
        result = AsyncResult()
        result.set({"start_s": time.time() + 0.2, "count": 1, "run_id": new_run_id()})
        environment.jb_plan = result


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
    dispatcher = False

    def on_start(self) -> None:
        self.in_flight: dict[str, RequestRecord] = {}
        self.pool = gevent.pool.Pool()

    def on_stop(self) -> None:
        if not self.dispatcher:
            return
        self.pool.kill(block=True)  # requests still running end here; their records are written below
        if self.writer is not None:
            self.writer.close(in_flight=list(self.in_flight.values()))
            for record in self.in_flight.values():
                replay_metrics(self.environment).on_finished(record)
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
        except Exception as err:  # Locust would log it and run the task again: say so once, and stop
            log.exception("the replay stopped")
            env.jb_error = err
        raise StopUser()

    def _dispatch(self, env: Any) -> None:
        opts = env.parsed_options
        check_options(opts, locust=True)
        try:
            plan = env.jb_plan.get(timeout=60)
        except gevent.Timeout:
            raise LoadgenError("no plan from Locust's master within 60 s") from None
        distributed = isinstance(env.runner, WorkerRunner)
        index = getattr(env.runner, "worker_index", 0) if distributed else 0
        self.writer = RecordWriter(records_path(opts.jb_records, index, plan["count"])).open()
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
                              timeout_s=opts.jb_timeout, api=api)  # fmt: skip
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
        log.info("replaying %s: %d requests (%s), %s API", trace.name, len(schedule), schedule.label, api)
        metrics = replay_metrics(env)
        metrics.start_schedule((start + schedule.times_s[mine]).tolist())
        times, indices = schedule.times_s.tolist(), schedule.index.tolist()
        # Closed loop: a slot per request in flight (this worker's share); each send waits for one.
        closed = opts.jb_process == CLOSED_LOOP
        self.slots = gevent.lock.BoundedSemaphore(max(1, opts.jb_concurrency // plan["count"])) if closed else None
        if closed and time.time() < start:
            gevent.sleep(start - time.time())
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
            delay = record.scheduled_s - time.time()
            if delay > 0:
                gevent.sleep(delay)
            if getattr(env, "jb_error", None) is not None:
                raise env.jb_error  # the records file failed: sending more would lose their records
            self.in_flight[record.request_id] = record
            metrics.on_sent()
            self.pool.spawn(self._one, config, record, body)
        self.pool.join()

    def _one(self, config: ClientConfig, record: RequestRecord, body: dict[str, Any]) -> None:
        send(config, record, body)  # never raises: a failure is the record's status
        self.in_flight.pop(record.request_id, None)
        if self.slots is not None:
            self.slots.release()
        try:
            if self.writer is not None:
                self.writer.write(record)
        except Exception as err:  # a full disk mid-run: stop rather than send requests whose records are lost
            log.error("request %s: its record could not be written: %s", record.request_id, err)
            self.environment.jb_error = LoadgenError(f"cannot write the request records: {err}")
            return
        replay_metrics(self.environment).on_finished(record)
        failed = record.status != "ok"
        self.environment.events.request.fire(
            request_type="POST",
            name=config.path,
            response_time=1000 * (record.e2e_s or 0.0),
            response_length=record.usage_output_tokens or 0,
            exception=LoadgenError(f"{record.status}: {record.error}") if failed else None,
            context={"ttft_s": record.ttft_s, "schedule_lag_s": record.schedule_lag_s, "klass": record.klass},
        )
