"""``joulebench``: the one command over the monitor, the server, the load generator and the comparison.

The only module that gathers the packages' commands; each package's ``cli`` builds on
``joulebench.commands`` and never imports this one.
"""

from __future__ import annotations

import sys

from joulebench import __version__
from joulebench.commands import Command, command_main, reporting_errors


def commands() -> list[Command]:
    """Every package's subcommands, in the order ``--help`` lists them."""
    from compare import cli as compare_cli
    from loadgen import cli as loadgen_cli
    from monitor import cli as monitor_cli
    from predict import cli as predict_cli
    from server import cli as server_cli

    return [
        *monitor_cli.COMMANDS,
        *server_cli.COMMANDS,
        *compare_cli.COMMANDS,
        *predict_cli.COMMANDS,
        *loadgen_cli.COMMANDS,
    ]


DESCRIPTION = "What LLM serving costs in energy: online vs offline joules per token."
#: Subcommands whose arguments are another program's: (name, help), run before any parsing.
LISTED = [("locust", "Locust's web UI with the trace replay loaded (arguments go to locust)")]


def main(argv: list[str] | None = None) -> int:
    from loadgen import cli as loadgen_cli

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["locust"]:  # everything after it is Locust's
        return reporting_errors("joulebench locust", loadgen_cli.run_locust, argv[1:])
    return command_main("joulebench", commands(), argv, DESCRIPTION, version=__version__, listed=LISTED)
