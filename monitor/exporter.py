"""The monitor's HTTP face: Prometheus ``/metrics``, ``/v1/energy``, ``/v1/devices``, ``/healthz``.

``/metrics`` is served by a custom collector that reads the sampler's newest state at scrape time;
nothing sets gauges in a loop. ``/v1/energy`` calls the same window function the rest of joulebench
uses. The API is read-only; a bad or unbounded query gets a 400 that says what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.responses import Response

from joulebench import __version__
from monitor.errors import MonitorError
from monitor.sampler import DeviceState, Sampler, state_json
from monitor.sources import THROTTLE_REASONS
from monitor.window import slice_edges

#: The clock skew tolerated for a window end slightly in the future (client and monitor clocks).
FUTURE_TOLERANCE_S = 1.0
#: ``/v1/energy/series`` bounds: the finest slice, and the most slices one answer holds.
MIN_STEP_S = 0.01
MAX_SLICES = 100_000


def _opt(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _energy_and_power(
    kind: str,
    label: str,
    states: list[DeviceState],
    label_of: Callable[[DeviceState], str],
    power_of: Callable[[DeviceState], float | None],
    energy_help: str,
    power_help: str,
) -> Iterator[Metric]:
    energy = CounterMetricFamily(f"joulebench_{kind}_energy_joules", energy_help, labels=[label])
    power = GaugeMetricFamily(f"joulebench_{kind}_power_watts", power_help, labels=[label])
    for s in states:
        if s.latest is not None:
            energy.add_metric([label_of(s)], s.latest.energy_total_j)
        power.add_metric([label_of(s)], _opt(power_of(s)))
    yield energy
    yield power


def _attributed_metrics(states: list[DeviceState]) -> Iterator[Metric]:
    """The share of the host's energy attributed to named processes, labelled with its method and target."""
    labels = ["source", "method", "target"]
    energy = CounterMetricFamily(
        "joulebench_attributed_energy_joules",
        "Host CPU energy attributed to the named processes (their CPU time's share of the host's busy CPU time "
        "× host power above idle) since the monitor started; the host total is in the cpu/host metrics.",
        labels=labels,
    )
    power = GaugeMetricFamily(
        "joulebench_attributed_power_watts", "Attributed power from its counter over the last second.", labels=labels
    )
    share = GaugeMetricFamily(
        "joulebench_attributed_share_ratio",
        "The named processes' CPU time over the host's busy CPU time, over the last status interval.",
        labels=labels,
    )
    processes = GaugeMetricFamily(
        "joulebench_attributed_processes", "Processes followed now (in the tree, or the cgroup).", labels=labels
    )
    idle = GaugeMetricFamily(
        "joulebench_attributed_host_idle_watts",
        "Host idle power left out of the share (the model's, given, or the lowest 1 s power seen).",
        labels=labels,
    )
    for s in states:
        d, st = s.device, s.status
        values = [d.source, d.method, d.name]
        if s.latest is not None:
            energy.add_metric(values, s.latest.energy_total_j)
        power.add_metric(values, _opt(s.counter_power_w))
        for family, value in ((share, st.share_ratio), (processes, st.processes), (idle, st.host_idle_power_w)):
            if value is not None:
                family.add_metric(values, value)
    yield from (energy, power, share, processes, idle)


