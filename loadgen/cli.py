"""``joulebench mock-server`` (also ``python -m loadgen mock-server``)."""

from __future__ import annotations

import argparse

from joulebench.serving import AppServer
from loadgen.errors import LoadgenError

MOCK_DESCRIPTION = "An OpenAI-compatible streaming server with set TTFT and per-token latency, for calibration."


def add_mock_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free one (default: %(default)s)")
    parser.add_argument("--ttft-ms", type=float, default=50.0, help="time to first token (default: %(default)s)")
    parser.add_argument("--itl-ms", type=float, default=10.0, help="time per further token (default: %(default)s)")
    parser.add_argument("--max-model-len", type=int, default=32768)
    parser.add_argument("--model", default="mock", help="the model name it answers to (default: %(default)s)")


def run_mock(args: argparse.Namespace) -> int:
    from loadgen.mock_server import MockConfig, create_app

    if args.ttft_ms < 0 or args.itl_ms < 0:
        raise LoadgenError("--ttft-ms and --itl-ms must not be negative")
    config = MockConfig(
        ttft_s=args.ttft_ms / 1000, itl_s=args.itl_ms / 1000, max_model_len=args.max_model_len, model=args.model
    )
    with AppServer(create_app(config), args.host, args.port) as http:
        print(
            f"mock OpenAI server listening on {http.url} (TTFT {args.ttft_ms:g} ms, {args.itl_ms:g} ms/token)",
            flush=True,
        )
        http.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    from joulebench.cli import run_command

    parser = argparse.ArgumentParser(prog="python -m loadgen")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("mock-server", description=MOCK_DESCRIPTION)
    add_mock_arguments(p)
    p.set_defaults(run=run_mock)
    return run_command(parser, lambda a: a.run(a), argv)
