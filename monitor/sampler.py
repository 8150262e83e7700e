"""The dense sampler: one thread polling every source's devices (10 ms by default).

Each poll reads the fast path (energy counter and instantaneous power) of every device into its
``DeviceSeries``; once a ``status_interval_s`` it reads the slow path (clocks, temperature, …),
refreshes the rolling figures the exporter shows and flushes the optional sample log. A failed read
marks that device stale; the sampler keeps polling the others and retries the stale one every
``retry_s`` until it answers. Timestamps are Unix seconds taken from a monotonic clock anchored once,
so a wall-clock step cannot bend the series.

The thread runs a ``_Poller`` that holds no reference to the ``Sampler``: a sampler dropped without
``stop()`` is collected and its finalizer stops the thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from monitor.errors import DeviceReadError, MonitorError, SampleLogError, WindowError
from monitor.series import DeviceSeries, Latest, SeriesView
from monitor.sources import Device, DeviceStatus, OpenedSource, PowerSource
from monitor.ticks import CounterReads
from monitor.window import WindowEnergy, counter_power_ratio, estimate_power_lag, window_energy, window_series

log = logging.getLogger(__name__)

VALIDATION_WINDOW_S = 10.0
LAG_WINDOW_S = 30.0
LAG_REFRESH_S = 10.0
VALIDATION_MIN_UPDATES = 10
RECENT_POWER_WINDOW_S = 1.0
_EVENT_WAIT_S = 0.05


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What the exporter shows for one device: the newest reading, status and health."""

    device: Device
    latest: Latest | None
    status: DeviceStatus
    stale: bool
    errors_total: int
    last_error: str
    counter_power_w: float | None  # mean power from the counter over the last second
    validation_ratio: float | None  # counter ÷ ∫ instant power over the last 10 s (independent counters)
    power_lag_s: float  # how late the instantaneous power runs against the counter (learnt)
    counter_reads: int  # counter reads so far (costly on NVML: see monitor.ticks)


@dataclass(frozen=True, slots=True)
class SamplerStats:
    polls_total: int
    poll_interval_s: float
    poll_lag_s: float  # the largest lateness of a poll in the last status interval
    cpu_s: float  # the sampler thread's own CPU time
    started_s: float


@dataclass(slots=True)
class _Track:
    source: PowerSource
    device: Device
    series: DeviceSeries
    reads: CounterReads
    status: DeviceStatus = field(default_factory=DeviceStatus)
    stale: bool = False
    errors_total: int = 0
    last_error: str = ""
    retry_at: float = 0.0
    counter_power_w: float | None = None
    validation_ratio: float | None = None
    power_lag_s: float = 0.0
    lag_checked_at: float = -math.inf