class MonitorCollector(Collector):
    """Prometheus metrics from the sampler's newest state, named per joulebench's conventions."""

    def __init__(self, sampler: Sampler) -> None:
        self._sampler = sampler

    def collect(self) -> Iterator[Metric]:
        states = self._sampler.states()
        stats = self._sampler.stats()
        gpus = [s for s in states if s.device.kind == "gpu"]
        cpus = [s for s in states if s.device.kind == "cpu"]
        hosts = [s for s in states if s.device.kind == "host"]
        attributed = [s for s in states if s.device.kind == "attributed"]

        if gpus:
            yield from self._gpu_metrics(gpus)
        if cpus:
            yield from _energy_and_power(
                "cpu", "zone", cpus, lambda s: s.device.key, lambda s: s.counter_power_w,
                "CPU energy from RAPL since the monitor started.",
                "CPU power from the RAPL counter over the last second.",
            )  # fmt: skip
        if hosts:
            yield from _energy_and_power(
                "host", "source", hosts, lambda s: s.device.source, lambda s: s.latest and s.latest.power_w,
                "Host CPU energy integrated from the utilization model (an estimate, not a measurement).",
                "Host CPU power from the utilization model (an estimate, not a measurement).",
            )  # fmt: skip
        if attributed:
            yield from _attributed_metrics(attributed)

        stale = GaugeMetricFamily(
            "joulebench_device_stale", "1 while the device's last read failed.", labels=["device", "source"]
        )
        errors = CounterMetricFamily(
            "joulebench_device_read_errors", "Failed reads of the device.", labels=["device", "source"]
        )
        segments = GaugeMetricFamily(
            "joulebench_device_counter_segments",
            "Counter segments seen (a counter reset or driver reload starts a new one).",
            labels=["device", "source"],
        )
        lag = GaugeMetricFamily(
            "joulebench_device_power_lag_seconds",
            "How late the instantaneous power runs against the energy counter (learnt; 0 until known).",
            labels=["device", "source"],
        )
        reads = CounterMetricFamily(
            "joulebench_device_counter_reads",
            "Energy counter reads (on NVML each costs milliseconds of CPU; see --counter-interval-ms).",
            labels=["device", "source"],
        )
        ratio = GaugeMetricFamily(
            "joulebench_energy_validation_ratio",
            "Counter energy divided by integrated instantaneous power over the last 10 s.",
            labels=["device", "source"],
        )
        for s in states:
            labels = [s.device.key, s.device.source]
            stale.add_metric(labels, 1.0 if s.stale else 0.0)
            errors.add_metric(labels, s.errors_total)
            segments.add_metric(labels, 0 if s.latest is None else s.latest.segments)
            lag.add_metric(labels, s.power_lag_s)
            reads.add_metric(labels, s.counter_reads)
            if s.validation_ratio is not None:
                ratio.add_metric(labels, s.validation_ratio)
        yield from (stale, errors, segments, lag, reads, ratio)

        yield CounterMetricFamily("joulebench_monitor_polls", "Sampler polls.", value=stats.polls_total)
        yield GaugeMetricFamily(
            "joulebench_monitor_poll_interval_seconds", "Configured poll interval.", value=stats.poll_interval_s
        )
        yield GaugeMetricFamily(
            "joulebench_monitor_poll_lag_seconds",
            "Largest lateness of a poll over the last status interval.",
            value=stats.poll_lag_s,
        )
        yield GaugeMetricFamily(
            "joulebench_monitor_stale_devices",
            "Devices whose last read failed.",
            value=sum(1 for s in states if s.stale),
        )
        yield CounterMetricFamily(
            "joulebench_monitor_sampler_cpu_seconds", "CPU time of the sampling thread.", value=stats.cpu_s
        )
        info = GaugeMetricFamily(
            "joulebench_monitor_info", "The monitor's version and power sources.", labels=["version", "sources"]
        )
        info.add_metric([__version__, ",".join(sorted({s.device.source for s in states}))], 1.0)
        yield info

    @staticmethod
    def _gpu_metrics(gpus: list[DeviceState]) -> Iterator[Metric]:
        energy = CounterMetricFamily(
            "joulebench_gpu_energy_joules",
            "GPU energy from NVML's counter since the monitor started.",
            labels=["gpu", "uuid", "name"],
        )
        power = GaugeMetricFamily(
            "joulebench_gpu_power_watts", "GPU power: NVML instantaneous and 1 s average.", labels=["gpu", "kind"]
        )
        gauges = {
            "sm_clock": GaugeMetricFamily("joulebench_gpu_sm_clock_hertz", "SM clock.", labels=["gpu"]),
            "mem_clock": GaugeMetricFamily("joulebench_gpu_memory_clock_hertz", "Memory clock.", labels=["gpu"]),
            "temp": GaugeMetricFamily("joulebench_gpu_temperature_celsius", "GPU temperature.", labels=["gpu"]),
            "util": GaugeMetricFamily(
                "joulebench_gpu_utilization_ratio", "Fraction of time a kernel ran.", labels=["gpu"]
            ),
            "mem_util": GaugeMetricFamily(
                "joulebench_gpu_memory_utilization_ratio",
                "Fraction of time memory was read or written.",
                labels=["gpu"],
            ),
            "mem_used": GaugeMetricFamily("joulebench_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"]),
            "limit": GaugeMetricFamily("joulebench_gpu_power_limit_watts", "Enforced power limit.", labels=["gpu"]),
        }
        throttle = GaugeMetricFamily(
            "joulebench_gpu_throttle_active",
            "1 while the clock-event (throttle) reason is active.",
            labels=["gpu", "reason"],
        )
        for s in gpus:
            gpu = str(s.device.index)
            st = s.status
            if s.latest is not None:
                energy.add_metric([gpu, s.device.uuid, s.device.name], s.latest.energy_total_j)
                power.add_metric([gpu, "instant"], s.latest.power_w)
            power.add_metric([gpu, "average"], _opt(st.power_average_w))
            for key, value in (
                ("sm_clock", st.sm_clock_hz),
                ("mem_clock", st.memory_clock_hz),
                ("temp", st.temperature_c),
                ("util", st.utilization_ratio),
                ("mem_util", st.memory_utilization_ratio),
                ("mem_used", st.memory_used_bytes),
                ("limit", st.power_limit_w),
            ):
                if value is not None:
                    gauges[key].add_metric([gpu], value)
            if st.throttle_reasons is not None:
                for reason in THROTTLE_REASONS:
                    throttle.add_metric([gpu, reason], 1.0 if reason in st.throttle_reasons else 0.0)
        yield energy
        yield power
        yield from gauges.values()
        yield throttle


