"""The command plumbing every package's CLI module uses: a ``Command``, its parser, and running it.

A leaf: it imports none of joulebench's packages, so a package's CLI module can use it without
importing ``joulebench.cli`` (which gathers every package's commands, and so imports them all).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


def command_main(
    prog: str,
    commands: Sequence[Command],
    argv: list[str] | None,
    description: str = "",
    version: str | None = None,
    listed: Sequence[tuple[str, str]] = (),
) -> int:
    """Build a parser with ``commands`` as subcommands and run the chosen one.

    ``listed``: (name, help) of subcommands handled before parsing (their arguments are another
    program's), shown in ``--help`` only.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if version is not None:
        parser.add_argument("--version", action="version", version=f"{prog} {version}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in commands:
        p = sub.add_parser(c.name, help=c.help, description=c.description)
        c.add_arguments(p)
        p.set_defaults(run=c.run)
    for name, help_text in listed:
        sub.add_parser(name, help=help_text)
    return run_command(parser, lambda args: args.run(args), argv)
