"""``joulebench``: the one command over the monitor, the server and the load generator."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, description, argument adder and runner."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def command_main(prog: str, commands: list[Command], argv: list[str] | None, description: str = "") -> int:
    """Build a parser with ``commands`` as subcommands and run the chosen one."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if prog == "joulebench":
        parser.add_argument("--version", action="version", version=f"joulebench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in commands:
        p = sub.add_parser(c.name, help=c.help, description=c.description)
        c.add_arguments(p)
        p.set_defaults(run=c.run)
    if prog == "joulebench":  # documented in --help; its arguments are Locust's, handled in main
        sub.add_parser("locust", help="Locust's web UI with the trace replay loaded (arguments go to locust)")
    return run_command(parser, lambda args: args.run(args), argv)


def main(argv: list[str] | None = None) -> int:
    from loadgen import cli as loadgen_cli
    from monitor import cli as monitor_cli
    from server import cli as server_cli

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["locust"]:  # everything after it is Locust's
        return loadgen_cli.run_locust(argv[1:])
    return command_main(
        "joulebench",
        [*monitor_cli.COMMANDS, *server_cli.COMMANDS, *loadgen_cli.COMMANDS],
        argv,
        "What LLM serving costs in energy: online vs offline joules per token.",
    )


if __name__ == "__main__":
    sys.exit(main())
