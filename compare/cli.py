"""``joulebench compare``, ``sweep`` and ``report`` (also ``python -m compare compare|sweep|report``)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from compare.experiment import DEFAULT_LOADS, default_rates, parse_rates
from estimands.windows import WARMUP_SHARE
from joulebench.commands import Command, command_main
from loadgen.arrivals import PROCESSES
from loadgen.errors import LoadgenError

COMPARE_DESCRIPTION = (
    "Online vs offline energy per token, end to end: start (or attach to) the energy monitor and vLLM, measure "
    "idle power until stable, replay one fixed workload (the same --requests requests of each of --segments trace "
    "segments) at a ladder of arrival rates, read each replay's steady-state window (tested for steady state, "
    "with a validity verdict), serve the same workload offline (the saturated reference at a full batch, and the "
    "same requests at once), attribute energy to requests, and write a run directory with summary.json, "
    "report.md and report.html. With no arguments: the tiny preset on vLLM's CPU build. "
    "Exit status: 0 complete; 1 finished, but windows without energy (the monitor restarted; listed in the "
    "report); 2 an error (vLLM died: the report covers what finished); 130/143 stopped by SIGINT/SIGTERM."
)


def _loads(text: str) -> list[float]:
    try:
        loads = parse_rates(text)
    except LoadgenError as err:
        raise argparse.ArgumentTypeError(str(err).replace("--rates", "--loads")) from None
    if loads[-1] >= 1:
        raise argparse.ArgumentTypeError(f"--loads {text!r}: shares of capacity below 1 (at 1 the queue never drains)")
    return loads


def _rates(text: str) -> list[float]:
    try:
        return parse_rates(text)
    except LoadgenError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_traffic_arguments(parser: argparse.ArgumentParser) -> None:
    """The rate ladder's options, shared by ``compare`` and ``sweep``."""
    g = parser.add_argument_group("traffic")
    g.add_argument(
        "--trace", default="azure-conv", help="azure-conv, azure-code, or a CSV/JSONL path (default: %(default)s)"
    )
    g.add_argument(
        "--trace-dir", default="", help="folder with the Azure trace files (else the cache, else downloaded)"
    )
    g.add_argument("--process", default="trace", help=f"arrival process: {', '.join(PROCESSES)} (default: %(default)s)")
    g.add_argument("--cv", type=float, default=1.0, help="gamma process: CV of the gaps (default: %(default)s)")
    g.add_argument(
        "--rates",
        type=_rates,
        metavar="LIST",
        help="multiples of the trace's own rate, e.g. 0.25,0.5,1,2,4 (sweep's default); the ladder stops above "
        "the first saturated rate",
    )
    g.add_argument(
        "--start", type=float, default=0.0, help="start this many seconds into the trace (default: %(default)s)"
    )
    g.add_argument(
        "--drain-s",
        type=float,
        default=120.0,
        help="after the schedule, wait this long for requests in flight (default: %(default)s)",
    )
    g.add_argument("--request-timeout-s", type=float, default=300.0, help="(default: %(default)s)")


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    from server.models import DEFAULT_CACHE
    from server.options import add_engine_arguments

    add_engine_arguments(parser)
    parser.add_argument("--model-cache", type=Path, default=DEFAULT_CACHE, help="where presets are written")
    parser.add_argument(
        "--max-num-seqs",
        type=int,
        help="max batch, online and offline: the saturated reference runs this full (default: 256; 16 on vLLM's "
        "CPU build)",
    )
    add_traffic_arguments(parser)
    parser.add_argument(
        "--loads",
        type=_loads,
        metavar="LIST",
        help="arrival rates as shares of the server's capacity for this workload (the saturated reference's "
        "completion rate, measured first), in (0, 1): compare's default axis, "
        f"{','.join(f'{x:g}' for x in DEFAULT_LOADS['gpu'])} ({','.join(f'{x:g}' for x in DEFAULT_LOADS['cpu'])} "
        "on vLLM's CPU build); --rates instead gives multiples of the trace's own rate",
    )
    g = parser.add_argument_group("workload and windows")
    g.add_argument(
        "--requests",
        type=int,
        metavar="N",
        help="requests per segment, the same at every load (default: 400; 200 on vLLM's CPU build)",
    )
    g.add_argument("--segments", type=int, metavar="K",
                   help="independent workloads spread over the trace, each measured at every load: K ≥ 2 gives "
                   "every figure an interval from their spread (default: 3; 1 on vLLM's CPU build)")  # fmt: skip
    g.add_argument(
        "--min-requests",
        type=int,
        metavar="M",
        help="completed requests a valid window needs (default: 100; 50 on vLLM's CPU build)",
    )
    g.add_argument(
        "--warmup-share",
        type=float,
        default=WARMUP_SHARE,
        metavar="F",
        help="the share of each segment's requests whose arrivals are the warm-up: the window opens at the next "
        "arrival and closes at the last, so every rate measures the same requests (default: %(default)s)",
    )
    g.add_argument(
        "--overlong",
        default="drop",
        choices=("drop", "clip", "error"),
        help="requests longer than the context (default: %(default)s)",
    )
    g.add_argument("--counterfactual", type=int, default=0, metavar="K",
                   help="check the attribution: replay the first segment at the highest rate measured with and "
                   "without every K-th request (ABBA) and compare their energy with what is attributed to them "
                   "(default: 0, not run)")  # fmt: skip
    g.add_argument("--online-reference", choices=("on", "off"), default="on",
                   help="also measure the saturated reference against the running server (a saturate replay of the "
                   "same requests, --max-num-seqs in flight): the premium's divisor where the offline reference's "
                   "steady part is too short to measure (a fast server) or there is none "
                   "(default: %(default)s)")  # fmt: skip
    g.add_argument("--reference-batches", type=int, default=3, metavar="B",
                   help="the offline reference serves B × --max-num-seqs requests of the workload's lengths, or, "
                   "where the online reference sent more, the first whole batches of its pool that hold them "
                   "(default: %(default)s)")  # fmt: skip
    g.add_argument("--reference-s", type=float, metavar="S",
                   help="seconds of steady state the saturated reference holds: the online one sends until this "
                   "long after its start cohort has ended (however long that takes, at most 600 s) (default: 20; "
                   "10 on vLLM's CPU build)")  # fmt: skip
    g.add_argument("--profile", choices=("on", "off"), default="on",
                   help="measure the server's profile after the references (closed loops of the workload's lengths "
                   "with 1, 2, 4 … requests in flight below --max-num-seqs) and report each load's energy as "
                   "predicted from it (predict) beside the measured (default: %(default)s)")  # fmt: skip
    g.add_argument("--profile-s", type=float, metavar="S",
                   help="seconds each of the profile's closed loops sends for (default: 12; 6 on vLLM's CPU "
                   "build)")  # fmt: skip
    g = parser.add_argument_group("energy and servers")
    g.add_argument("--monitor", help="URL of a running joulebench monitor (default: start one)")
    g.add_argument("--source", default="auto", help="power source of the monitor started here (default: %(default)s)")
    g.add_argument("--target", help="URL of a running OpenAI server to measure (default: start vLLM)")
    g.add_argument("--start-timeout-s", type=float, default=900.0, help="for vLLM to start (default: %(default)s)")
    g.add_argument(
        "--idle-max-s",
        type=float,
        default=60.0,
        help="idle power is measured in 2 s blocks until three agree, at most this long (default: %(default)s)",
    )
    g.add_argument("--slice-s", type=float, default=0.25, help="energy slices for attribution (default: %(default)s)")
    g.add_argument("--offline", choices=("auto", "on", "off"), default="auto",
                   help="the offline phase (vLLM's engine driven directly: the offline reference, the same requests "
                   "at once, the binning estimator's bins, the prices' calibration sets); auto: only where a "
                   "segment's online reference is not valid (default: %(default)s)")  # fmt: skip
    g.add_argument("--no-binning", action="store_true", help="skip measuring the binning estimator's bins")
    g.add_argument("--bin-batch", type=int, default=0,
                   help="requests per bin batch; 0: the largest batch the KV cache and --max-num-seqs hold, as "
                   "Fernandez et al. batch (default: %(default)s)")  # fmt: skip
    g.add_argument("--out", type=Path, help="the run directory (default: runs/compare-DATE-TIME)")


