"""The one ``joulebench`` command: what it imports, and random arguments through every subcommand."""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys

import pytest
from hypothesis import strategies as st


def test_only_locust_commands_load_gevent():
    """Locust monkey-patches the process it is imported in; vLLM's threads deadlock under gevent."""
    code = (
        "import sys\n"
        "from joulebench.cli import main\n"
        "for cmd in (['monitor', '--help'], ['offline', '--help'], ['replay', '--help']):\n"
        "    try:\n"
        "        main(cmd)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'gevent' not in sys.modules and 'locust' not in sys.modules, 'gevent was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]


# Values a new user might type, the nonsense the issue found among them; paths are made per test.
VALUES = ["0", "1", "2", "-1", "3.5", "1e12", "1e308", "nan", "inf", "-inf", "70000", "65535", "abc", "", " ",
          "status:999", "status:x", "stall", "drop", "clip", "poisson", "trace", "gamma", "auto", "estimate",
          "http://127.0.0.1:9", "127.0.0.1:1", "https://h:0", "ftp://x", "azure-cnv", "timestamp=t", "input=",
          "1x2", "1024x256", "8,64", "a,b", "{}", "[1]", "tiny", "/dev/full", "/dev/zero", "/proc/nope/x"]  # fmt: skip
SKIP_FLAGS = {"-h", "--help", "--version"}


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(f for a in parser._actions for f in a.option_strings if f not in SKIP_FLAGS)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from joulebench.cli import DESCRIPTION, LISTED, commands
    from joulebench.commands import build_parser

    parser = build_parser("joulebench", commands(), DESCRIPTION, listed=LISTED)
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _argv(flags: list[str], values: list[str]) -> st.SearchStrategy[list[str]]:
    """Mostly FLAG VALUE pairs (what a user types), now and then a stray word."""
    stray = st.one_of(st.sampled_from(values), st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                                                       max_size=8))  # fmt: skip
    pair = st.tuples(st.sampled_from(flags), st.sampled_from(values))
    return st.lists(st.one_of(pair, pair, pair, st.tuples(stray)), max_size=5).map(
        lambda pairs: [w for p in pairs for w in p]
    )


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_random_arguments_give_one_line_or_pass_every_commands_checks(tmp_path, name):
    """Hypothesis drives each subcommand's parser and its checks (``validate``: everything before a server
    starts); the outcome is argparse's usage error, a one-line ``JoulebenchError``, or success; never another
    exception. ``locust`` is checked on its replay options."""
    from hypothesis import HealthCheck, given, settings

    from joulebench.errors import JoulebenchError
    from loadgen.cli import validate_locust

    sub = _subparsers()[name]
    flags = _flags(sub) or ["--jb-rate", "--jb-duration", "--jb-first", "--jb-columns", "--host", "--jb-monitor"]
    values = [*VALUES, str(tmp_path / "a" / "b.json"), str(tmp_path)]

    @settings(derandomize=True, max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_argv(flags, values))
    def check(argv: list[str]) -> None:
        if name == "locust":
            try:
                validate_locust(argv)
            except JoulebenchError as err:
                assert "\n" not in str(err), err
            return
        err_out = io.StringIO()
        try:
            with contextlib.redirect_stderr(err_out), contextlib.redirect_stdout(io.StringIO()):
                args = sub.parse_args(argv)
        except SystemExit as exit_:
            said = err_out.getvalue()  # usage, then one error line (which echoes what was typed, \n and all)
            assert exit_.code == 2 and f"\njoulebench {name}: error: " in said and "Traceback" not in said, said
            return
        if args.validate is not None:
            try:
                args.validate(args)
            except JoulebenchError as err:
                assert str(err) and "\n" not in str(err), err

    check()


def test_every_command_has_its_checks():
    from joulebench.cli import commands

    assert [c.name for c in commands() if c.validate is None] == []


def test_replay_help_gives_its_exit_statuses():
    out = subprocess.run([sys.executable, "-m", "joulebench", "replay", "--help"], capture_output=True, text=True,
                         timeout=60).stdout  # fmt: skip
    text = " ".join(out.split())
    assert "Exit status: 0 every request ok; 1 finished, some requests failed" in text
    assert (
        "2 an error (before any traffic, or the records file failing: one line); 130/143/129 stopped by "
        "SIGINT/SIGTERM/SIGHUP" in text
    )


def test_locust_help_lists_joulebench_options_then_locusts():
    out = subprocess.run([sys.executable, "-m", "joulebench", "locust", "--help"], capture_output=True, text=True,
                         timeout=60).stdout  # fmt: skip
    ours, _, locusts = out.partition("Locust's own options:")
    for flag in ("--jb-trace", "--jb-process", "--jb-rate", "--jb-monitor", "--jb-runs-dir"):
        assert flag in ours
    assert ours.index("--jb-trace") < ours.index("--jb-process") < ours.index("--jb-rate")  # the form's order
    assert "--web-port" in locusts and "--jb-records" not in out  # a Locust run keeps its records in its directory


@pytest.mark.parametrize("argv", [["mock-server", "-v", "--port", "70000"], ["-v", "mock-server", "--port", "70000"]])
def test_verbose_is_taken_before_or_after_the_command(argv):
    run = subprocess.run([sys.executable, "-m", "joulebench", *argv], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "joulebench: error: --port 70000: give 1–65535, or 0 for a free one"
    ], run.stderr
