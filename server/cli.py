"""``joulebench serve`` and ``joulebench offline`` (also ``python -m server serve|offline``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from joulebench import __version__
from joulebench.commands import Command, command_main
from joulebench.errors import JoulebenchError
from joulebench.processes import tail, write_pidfile
from server.binning import largest_batch
from server.errors import ServerError
from server.hf import STATIC_BATCHES, TransformersOptions, transformers_install
from server.launch import TransformersServer, VllmServer, apply_vllm_env, vllm_install
from server.models import DEFAULT_CACHE, PRESETS, TRAINED_VOCAB, ModelSpec, resolve_model, write_model
from server.offline import Request
from server.options import add_engine_arguments, check_engine_arguments, cpu_defaults, engine_options

SERVE_DESCRIPTION = (
    "Start vLLM's OpenAI-compatible server (GPU or CPU build), or transformers serve (--engine transformers), on a "
    "preset or model, until Ctrl-C."
)
OFFLINE_DESCRIPTION = (
    "Serve a request set offline with vllm.LLM.generate (or HF transformers' generate(), --engine transformers) at "
    "one or more batch sizes and report J/token (attributional and dynamic); --engines vllm,transformers runs "
    "each in its own process and gives the reduction per batch size."
)
ENGINES = ("vllm", "transformers")


def _common(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser)
    parser.add_argument("--model-cache", type=Path, default=DEFAULT_CACHE, help="where presets are written")
    parser.add_argument("--engine", choices=ENGINES, default="vllm", help="(default: %(default)s)")
    parser.add_argument(
        "--compile", action="store_true", help="transformers: torch.compile through a static cache (default: eager)"
    )
    parser.add_argument("--device", default="auto", help="transformers: cuda, cpu, … (default: %(default)s)")


def transformers_options(args: argparse.Namespace) -> TransformersOptions:
    return TransformersOptions(compile=args.compile, dtype=args.dtype, device=args.device, seed=args.seed)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-num-seqs", type=int, help="max batch size (default: vLLM's)")
    parser.add_argument("--log-dir", type=Path, default=Path("runs"), help="the server's log and server.json go here")
    parser.add_argument("--start-timeout-s", type=float, default=900.0)
    parser.add_argument(
        "--pidfile",
        type=Path,
        help="write vLLM's PID here while it runs, for `joulebench monitor --attribute-pidfile` (emptied at exit)",
    )


def validate_serve(args: argparse.Namespace) -> None:
    check_engine_arguments(args)
    if not args.host.strip():
        raise ServerError("--host: give an address to listen on, e.g. 127.0.0.1")
    if not 1 <= args.port <= 65535:
        raise ServerError(f"--port {args.port}: give 1–65535")
    if args.max_num_seqs is not None and not 1 <= args.max_num_seqs < 2**31:
        raise ServerError(f"--max-num-seqs {args.max_num_seqs}: give a batch of at least 1")
    if not 0 < args.start_timeout_s <= 86400:
        raise ServerError(f"--start-timeout-s {args.start_timeout_s}: give seconds in (0, 86400]")


def starting_lines(console: Any, server: Any, what: str, every_s: float = 10.0) -> Callable[[float], None]:
    """``wait_ready``'s tick: where no terminal shows the spinner (a container's log, `docker compose logs`),
    a line at the start and one every ``every_s`` with the end of the server's own log, so a start of a
    minute or more is not a silent one."""
    if console.is_terminal:
        return lambda elapsed: None
    console.print(f"starting {what} — its log: {server.log_path}", soft_wrap=True, markup=False, highlight=False)
    shown = [0.0]

    def tick(elapsed: float) -> None:
        if elapsed - shown[0] >= every_s:
            shown[0] = elapsed
            last = tail(server.log_path, 1)[:200]
            console.print(f"{server.name} not ready after {elapsed:.0f} s; its log ends: {last}", soft_wrap=True,
                          markup=False, highlight=False)  # fmt: skip

    return tick


def run_serve(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True)
    spec = resolve_model(args.model, args.model_cache)
    run_dir = args.log_dir / time.strftime("serve-%Y%m%d-%H%M%S")
    server: VllmServer | TransformersServer
    if args.engine == "transformers":
        log_path = run_dir / "transformers.log"
        server = TransformersServer(spec, transformers_options(args), log_path, args.host, args.port)
        what = f"transformers serve {transformers_install().transformers}"
    else:
        install = vllm_install()
        cpu_defaults(args, spec.max_position_embeddings, install.cpu)
        options = engine_options(args, args.max_num_seqs)
        server = VllmServer(spec, options, run_dir / "vllm.log", args.host, args.port)
        what = f"vLLM {install.version} ({install.distribution})"
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.pidfile is not None:
            write_pidfile(args.pidfile, None)  # refused before vLLM starts if it cannot be written
        server.start()
        if args.pidfile is not None:
            write_pidfile(args.pidfile, server.pid)
        with console.status(f"starting {what} — log: {server.log_path}"):
            took = server.wait_ready(args.start_timeout_s, starting_lines(console, server, what))
        (run_dir / "server.json").write_text(json.dumps(server.record(), indent=2) + "\n")
        print(f"{server.name} ready in {took:.0f} s at {server.url} (model {spec.name}, weights {spec.weights})",
              flush=True)  # fmt: skip
        while not stop.wait(0.5):
            if (code := server.poll()) is not None:
                raise ServerError(f"{server.name} exited with code {code}; see {server.log_path}")
    finally:
        server.stop()
        if args.pidfile is not None and server.pid is not None:
            with contextlib.suppress(JoulebenchError):  # not to hide why it stopped
                write_pidfile(args.pidfile, None)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def add_offline_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--batch-sizes", default="8,64,256", help="comma list (default: %(default)s)")
    parser.add_argument("--input-tokens", type=int, default=512, help="per request (default: %(default)s)")
    parser.add_argument("--output-tokens", type=int, default=400, help="per request, forced (default: %(default)s)")
    parser.add_argument(
        "--num-requests", type=int, help="requests per batch size (default: max(2 batches, 64 requests))"
    )
    parser.add_argument(
        "--bins",
        help="binning estimator: measure one full batch per INPUTxOUTPUT bin instead of --batch-sizes, "
        "e.g. 1024x256,2048x512 (bins of server/binning.py)",
    )
    parser.add_argument("--bin-batch", type=int, default=0,
                        help="requests per bin batch; 0: the largest batch the KV cache and the max batch hold, as "
                        "Fernandez et al. batch (default: %(default)s)")  # fmt: skip
    parser.add_argument(
        "--requests",
        type=Path,
        help='serve the request sets of this JSON file instead: {"max_num_seqs" (optional), "sets": [{"label", '
        '"batch_size" (requests per generate call), "requests": [[input, output], …], "bin" (optional), '
        '"saturated" (optional: served closed-loop at batch_size running, the steady part measured)}]} '
        "(joulebench compare writes one)",
    )
    parser.add_argument("--monitor", help="URL of a running monitor (default: sample in-process)")
    parser.add_argument("--source", default="auto", help="in-process power source (default: %(default)s)")
    parser.add_argument(
        "--idle-max-s",
        type=float,
        default=60.0,
        help="loaded-idle power is measured in 2 s blocks until three agree, at most this long (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--engines",
        help="run each of these engines (e.g. vllm,transformers) in its own process, print every table and the "
        "reduction of the first against the others per set",
    )


def run_offline(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from monitor.meter import EnergyMeter, LocalMeter, MonitorClient, stable_power

    if args.engines:
        return run_engines(args)
    console = Console(stderr=True)
    plan, max_num_seqs = offline_plan(args)
    spec = resolve_model(args.model, args.model_cache)
    meter: EnergyMeter = MonitorClient(args.monitor) if args.monitor else LocalMeter(args.source)
    vocab = min(spec.vocab_size or TRAINED_VOCAB, TRAINED_VOCAB)
    runner, engine = offline_runner(args, spec, meter, vocab, max_num_seqs or max(b for _, _, b, _, _ in plan))
    results: list[dict[str, Any]] = []
    try:
        with console.status(f"loading {spec.name} in {engine['label']}"):
            runner.load()
        with console.status("warming the engine up (one batch, unmeasured)"):
            _, _, b0, first, _ = plan[0]
            runner.warm_up(first[:b0])
        with console.status("measuring loaded-idle power until it is stable"):
            idle = stable_power(meter, max_s=args.idle_max_s)
        kv = runner.kv_capacity() if hasattr(runner, "kv_capacity") else None
        most = max_num_seqs or max(b for _, _, b, _, _ in plan)
        for label, bin_, b, requests, saturated in plan:
            if bin_ and b == 0:  # a bin at the largest batch that fits, as Fernandez et al. batch
                b = largest_batch(sum(bin_), most, *(kv or (None, None)))
                requests = [Request(*bin_)] * b
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task(f"{label}: {len(requests)} requests", total=len(requests))
                tick = lambda done, _, t=task: progress.update(t, completed=done)  # noqa: E731
                if saturated:
                    results.append({"label": label, "bin": bin_, "saturated": True,
                                    **runner.run_saturated(requests, b, idle.power_w, tick)})  # fmt: skip
                else:
                    result = runner.run(requests, b, idle.power_w, tick)
                    results.append({"label": label, "bin": bin_, **result.summary()})
                if bin_:
                    results[-1]["kv_cache"] = None if kv is None else {"blocks": kv[0], "block_size": kv[1]}
    finally:
        runner.close()
        meter.close()

    record = {
        "joulebench": __version__,
        "command": sys.argv,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        **engine["record"],
        "model": spec.model, "preset": spec.preset, "weights": spec.weights,
        "energy": {"kind": idle.kind, "sources": idle.sources, "estimated": "estimate" in idle.sources},
        "devices": meter.devices(),
        "idle_power_w": idle.power_w,
        "idle": asdict(idle),
        "results": results,
    }  # fmt: skip
    print_offline(record)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def offline_runner(
    args: argparse.Namespace, spec: ModelSpec, meter: Any, vocab: int, max_num_seqs: int
) -> tuple[Any, dict[str, Any]]:
    """The runner for ``--engine`` (same ``load``/``warm_up``/``run``/``close``, same records) and what the
    record says about it: ``{"label": …, "record": {…}}``."""
    from server.hf import TransformersRunner
    from server.offline import OfflineRunner

    if args.engine == "transformers":
        hf = TransformersRunner(spec, transformers_options(args), meter, vocab=vocab, seed=args.seed)
        about = hf.about()
        label = f"transformers {about['transformers']} (torch {about['torch']})"
        record = {"engine_name": "transformers", "transformers": about, "engine": about["options"],
                  "offline_batches": STATIC_BATCHES}  # fmt: skip
        return hf, {"label": label, "record": record}
    install = vllm_install()
    cpu_defaults(args, spec.max_position_embeddings, install.cpu)
    options = engine_options(args, max_num_seqs)
    apply_vllm_env(install, os.environ)  # vLLM runs in this process
    runner = OfflineRunner(options.llm_kwargs(spec), meter, vocab=vocab)
    record = {"engine_name": "vllm", "vllm": {"distribution": install.distribution, "version": install.version},
              "engine": options.record(),
              "offline_batches": "vLLM's engine driven step by step: static batches of the batch size (all at "
              "once when it holds them: continuous batching up to max_num_seqs), or closed loop (saturated "
              "sets)"}  # fmt: skip
    return runner, {"label": f"vLLM {install.version} ({install.distribution})", "record": record}


def engine_label(record: dict[str, Any]) -> str:
    """``vLLM 0.24.0 compiled`` / ``transformers 5.17.0 eager``: which engine, version and mode made a record."""
    if record.get("engine_name") == "transformers":
        mode = "compiled" if record["engine"].get("compile") else "eager"
        return f"transformers {record['transformers']['transformers']} {mode}"
    mode = "eager" if record["engine"].get("enforce_eager") else "compiled"
    return f"vLLM {record['vllm']['version']} {mode}"


def print_offline(record: dict[str, Any]) -> None:
    """An offline record's table on stdout."""
    from rich.console import Console
    from rich.table import Table

    sources = record["energy"]["sources"]
    estimated = " (ESTIMATED)" if "estimate" in sources else ""
    name = record["preset"] or record["model"]
    table = Table(title=f"offline — {name} ({record['weights']} weights), {engine_label(record)}, energy: "
                  f"{record['energy']['kind']} from {', '.join(sources)}{estimated}")  # fmt: skip
    for col in ("set", "requests", "in/out tokens", "time", "avg power", "J/out-token", "dynamic", "± J/out-token",
                "out tok/s"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in record["results"]:
        table.add_row(
            r["label"],
            str(r["requests"]), f"{r['input_tokens']}/{r['output_tokens']}",
            f"{r['duration_s']:.1f} s", f"{r['average_power_w']:.1f} W", f"{r['j_per_output_token']:.4f}",
            f"{r['dynamic_j_per_output_token']:.4f}", f"{r['uncertainty_j_per_output_token']:.5f}",
            f"{r['output_tokens_per_s']:.0f}",
        )  # fmt: skip
        if (st := r.get("steady")) is not None:
            table.add_row(
                f"  steady part ({st['running_min']}–{st['running_max']} running)", "",
                f"{st['input_tokens']}/{st['output_tokens']}", f"{st['duration_s']:.1f} s",
                f"{st['average_power_w']:.1f} W", f"{st['j_per_output_token']:.4f}",
                f"{st['dynamic_j_per_output_token']:.4f}", f"{st['uncertainty_j_per_output_token']:.5f}",
                f"{st['output_tokens_per_s']:.0f}",
            )  # fmt: skip
    Console().print(table)
    settled = "" if record["idle"]["stable"] else " (did not settle)"
    print(f"loaded-idle power: {record['idle_power_w']:.1f} W{settled}")


def run_engines(args: argparse.Namespace) -> int:
    """``--engines vllm,transformers``: each engine's offline run in its own process (each frees its device memory
    when it exits), both tables, and per set the reduction of J/output-token of the first engine against each
    other: 1 − first ÷ other."""
    from rich.console import Console
    from rich.table import Table

    from joulebench.processes import Child

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if len(engines) < 2 or any(e not in ENGINES for e in engines) or len(set(engines)) != len(engines):
        raise ServerError(f"--engines {args.engines!r}: give each of {', '.join(ENGINES)} once, e.g. vllm,transformers")
    offline_plan(args)  # a bad plan fails here, once, not in every child
    out_dir = (args.out.parent if args.out else Path("runs")) / time.strftime("offline-%Y%m%d-%H%M%S")
    records = []
    for engine in engines:
        out = out_dir / f"{engine}.json"
        cmd = [sys.executable, "-m", "server", "offline", *offline_arguments(args), "--engine", engine,
               "--out", str(out)]  # fmt: skip
        child = Child(f"the {engine} offline run", cmd, out_dir / f"{engine}.log").start()
        with Console(stderr=True).status(f"{engine}: offline run (log: {child.log_path})"):
            code = child.wait()
        if code != 0 or not out.exists():
            raise child.failed(f"exited with code {code}")
        records.append(json.loads(out.read_text()))
        print_offline(records[-1])
    table = Table(title=f"J/output-token, {engine_label(records[0])} against the others")
    table.add_column("set", justify="right")
    for r in records:
        table.add_column(engine_label(r), justify="right")
    for r in records[1:]:
        table.add_column(f"reduction vs {engine_label(r)}", justify="right")
    reductions = []
    for i, first in enumerate(records[0]["results"]):
        per = [r["results"][i]["j_per_output_token"] for r in records]
        cut = [1 - per[0] / p for p in per[1:]]
        reductions.append({"label": first["label"], "j_per_output_token": dict(zip(engines, per, strict=True)),
                           "reduction": dict(zip(engines[1:], cut, strict=True))})  # fmt: skip
        table.add_row(first["label"], *(f"{p:.4f}" for p in per), *(f"{100 * c:.1f} %" for c in cut))
    Console().print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        body = {"engines": engines, "records": [str(out_dir / f"{e}.json") for e in engines], "reduction": reductions}
        args.out.write_text(json.dumps(body, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


#: One offline measurement: label, bin (or None), batch size, requests, whether served closed-loop.
PlanItem = tuple[str, list[int] | None, int, list[Request], bool]
#: The most requests one offline run may hold (each is a Python object until vLLM takes it).
MAX_OFFLINE_REQUESTS = 1_000_000


def offline_plan(args: argparse.Namespace) -> tuple[list[PlanItem], int | None]:
    """Each measurement: (label, bin or None, batch size, requests, saturated), and the engine's max batch
    if the request file says; a bin is one full batch at its lengths; a saturated set is served closed-loop
    at the batch size and measured in its steady part."""
    plan: list[PlanItem] = []
    max_num_seqs = None
    if args.requests:
        plan, max_num_seqs = read_request_sets(args.requests)
    elif args.bins:
        bins = parse_bins(args.bins)
        if not 0 <= args.bin_batch <= MAX_OFFLINE_REQUESTS:
            raise ServerError(f"--bin-batch {args.bin_batch}: give 0 (the largest that fits) to {MAX_OFFLINE_REQUESTS}")
        n = max(args.bin_batch, 1)
        plan = [(f"bin {i}x{o}", [i, o], args.bin_batch, [Request(i, o)] * n, False) for i, o in bins]
    else:
        try:
            sizes = sorted({int(b) for b in args.batch_sizes.split(",")})
        except ValueError:
            raise ServerError(f"--batch-sizes {args.batch_sizes!r}: give a comma list of integers") from None
        if not sizes or sizes[0] < 1 or args.input_tokens < 1 or args.output_tokens < 1:
            raise ServerError("batch sizes, --input-tokens and --output-tokens must be positive")
        if args.num_requests is not None and args.num_requests < 1:
            raise ServerError(f"--num-requests {args.num_requests}: give at least 1")
        if sizes[-1] > MAX_OFFLINE_REQUESTS or (args.num_requests or 0) > MAX_OFFLINE_REQUESTS:
            raise ServerError(f"--batch-sizes and --num-requests: at most {MAX_OFFLINE_REQUESTS} requests")
        for b in sizes:
            n = args.num_requests or max(2 * b, 64)
            plan.append((f"batch {b}", None, b, [Request(args.input_tokens, args.output_tokens)] * n, False))
    return plan, max_num_seqs


def validate_offline(args: argparse.Namespace) -> None:
    check_engine_arguments(args)
    offline_plan(args)
    if not 0 < args.idle_max_s <= 86400:
        raise ServerError(f"--idle-max-s {args.idle_max_s}: give seconds in (0, 86400]")
    if args.monitor is not None:
        try:
            url = urllib.parse.urlsplit(args.monitor)
            scheme, host, port = url.scheme, url.hostname, url.port
        except ValueError:  # a port that is not a number in 0–65535, a bracketed host that is not IPv6
            scheme = host = port = None
        if scheme not in ("http", "https") or not host or port == 0:
            raise ServerError(f"--monitor {args.monitor!r}: give the monitor's URL, e.g. http://127.0.0.1:9400")


def offline_arguments(args: argparse.Namespace) -> list[str]:
    """The flags that give ``args``' offline run back, for a child of another engine (all but ``--engine[s]`` and
    ``--out``)."""
    argv = ["--model", args.model, "--model-cache", str(args.model_cache), *engine_options(args).engine_arguments(),
            "--device", args.device, "--batch-sizes", args.batch_sizes, "--input-tokens", str(args.input_tokens),
            "--output-tokens", str(args.output_tokens), "--bin-batch", str(args.bin_batch),
            "--source", args.source, "--idle-max-s", repr(args.idle_max_s)]  # fmt: skip
    for flag, value in (("--num-requests", args.num_requests), ("--bins", args.bins), ("--requests", args.requests),
                        ("--monitor", args.monitor)):  # fmt: skip
        if value is not None:
            argv += [flag, str(value)]
    return [*argv, "--compile"] if args.compile else argv


def read_request_sets(path: Path) -> tuple[list[PlanItem], int | None]:
    """The request sets of a ``--requests`` file and its ``max_num_seqs`` (the engine's max batch; default:
    the largest batch); a one-line error naming what is wrong."""
    if not path.is_file():  # a device such as /dev/zero would be read forever
        raise ServerError(f"--requests {path}: no such file")
    try:
        body = json.loads(path.read_text())
        sets = body["sets"]
        max_num_seqs = int(body["max_num_seqs"]) if body.get("max_num_seqs") is not None else None
        plan = []
        for i, s in enumerate(sets):
            reqs = [Request(int(a), int(b)) for a, b in s["requests"]]
            b = int(s["batch_size"])
            if b == 0 and s.get("bin"):  # a bin at the largest batch that fits: sized once the engine is up
                reqs = [Request(int(s["bin"][0]), int(s["bin"][1]))]
            elif b < 1 or not reqs or any(r.input_tokens < 1 or r.output_tokens < 1 for r in reqs):
                raise ValueError(f"set {i}: batch_size and every length must be positive, and requests not empty")
            saturated = bool(s.get("saturated", False))
            if saturated and len(reqs) < 2 * b:
                raise ValueError(f"set {i}: a saturated set needs at least two batches of requests")
            plan.append((str(s.get("label") or f"set {i}"), s.get("bin"), b, reqs, saturated))
    except OSError as err:
        raise ServerError(f"--requests {path}: {err.strerror}") from None
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        raise ServerError(f"--requests {path}: not a request-set file ({type(err).__name__}: {err})") from None
    if not plan:
        raise ServerError(f"--requests {path}: no request sets")
    if max_num_seqs is not None and max_num_seqs < 1:
        raise ServerError(f"--requests {path}: max_num_seqs must be positive")
    return plan, max_num_seqs


def parse_bins(text: str) -> list[tuple[int, int]]:
    """``1024x256,2048x512`` → bins of ``server.binning`` (each must be one of its bins)."""
    from server.binning import INPUT_BINS, OUTPUT_BINS

    bins = []
    for item in text.split(","):
        try:
            i, o = (int(x) for x in item.strip().lower().split("x"))
        except ValueError:
            raise ServerError(f"--bins: {item!r} is not INPUTxOUTPUT, e.g. 1024x256") from None
        if i not in INPUT_BINS or o not in OUTPUT_BINS:
            raise ServerError(f"--bins: {i}x{o} is not a bin (inputs {INPUT_BINS}, outputs {OUTPUT_BINS})")
        bins.append((i, o))
    return bins


MODEL_DESCRIPTION = (
    "Write a preset's weight-free model directory (config.json and a generated tokenizer) for any vLLM to "
    "serve with --load-format dummy: the compose stack's official vLLM image serves it this way."
)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("preset", choices=sorted(PRESETS), help="the model preset")
    parser.add_argument("--out", type=Path, required=True, help="the directory to write (kept if already there)")


def validate_model(args: argparse.Namespace) -> None:
    if args.out.exists() and not args.out.is_dir():
        raise ServerError(f"--out {args.out}: a file is there, not a model directory")


def run_model(args: argparse.Namespace) -> int:
    try:
        path = write_model(args.preset, args.out)
    except OSError as err:
        raise ServerError(f"cannot write the model directory {args.out}: {err.strerror or err}") from None
    print(f"{path}: serve it with --load-format dummy --served-model-name {args.preset}")
    return 0


COMMANDS = [
    Command("model", "write a preset's weight-free model directory", MODEL_DESCRIPTION,
            add_model_arguments, run_model, validate_model),
    Command("serve", "start vLLM's OpenAI server on a preset or model", SERVE_DESCRIPTION,
            add_serve_arguments, run_serve, validate_serve),
    Command("offline", "serve requests offline in batches and report J/token", OFFLINE_DESCRIPTION,
            add_offline_arguments, run_offline, validate_offline),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m server serve|offline``: the same commands as ``joulebench serve|offline``."""
    return command_main("python -m server", COMMANDS, argv)
