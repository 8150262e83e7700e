"""``joulebench``: the one command over the monitor, the server, the load generator and the comparison.

The only module that gathers the packages' commands; each package's ``cli`` builds on
``joulebench.commands`` and never imports this one.
"""

from __future__ import annotations

import sys

from joulebench import __version__
from joulebench.commands import command_main


def main(argv: list[str] | None = None) -> int:
    from compare import cli as compare_cli
    from loadgen import cli as loadgen_cli
    from monitor import cli as monitor_cli
    from server import cli as server_cli

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["locust"]:  # everything after it is Locust's
        return loadgen_cli.run_locust(argv[1:])
    return command_main(
        "joulebench",
        [*monitor_cli.COMMANDS, *server_cli.COMMANDS, *compare_cli.COMMANDS, *loadgen_cli.COMMANDS],
        argv,
        "What LLM serving costs in energy: online vs offline joules per token.",
        version=__version__,
        listed=[("locust", "Locust's web UI with the trace replay loaded (arguments go to locust)")],
    )


if __name__ == "__main__":
    sys.exit(main())