def _seconds(args: argparse.Namespace, names: tuple[str, ...], zero: tuple[str, ...] = ()) -> None:
    """Each option a finite number of seconds, positive (or not negative, for ``zero``), at most a day."""
    for name in names:
        value = getattr(args, name)
        low_ok = value >= 0 if name in zero else value > 0
        if not (math.isfinite(value) and low_ok and value <= 86400):
            what = "not negative" if name in zero else "positive"
            raise LoadgenError(f"--{name.replace('_', '-')} {value!r}: give seconds, {what}, at most 86400")


def validate_traffic(args: argparse.Namespace) -> None:
    """The options ``compare`` and ``sweep`` share, before anything starts."""
    if args.process not in PROCESSES:
        raise LoadgenError(f"unknown arrival process {args.process!r}: use one of {', '.join(PROCESSES)}")
    if not (math.isfinite(args.cv) and 0 < args.cv <= 100):
        raise LoadgenError(f"--cv {args.cv!r}: give a coefficient of variation in (0, 100]")
    if not (math.isfinite(args.start) and args.start >= 0):
        raise LoadgenError(f"--start {args.start!r}: give seconds into the trace, not negative")
    _seconds(args, ("drain_s", "request_timeout_s"))


def validate_compare(args: argparse.Namespace) -> None:
    from server.options import check_engine_arguments

    check_engine_arguments(args)
    validate_traffic(args)
    if args.rates is not None and args.loads is not None:
        raise LoadgenError("--rates and --loads: give one axis, not both")
    if args.rates is None and args.online_reference == "off":
        raise LoadgenError("--loads needs the online reference (its completion rate is the capacity): drop "
                           "--online-reference off, or give --rates")  # fmt: skip
    _seconds(args, ("slice_s", "idle_max_s", "start_timeout_s"), ())
    if args.reference_s is not None:
        _seconds(args, ("reference_s",), ())
    if args.profile_s is not None:
        _seconds(args, ("profile_s",), ())
    if not (math.isfinite(args.warmup_share) and 0 <= args.warmup_share < 1):
        raise LoadgenError(f"--warmup-share {args.warmup_share!r}: give a share of the requests in [0, 1)")
    if args.counterfactual and not 2 <= args.counterfactual <= 1000:
        raise LoadgenError(f"--counterfactual {args.counterfactual}: give 0 (not run) or K in 2–1000")
    for name, low in (("segments", 1), ("bin_batch", 0), ("max_num_seqs", 1), ("reference_batches", 2),
                      ("requests", 2), ("min_requests", 1)):  # fmt: skip
        value = getattr(args, name)
        if value is not None and not low <= value <= 1_000_000:
            why = ": the steady part starts after one batch" if name == "reference_batches" else ""
            raise LoadgenError(f"--{name.replace('_', '-')} {value}: give {low} to 1000000{why}")