class _Poller:
    """Everything the sampling thread touches. Its counters are read under ``lock``."""

    def __init__(
        self,
        tracks: list[_Track],
        interval_s: float,
        status_interval_s: float,
        retry_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.tracks = tracks
        self.interval_s = interval_s
        self.status_interval_s = status_interval_s
        self.retry_s = retry_s
        self.clock = clock
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.epoch0 = time.time()
        self.mono0 = clock()
        self.polls = 0
        self.lag_s = 0.0
        self.cpu_s = 0.0
        self.failure: BaseException | None = None
        self._log_kept = 0

    def now(self) -> float:
        return self.epoch0 + (self.clock() - self.mono0)

    def run(self, log_file: TextIO | None) -> None:
        self._log_kept = log_file.tell() if log_file is not None else 0  # where its last whole line ends
        try:
            self._loop(log_file)
        except SampleLogError as err:  # its one line is the monitor's error (``failure``)
            self.failure = err
        except BaseException as err:
            self.failure = err
            log.exception("the sampler stopped on an unexpected error")
        finally:
            if log_file is not None:
                self._close_log(log_file)

    def _log_failed(self, log_file: TextIO, err: OSError) -> SampleLogError:
        return SampleLogError(
            f"cannot write the sample log {log_file.name}: {err.strerror or err}; the monitor stops rather than "
            "measure without it (the log keeps its lines up to the last whole one): free space, or give another "
            "--sample-log"
        )

    def _close_log(self, log_file: TextIO) -> None:
        if not isinstance(self.failure, SampleLogError):
            log_file.close()
            return
        with contextlib.suppress(OSError):  # the buffered lines cannot go out either: the file is closed anyway
            log_file.close()
        with contextlib.suppress(OSError):  # the lines that went out whole are kept, a torn last one is not
            with open(log_file.name, "rb") as f:
                f.seek(self._log_kept)
                tail = f.read()
            os.truncate(log_file.name, self._log_kept + tail.rfind(b"\n") + 1)

    def _loop(self, log_file: TextIO | None) -> None:
        clock = self.clock
        due = clock()
        next_status = due
        lag_max = 0.0
        while not self.stop.is_set():
            started = clock()
            lag_max = max(lag_max, started - due)
            for track in self.tracks:
                self._poll(track, log_file)
            self.polls += 1  # one writer; readers may see it one poll late
            if started >= next_status:
                self._refresh(log_file, lag_max)
                lag_max = 0.0
                next_status = started + self.status_interval_s
            due += self.interval_s
            wait = due - clock()
            if wait < -self.interval_s:  # more than a poll behind: drop the missed polls, do not burst
                due = clock()
            elif wait > _EVENT_WAIT_S:
                self.stop.wait(wait)
            elif wait > 0:
                time.sleep(wait)  # far cheaper than Event.wait on some VMs; stop() waits one poll at most

    def _poll(self, track: _Track, log_file: TextIO | None) -> None:
        m0 = self.clock()
        if track.stale and m0 < track.retry_at:
            return
        reads = track.reads
        read_counter = reads.due(self.epoch0 + (m0 - self.mono0))
        try:
            if read_counter:
                reading = track.source.read(track.device)
                energy_j, power_w = reading.energy_j, reading.power_w
            else:
                energy_j, power_w = math.nan, track.source.read_power(track.device)
        except DeviceReadError as err:
            self._mark_stale(track, err, m0)
            return
        t_s = self.epoch0 + (0.5 * (m0 + self.clock()) - self.mono0)
        gap_s = reads.observe(t_s, energy_j) if read_counter else None
        if gap_s is None:
            track.series.append_power(t_s, power_w)
        else:
            track.series.append(t_s, energy_j, power_w, gap_s)
        if log_file is not None:
            energy = f"{energy_j:.6f}" if read_counter else ""
            try:
                log_file.write(f"{t_s:.6f},{track.device.key},{energy},{power_w:.3f}\n")
            except OSError as err:  # the buffer went out to a full disk
                raise self._log_failed(log_file, err) from None
        if track.stale:
            with self.lock:
                track.stale = False
            log.warning("%s answers again", track.device.key)

    def _mark_stale(self, track: _Track, err: DeviceReadError, now: float) -> None:
        with self.lock:
            if not track.stale:
                log.warning("%s is stale: %s", track.device.key, err)
            track.stale = True
            track.errors_total += 1
            track.last_error = str(err)
            track.retry_at = now + self.retry_s

    def _refresh(self, log_file: TextIO | None, lag_s: float) -> None:
        now = self.now()
        for track in self.tracks:
            status = track.status
            if not track.stale:
                try:
                    status = track.source.status(track.device)
                except DeviceReadError as err:
                    self._mark_stale(track, err, self.clock())
            recent = _counter_power(track.series, now)
            ratio = None
            lag = track.power_lag_s
            if track.source.independent_counter:
                if now - track.lag_checked_at >= LAG_REFRESH_S:
                    track.lag_checked_at = now
                    learnt = estimate_power_lag(track.series.view(now - LAG_WINDOW_S, now))
                    lag = lag if learnt is None else learnt
                view = replace(track.series.view(now - VALIDATION_WINDOW_S, now), power_lag_s=lag)
                ratio = counter_power_ratio(view, now - VALIDATION_WINDOW_S, now, VALIDATION_MIN_UPDATES)
            with self.lock:
                track.status = status
                track.counter_power_w = recent
                track.validation_ratio = ratio
                track.power_lag_s = lag
        with self.lock:
            self.lag_s = max(lag_s, 0.0)
            self.cpu_s = time.thread_time()
        if log_file is not None:
            try:
                log_file.flush()
            except OSError as err:
                raise self._log_failed(log_file, err) from None
            self._log_kept = log_file.tell()


class Sampler:
    """Build, then ``start()`` (or use as a context manager), then ``stop()``.

    ``sources`` are already opened (see ``monitor.sources.open_sources``); the sampler closes them on
    ``stop``. A source whose counter is costly to read (NVML) has it read around every predicted
    update about ``counter_anchor_s`` apart (``monitor.ticks``); cheap counters are read every poll.
    """

    def __init__(
        self,
        sources: Sequence[OpenedSource],
        interval_s: float = 0.01,
        retention_s: float = 3600.0,
        status_interval_s: float = 1.0,
        retry_s: float = 1.0,
        sample_log: Path | None = None,
        counter_anchor_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (interval_s > 0 and retention_s > 0 and status_interval_s > 0):
            raise MonitorError("the poll interval, status interval and retention must be positive")
        capacity = math.ceil(retention_s / interval_s * 1.05) + 16
        tracks = [
            _Track(
                source=s,
                device=d,
                series=DeviceSeries(capacity),
                reads=CounterReads(counter_anchor_s if s.costly_counter else 0.0, interval_s),
            )
            for s, devs in sources
            for d in devs
        ]
        keys = [t.device.key for t in tracks]
        if len(set(keys)) != len(keys):
            raise MonitorError(f"two devices share a key: {keys}")
        self.interval_s = interval_s
        self.retention_s = retention_s
        self._sample_log = sample_log
        self._sources = [s for s, _ in sources]
        self._by_key = {t.device.key: t for t in tracks}
        self._poller = _Poller(tracks, interval_s, status_interval_s, retry_s, clock)
        self._thread: threading.Thread | None = None

    def start(self) -> Sampler:
        if self._thread is not None:
            raise MonitorError("the sampler is already started")
        log_file = None
        if self._sample_log is not None:
            try:
                log_file = _open_sample_log(self._sample_log)
            except OSError as err:
                raise MonitorError(f"cannot write the sample log {self._sample_log}: {err}") from err
        p = self._poller
        p.epoch0, p.mono0 = time.time(), p.clock()
        self._thread = threading.Thread(target=p.run, args=(log_file,), name="joulebench-sampler", daemon=True)
        self._thread.start()
        weakref.finalize(self, p.stop.set)
        return self

    def stop(self) -> None:
        self._poller.stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        for source in self._sources:
            source.close()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def failure(self) -> BaseException | None:
        """The exception that ended the sampling thread, if one did: the sample log's ``SampleLogError``, or a
        bug (reads never raise)."""
        return self._poller.failure

    def wait(self) -> BaseException | None:
        """Block until the sampling thread ends (``stop``, or a failure); its ``failure``."""
        if self._thread is not None:
            self._thread.join()
        return self.failure

    def now(self) -> float:
        """Unix seconds on the sampler's clock (the clock its series are stamped with)."""
        return self._poller.now()

    @property
    def devices(self) -> list[Device]:
        return [t.device for t in self._by_key.values()]

    def view(self, key: str, t0_s: float, t1_s: float) -> SeriesView:
        track = self._track(key)
        return replace(track.series.view(t0_s, t1_s), power_lag_s=track.power_lag_s)

    def energy(self, t0_s: float, t1_s: float, keys: Sequence[str] | None = None) -> dict[str, WindowEnergy]:
        """Window energy of each device (or of ``keys``) over [t0, t1] Unix seconds.

        A device with no reading in the window (stale across it, while another was read) is
        ``WindowEnergy.unread``: its ``covered_s`` says so and the sum's reader decides. When no device
        has one, the ``WindowError`` is raised.
        """
        out: dict[str, WindowEnergy] = {}
        errors: list[WindowError] = []
        for k in keys or self._by_key:
            try:
                out[k] = window_energy(self.view(k, t0_s, t1_s), t0_s, t1_s)
            except WindowError as err:
                if not (math.isfinite(t0_s) and math.isfinite(t1_s)) or t1_s <= t0_s:
                    raise
                errors.append(err)
                out[k] = WindowEnergy.unread(t0_s, t1_s)
        if errors and len(errors) == len(out):
            raise errors[0]
        return out

    def energy_series(
        self, edges: np.ndarray, keys: Sequence[str] | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each device's energy and uncertainty in every slice between consecutive ``edges``."""
        t0, t1 = float(edges[0]), float(edges[-1])
        return {k: window_series(self.view(k, t0, t1), edges) for k in (keys or self._by_key)}

    def states(self) -> list[DeviceState]:
        with self._poller.lock:
            return [
                DeviceState(
                    device=t.device,
                    latest=t.series.latest(),
                    status=t.status,
                    stale=t.stale,
                    errors_total=t.errors_total,
                    last_error=t.last_error,
                    counter_power_w=t.counter_power_w,
                    validation_ratio=t.validation_ratio,
                    power_lag_s=t.power_lag_s,
                    counter_reads=t.reads.reads,
                )
                for t in self._by_key.values()
            ]

    def stats(self) -> SamplerStats:
        p = self._poller
        with p.lock:
            return SamplerStats(
                polls_total=p.polls,
                poll_interval_s=self.interval_s,
                poll_lag_s=p.lag_s,
                cpu_s=p.cpu_s,
                started_s=p.epoch0,
            )

    def _track(self, key: str) -> _Track:
        try:
            return self._by_key[key]
        except KeyError:
            raise MonitorError(f"no device {key!r}; devices: {', '.join(self._by_key)}") from None


def _counter_power(series: DeviceSeries, now: float) -> float | None:
    """Mean power from the counter over about the last second (None before there is a step)."""
    view = series.view(now - RECENT_POWER_WINDOW_S, now)
    t, c, seg = view.update_t_s, view.update_energy_j, view.update_segment
    if len(t) < 2 or seg[-1] != seg[-2]:
        return None
    i = max(int((t < now - RECENT_POWER_WINDOW_S).sum()) - 1, 0)
    while seg[i] != seg[-1]:
        i += 1
    return float((c[-1] - c[i]) / (t[-1] - t[i])) if t[-1] > t[i] else None


def _open_sample_log(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    f = path.open("a", buffering=1 << 16)
    try:
        if f.tell() == 0:
            f.write("t_s,device,energy_j,power_w\n")
            f.flush()  # the header on the disk: the sampler keeps the file from here on, whole lines only
    except OSError:
        with contextlib.suppress(OSError):
            f.close()
        raise
    return f


def state_json(state: DeviceState) -> dict[str, Any]:
    """A device's state as JSON (``/v1/devices``, run records)."""
    d = state.device
    latest = state.latest
    return {
        "device": d.key,
        "kind": d.kind,
        "source": d.source,
        "index": d.index,
        "name": d.name,
        "uuid": d.uuid,
        "method": d.method or None,
        "simulated": d.simulated or None,
        "stale": state.stale,
        "errors_total": state.errors_total,
        "last_error": state.last_error or None,
        "energy_total_j": None if latest is None else latest.energy_total_j,
        "power_w": None if latest is None or math.isnan(latest.power_w) else latest.power_w,
        "counter_power_w": state.counter_power_w,
        "validation_ratio": state.validation_ratio,
        "power_lag_s": state.power_lag_s,
        "counter_reads": state.counter_reads,
        "status": {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in asdict(state.status).items()},
    }
