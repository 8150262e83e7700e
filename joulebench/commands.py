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
from typing import Any

from joulebench.errors import JoulebenchError

VERBOSE_HELP = "more logging (-vv for debug)"


def run_command(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int],
    argv: list[str] | None,
    validate: Callable[[argparse.Namespace], None] | None = None,
) -> int:
    """Parse, configure logging, validate, run; a ``JoulebenchError`` becomes one line on stderr and exit code 2."""
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def validated(args: argparse.Namespace) -> int:
        if validate is not None:
            validate(args)
        return run(args)

    return reporting_errors(parser.prog, validated, args)


def reporting_errors(prog: str, call: Callable[[Any], int], arg: Any) -> int:
    """``call(arg)``, with a ``JoulebenchError`` printed as one line (``PROG: error: …``) and exit code 2."""
    try:
        return call(arg)
    except JoulebenchError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, description, argument adder and runner.

    ``validate(args)``, when given, runs first and checks every option without starting anything (no
    server, no traffic): a ``JoulebenchError`` naming the option, or nothing.
    """

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    validate: Callable[[argparse.Namespace], None] | None = None


def build_parser(
    prog: str,
    commands: Sequence[Command],
    description: str = "",
    version: str | None = None,
    listed: Sequence[tuple[str, str]] = (),
) -> argparse.ArgumentParser:
    """A parser with ``commands`` as subcommands; each parsed namespace holds its command's ``run`` and
    ``validate``. ``listed``: (name, help) of subcommands handled before parsing (their arguments are
    another program's), shown in ``--help`` only."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if version is not None:
        parser.add_argument("--version", action="version", version=f"{prog} {version}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in commands:
        p = sub.add_parser(c.name, help=c.help, description=c.description)
        c.add_arguments(p)
        # also after the command (`joulebench replay -v`), where people put it; not given there, the one before
        # the command (`run_command`'s) stands
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        p.set_defaults(run=c.run, validate=c.validate)
    for name, help_text in listed:
        sub.add_parser(name, help=help_text)
    return parser


def command_main(
    prog: str,
    commands: Sequence[Command],
    argv: list[str] | None,
    description: str = "",
    version: str | None = None,
    listed: Sequence[tuple[str, str]] = (),
) -> int:
    """Build a parser with ``commands`` as subcommands and run the chosen one (validated first)."""
    parser = build_parser(prog, commands, description, version, listed)
    return run_command(
        parser, lambda args: args.run(args), argv, lambda args: args.validate(args) if args.validate else None
    )