class BadQuery(MonitorError):
    """A query the API refuses with 400."""


def _parse_time(name: str, raw: str | None, what: str = "Unix seconds") -> float:
    if raw is None:
        raise BadQuery(f"missing query parameter {name!r} ({what})")
    try:
        value = float(raw)
    except ValueError:
        raise BadQuery(f"{name}={raw!r} is not a number of {what}") from None
    if not math.isfinite(value):
        raise BadQuery(f"{name}={raw!r} must be finite")
    return value


def create_app(sampler: Sampler, registry: CollectorRegistry | None = None) -> FastAPI:
    """The monitor's ASGI app over a started sampler."""
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    registry.register(MonitorCollector(sampler))
    app = FastAPI(title="joulebench monitor", version=__version__, docs_url=None, redoc_url=None)

    @app.exception_handler(BadQuery)
    async def bad_query(_: Request, err: BadQuery) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    # Cheap handlers run on the event loop; /v1/energy does array work and runs in the thread pool.
    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        stats = sampler.stats()
        ok = sampler.running
        body = {
            "status": "ok" if ok else "sampler stopped",
            "polls_total": stats.polls_total,
            "sources": sorted({d.source for d in sampler.devices}),
            "stale_devices": [s.device.key for s in sampler.states() if s.stale],
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/v1/devices")
    async def devices() -> dict[str, Any]:
        return {"now_s": sampler.now(), "devices": [state_json(s) for s in sampler.states()]}

    def window(start: str | None, end: str | None, device: str | None) -> tuple[float, float, list[str]]:
        t0, t1 = _parse_time("start", start), _parse_time("end", end)
        now = sampler.now()
        if t1 <= t0:
            raise BadQuery(f"end ({t1}) must be after start ({t0})")
        if t1 > now + FUTURE_TOLERANCE_S:
            raise BadQuery(f"end ({t1:.3f}) is in the future (the monitor's clock reads {now:.3f})")
        if t1 - t0 > sampler.retention_s:
            raise BadQuery(f"the window ({t1 - t0:.0f} s) is longer than the retention ({sampler.retention_s:.0f} s)")
        keys = [d.key for d in sampler.devices]
        if device is not None:
            if device not in keys:
                raise BadQuery(f"no device {device!r}; devices: {', '.join(keys)}")
            keys = [device]
        return t0, t1, keys

    @app.get("/v1/energy/series")
    def energy_series(
        start: str | None = None, end: str | None = None, step: str | None = None, device: str | None = None
    ) -> dict[str, Any]:
        t0, t1, keys = window(start, end, device)
        dt = _parse_time("step", step, "seconds")
        if dt < MIN_STEP_S or (t1 - t0) / dt > MAX_SLICES:
            raise BadQuery(f"step={dt} s: use at least {MIN_STEP_S} s and at most {MAX_SLICES} slices per window")
        edges = slice_edges(t0, t1, dt)
        try:
            series = sampler.energy_series(edges, keys)
        except MonitorError as err:
            raise BadQuery(str(err)) from err
        by_key = {d.key: d for d in sampler.devices}
        return {
            "edges": edges.tolist(),
            "devices": [
                {"device": k, "source": by_key[k].source, "kind": by_key[k].kind, "method": by_key[k].method or None,
                 "energy_j": e.tolist(), "uncertainty_j": u.tolist()}
                for k, (e, u) in series.items()
            ],
        }  # fmt: skip

    @app.get("/v1/energy")
    def energy(start: str | None = None, end: str | None = None, device: str | None = None) -> dict[str, Any]:
        t0, t1, keys = window(start, end, device)
        states = {s.device.key: s for s in sampler.states()}
        try:
            windows = sampler.energy(t0, t1, keys)
        except MonitorError as err:
            raise BadQuery(str(err)) from err
        out = []
        for key in keys:
            w = windows[key]
            d = states[key].device
            out.append(
                {
                    "device": key,
                    "source": d.source,
                    "kind": d.kind,
                    "method": d.method or None,
                    "simulated": d.simulated or None,
                    "energy_j": w.energy_j,
                    "uncertainty_j": w.uncertainty_j,
                    "average_power_w": w.average_power_w,
                    "samples": w.power_samples,
                    "updates": w.updates,
                    "update_period_s": None if math.isnan(w.update_period_s) else w.update_period_s,
                    "short_window": w.short_window,
                    "covered_s": w.covered_s,
                    "extrapolated_s": w.extrapolated_s,
                    "gap_s": w.gap_s,
                    "segments": w.segments,
                    "stale": states[key].stale,
                }
            )
        return {"start": t0, "end": t1, "devices": out}

    return app
