"""``joulebench``: the one command over the monitor, the server and the load generator."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from joulebench import __version__
from joulebench.errors import JoulebenchError


def run_command(
    parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], argv: list[str] | None
) -> int:
    """Parse, configure logging, run; a ``JoulebenchError`` becomes one line on stderr and exit code 2."""
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except JoulebenchError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    from loadgen import cli as loadgen_cli
    from monitor import cli as monitor_cli
    from server import cli as server_cli

    parser = argparse.ArgumentParser(
        prog="joulebench",
        description="What LLM serving costs in energy: online vs offline joules per token.",
    )
    parser.add_argument("--version", action="version", version=f"joulebench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "monitor", help="sample power and serve /metrics and /v1/energy", description=monitor_cli.DESCRIPTION
    )
    monitor_cli.add_arguments(p)
    p.set_defaults(run=monitor_cli.run)
    p = sub.add_parser(
        "serve", help="start vLLM's OpenAI server on a preset or model", description=server_cli.SERVE_DESCRIPTION
    )
    server_cli.add_serve_arguments(p)
    p.set_defaults(run=server_cli.run_serve)
    p = sub.add_parser(
        "offline",
        help="serve requests offline in batches and report J/token",
        description=server_cli.OFFLINE_DESCRIPTION,
    )
    server_cli.add_offline_arguments(p)
    p.set_defaults(run=server_cli.run_offline)
    p = sub.add_parser(
        "mock-server",
        help="an OpenAI-compatible streaming server with set latencies",
        description=loadgen_cli.MOCK_DESCRIPTION,
    )
    loadgen_cli.add_mock_arguments(p)
    p.set_defaults(run=loadgen_cli.run_mock)
    p = sub.add_parser(
        "replay",
        help="replay a trace at a controlled rate, headless, with a summary",
        description=loadgen_cli.REPLAY_DESCRIPTION,
    )
    loadgen_cli.add_replay_arguments(p)
    p.set_defaults(run=loadgen_cli.run_replay)
    sub.add_parser(
        "locust",
        help="Locust's web UI with the trace replay loaded (arguments go to locust)",
        description=loadgen_cli.LOCUST_DESCRIPTION,
        add_help=False,
    )
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["locust"]:  # everything after it is Locust's
        return loadgen_cli.run_locust(argv[1:])
    return run_command(parser, lambda args: args.run(args), argv)


if __name__ == "__main__":
    sys.exit(main())