def run_compare(args: argparse.Namespace) -> int:
    import time

    from compare.experiment import Comparison
    from compare.replays import Interrupted

    run_dir = args.out or Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S")
    if (run_dir / "config.json").exists():
        raise LoadgenError(f"{run_dir} already holds a run: choose another --out")
    comparison = Comparison(args, run_dir)
    try:
        comparison.run()
    except Interrupted as err:  # the conventional 128 + signal number, e.g. 130 after Ctrl-C
        print(f"joulebench compare: {err}", file=sys.stderr)
        return 128 + err.signum
    print(f"report: {run_dir / 'report.md'} and {run_dir / 'report.html'}")
    if comparison.problems:
        print(f"joulebench compare: incomplete, {len(comparison.problems)} problem(s):", file=sys.stderr)
        print("".join(f"  - {p}\n" for p in comparison.problems), end="", file=sys.stderr)
        return 1
    return 0


SWEEP_DESCRIPTION = (
    "Energy per token against GPU clocks and power limits (DVFS): for each setting of --sm-clocks × "
    "--power-limits and each rate, a replay against a running server; J/token, TTFT/TPOT p50/p99, the clocks "
    "achieved and throttle reasons; per rate the tokens-per-joule vs TPOT p99 frontier and the settings that "
    "meet the SLO. Changes GPU settings only with --allow-gpu-settings (root), and restores them on every exit; "
    "--dry-run reads the GPUs and prints the plan."
)


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("GPU settings")
    g.add_argument("--sm-clocks", default="", metavar="LIST",
                   help="locked SM clocks in MHz, 'max' (the highest supported) or 'auto' (unlocked), e.g. "
                   "900,1200,1500,max")  # fmt: skip
    g.add_argument("--power-limits", default="", metavar="LIST",
                   help="power limits in W or 'default', e.g. 300,450,700")  # fmt: skip
    g.add_argument("--allow-gpu-settings", action="store_true", help="let the sweep change them (needs root)")
    g.add_argument("--dry-run", action="store_true", help="read the GPUs and print the plan; change nothing")
    g.add_argument("--settle-s", type=float, default=5.0, help="after each change (default: %(default)s)")
    add_traffic_arguments(parser)
    g = parser.add_argument_group("windows")
    g.add_argument("--warmup-s", type=float, default=10.0, help="per rate, before the window (default: %(default)s)")
    g.add_argument("--window-s", type=float, default=30.0, help="the window per rate (default: %(default)s)")
    g = parser.add_argument_group("server, energy and SLO")
    g.add_argument("--target", default="http://127.0.0.1:8000", help="the running server (default: %(default)s)")
    g.add_argument("--monitor", help="URL of a running joulebench monitor (default: sample NVML in-process)")
    g.add_argument("--source", default="nvml", help="in-process power source (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="arrivals and prompts (default: %(default)s)")
    g.add_argument("--max-model-len", type=int, help="clip requests to this context (default: the server's)")
    g.add_argument("--slo-tpot-p99-ms", type=float, help="the SLO's TPOT p99 bound")
    g.add_argument("--slo-ttft-p99-ms", type=float, help="the SLO's TTFT p99 bound")
    g.add_argument("--out", type=Path, help="the run directory (default: runs/sweep-DATE-TIME)")


def validate_sweep(args: argparse.Namespace) -> None:
    if not args.sm_clocks.strip() and not args.power_limits.strip():
        raise LoadgenError("nothing to sweep: give --sm-clocks and/or --power-limits")
    validate_traffic(args)
    if args.rates is None:
        args.rates = default_rates()
    _seconds(args, ("window_s",))
    _seconds(args, ("warmup_s", "settle_s"), ("warmup_s", "settle_s"))
    if args.max_model_len is not None and not 2 <= args.max_model_len < 2**31:
        raise LoadgenError(f"--max-model-len {args.max_model_len}: give a context of at least 2 tokens")
    for name in ("slo_tpot_p99_ms", "slo_ttft_p99_ms"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise LoadgenError(f"--{name.replace('_', '-')} {value!r}: give milliseconds, positive")


def run_sweep(args: argparse.Namespace) -> int:
    import time

    from compare.sweep import Sweep

    run_dir = args.out or Path("runs") / time.strftime("sweep-%Y%m%d-%H%M%S")
    if not args.dry_run and (run_dir / "sweep.json").exists():
        raise LoadgenError(f"{run_dir} already holds a sweep: choose another --out")
    code = Sweep(args, run_dir).run()
    if not args.dry_run:
        print(f"sweep: {run_dir / 'sweep.json'} and {run_dir / 'sweep.md'}")
    return code


REPORT_DESCRIPTION = (
    "Analyse a compare run directory again and rewrite summary.json, report.md, report.html and plots. A run "
    "whose files no longer give a measurement its summary.json has (a window, a reference, the offline phase, "
    "idle power) is not rewritten: exit 2, the missing measurements named, the old report kept."
)


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a directory written by joulebench compare")
    parser.add_argument("--compress", action="store_true",
                        help="first gzip its raw data in place (records, polls, energy.csv: to keep or commit it); "
                        "the report reads the .gz files the same")  # fmt: skip


def validate_report(args: argparse.Namespace) -> None:
    if not (args.run_dir / "config.json").is_file():
        raise LoadgenError(f"{args.run_dir} has no config.json: not a joulebench compare run directory")


def run_report(args: argparse.Namespace) -> int:
    from compare.report import write_report
    from compare.rundir import compress_raw

    if args.compress:
        done = compress_raw(args.run_dir)
        print(f"compressed {len(done)} raw files")
    paths = write_report(args.run_dir, keep_what_it_had=True)
    print(f"wrote {paths['summary']}, {paths['md']} and {paths['html']}")
    return 0


COMMANDS = [
    Command("compare", "online vs offline energy per token: the whole comparison and its report",
            COMPARE_DESCRIPTION, add_compare_arguments, run_compare, validate_compare),
    Command("sweep", "J/token against GPU clocks and power limits (DVFS)", SWEEP_DESCRIPTION,
            add_sweep_arguments, run_sweep, validate_sweep),
    Command("report", "rewrite a compare run's summary and report from its files", REPORT_DESCRIPTION,
            add_report_arguments, run_report, validate_report),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m compare compare|sweep|report``: the same commands as ``joulebench …``."""
    return command_main("python -m compare", COMMANDS, argv)
