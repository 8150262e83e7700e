"""``joulebench monitor`` / ``python -m monitor``: sample, serve the exporter, print live readings."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import threading
from pathlib import Path

from joulebench.commands import Command, run_command
from joulebench.serving import AppServer
from monitor.errors import MonitorError
from monitor.processes import CgroupCpu, CpuTime, PidfileRoots, PidRoots, ProcessTree
from monitor.sampler import DeviceState, Sampler
from monitor.sources import EstimateSource, PowerSource, open_sources
from monitor.sources.attributed import attribute
from monitor.sources.estimate import IDLE_W_PER_CPU, MAX_W_PER_CPU

log = logging.getLogger(__name__)

DEFAULT_PORT = 9400


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        default="auto",
        help="power source: auto (NVML and RAPL where present, else the CPU estimate) or a comma list of "
        "nvml, rapl, estimate (default: %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--interval-ms", type=float, default=10.0, help="poll interval in milliseconds (default: %(default)s)"
    )
    parser.add_argument(
        "--counter-interval-ms",
        type=float,
        default=1000.0,
        help="NVML: read the energy counter around one of its updates this often; each read costs ~4 ms of "
        "CPU on an H100, the power shaping in between is read every poll (default: %(default)s)",
    )
    parser.add_argument(
        "--retention-s",
        type=float,
        default=3600.0,
        help="seconds of dense series kept in memory for /v1/energy (default: %(default)s)",
    )
    parser.add_argument(
        "--sample-log", type=Path, help="append every poll to this CSV file (t_s,device,energy_j,power_w)"
    )
    parser.add_argument(
        "--estimate-idle-w",
        type=float,
        default=IDLE_W_PER_CPU,
        help="estimate source: watts per logical CPU at idle (default: %(default)s)",
    )
    parser.add_argument(
        "--estimate-max-w",
        type=float,
        default=MAX_W_PER_CPU,
        help="estimate source: watts per logical CPU at full load (default: %(default)s)",
    )
    who = parser.add_argument_group(
        "attribution",
        "name the server's processes to report, beside the host total, the share of the host CPU's energy "
        "their CPU time earns (device 'attributed'; see the README's attribution model)",
    )
    target = who.add_mutually_exclusive_group()
    target.add_argument("--attribute-pid", type=int, metavar="PID", help="a process and its children")
    target.add_argument(
        "--attribute-pidfile",
        type=Path,
        metavar="PATH",
        help="the processes whose PIDs this file holds (one per line) and their children, re-read as it changes; "
        "a file that does not exist yet names none",
    )
    target.add_argument(
        "--attribute-cgroup",
        type=Path,
        metavar="PATH",
        help="a cgroup's processes (its directory, absolute or under /sys/fs/cgroup; v2 cpu.stat or v1 cpuacct)",
    )
    who.add_argument(
        "--attribute-idle-w",
        type=float,
        metavar="W",
        help="host idle power left out of the share (default: the estimate's model idle; on RAPL the lowest 1 s "
        "power seen since the monitor started)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not print live readings")


def validate(args: argparse.Namespace) -> None:
    """Every option, before any source is opened or port bound."""
    if not args.host.strip():
        raise MonitorError("--host: give an address to listen on, e.g. 127.0.0.1")
    if not 0 <= args.port <= 65535:
        raise MonitorError(f"--port {args.port}: give 1–65535, or 0 for a free one")
    if not 0.5 <= args.interval_ms <= 10_000:
        raise MonitorError(f"--interval-ms {args.interval_ms} is out of range: use 0.5 to 10000")
    if not 1 <= args.retention_s <= 7 * 86400:
        raise MonitorError(f"--retention-s {args.retention_s} is out of range: use 1 to 604800 (a week)")
    if not 0 <= args.counter_interval_ms <= 60_000:
        raise MonitorError(f"--counter-interval-ms {args.counter_interval_ms} is out of range: use 0 to 60000")
    if not (0 <= args.estimate_idle_w <= args.estimate_max_w <= 10_000):  # NaN fails every comparison
        raise MonitorError(
            f"--estimate-idle-w {args.estimate_idle_w}, --estimate-max-w {args.estimate_max_w}: give "
            "0 ≤ idle ≤ max ≤ 10000 watts per CPU"
        )


def run(args: argparse.Namespace) -> int:
    from monitor.exporter import create_app

    def estimate() -> PowerSource:
        return EstimateSource(idle_w_per_cpu=args.estimate_idle_w, max_w_per_cpu=args.estimate_max_w)

    cpu = attribution_target(args)
    opened, why = open_sources(args.source, factories={"estimate": estimate})
    if cpu is not None:
        opened, how = attribute(opened, cpu, args.attribute_idle_w)
        why += f"; {how}"
    sampler = Sampler(
        opened,
        interval_s=args.interval_ms / 1000.0,
        retention_s=args.retention_s,
        sample_log=args.sample_log,
        counter_anchor_s=args.counter_interval_ms / 1000.0,
    )
    try:
        with AppServer(create_app(sampler), args.host, args.port) as http:
            sampler.start()
            print(f"joulebench monitor: {why}", flush=True)
            print(f"listening on {http.url}  (/metrics, /v1/energy?start=&end=, /v1/devices, /healthz)", flush=True)
            if not args.quiet:
                threading.Thread(target=_print_live, args=(sampler, http), daemon=True).start()
            threading.Thread(target=_exit_with_sampler, args=(sampler, http), daemon=True).start()
            http.run()
    finally:
        sampler.stop()
    if isinstance(sampler.failure, MonitorError):
        raise sampler.failure
    if sampler.failure is not None:
        raise MonitorError(f"the sampler stopped on an unexpected error ({sampler.failure!r}): its traceback is above")
    return 0


def _exit_with_sampler(sampler: Sampler, http: AppServer) -> None:
    """A sampler that stopped on its own (the sample log's disk filled) ends the monitor: serving numbers it no
    longer measures, or measuring without the log it was asked to keep, would mislead."""
    if sampler.wait() is not None:
        http.exit()


def attribution_target(args: argparse.Namespace) -> CpuTime | None:
    """The processes named by ``--attribute-*``, or None. The monitor never counts itself among them."""
    idle = args.attribute_idle_w
    if idle is not None and not (math.isfinite(idle) and idle >= 0):
        raise MonitorError(f"--attribute-idle-w {idle}: give the host's idle power in watts (0 or more)")
    if args.attribute_pid is not None:
        if args.attribute_pid <= 0:
            raise MonitorError(f"--attribute-pid {args.attribute_pid}: a PID is a positive number")
        return ProcessTree(PidRoots(args.attribute_pid), exclude=os.getpid())
    if args.attribute_pidfile is not None:
        return ProcessTree(PidfileRoots(args.attribute_pidfile), exclude=os.getpid())
    if args.attribute_cgroup is not None:
        return CgroupCpu(args.attribute_cgroup)
    if idle is not None:
        raise MonitorError("--attribute-idle-w needs --attribute-pid, --attribute-pidfile or --attribute-cgroup")
    return None


def _fmt(value: float | None, unit: str, scale: float = 1.0, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value * scale:.{digits}f} {unit}"


def _row(s: DeviceState) -> list[str]:
    latest = s.latest
    power = latest.power_w if latest is not None and not math.isnan(latest.power_w) else s.counter_power_w
    return [
        s.device.key,
        s.device.source,
        _fmt(power, "W"),
        _fmt(None if latest is None else latest.energy_total_j, "J"),
        _fmt(s.status.sm_clock_hz, "MHz", 1e-6, 0),
        _fmt(s.status.temperature_c, "°C", 1.0, 0),
        _fmt(s.status.utilization_ratio if s.status.share_ratio is None else s.status.share_ratio, "%", 100.0, 0),
        "STALE" if s.stale else "ok",
    ]


_HEADERS = ["device", "source", "power", "energy", "SM clock", "temp", "util|share", "state"]


def _print_live(sampler: Sampler, http: AppServer) -> None:
    """Live readings once a second: a table on a terminal, a line per device every 10 s otherwise."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    def table() -> Table:
        t = Table(title=f"joulebench monitor — {sampler.stats().polls_total} polls")
        for h in _HEADERS:
            t.add_column(h, justify="left" if h in ("device", "source", "state") else "right")
        for s in sampler.states():
            t.add_row(*_row(s))
        return t

    stop = threading.Event()
    console = Console()
    if console.is_terminal:
        with Live(table(), console=console, refresh_per_second=1, transient=False) as live:
            while not http.should_exit and not stop.wait(1.0):
                live.update(table())
    else:
        while not http.should_exit and not stop.wait(10.0):
            for s in sampler.states():
                print("  ".join(f"{h}={v}" for h, v in zip(_HEADERS, _row(s), strict=True)), flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m monitor``: the same command as ``joulebench monitor``."""
    parser = argparse.ArgumentParser(prog="python -m monitor", description=DESCRIPTION)
    add_arguments(parser)
    return run_command(parser, run, argv, validate)


DESCRIPTION = (
    "Sample GPU (NVML), CPU (RAPL) or estimated host power every 10 ms and serve Prometheus metrics "
    "and window energy over HTTP."
)
COMMANDS = [
    Command("monitor", "sample power and serve /metrics and /v1/energy", DESCRIPTION, add_arguments, run, validate)
]

if __name__ == "__main__":
    sys.exit(main())
