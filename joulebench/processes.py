"""Child processes that never outlive joulebench: own process group, parent-death signal, log file.

Every long-lived child (vLLM's server, the monitor, a replay, an offline run) starts in its own
session, so stopping it stops its whole group (vLLM's engine core and workers with it), and is told
by the kernel to die with its parent (``PR_SET_PDEATHSIG``), so neither Ctrl-C, an exception nor a
killed joulebench leaves one running.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import signal
import subprocess
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

from joulebench.errors import JoulebenchError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child (``preexec_fn``, or after ``os.fork()``): SIGTERM when the parent dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def kill_group(proc: subprocess.Popen, timeout_s: float, name: str = "child") -> None:
    """SIGTERM the process group, SIGKILL it after ``timeout_s``; then SIGKILL any straggler in the group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s of SIGTERM: killing it", name, timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:])


class Child:
    """One child process: ``start()``, ``wait()`` / ``wait_for_line()``, ``stop()``; output to ``log_path``."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting %s: %s", self.name, " ".join(self.command))
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        weakref.finalize(self, kill_group, self.proc, 5.0, self.name)
        return self

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def failed(self, what: str) -> JoulebenchError:
        return JoulebenchError(f"{self.name} {what}; the end of {self.log_path}:\n{tail(self.log_path)}")

    def wait_for_line(self, pattern: str, timeout_s: float) -> re.Match[str]:
        """Wait until the log has a line matching ``pattern``; an error with the log's end if the child dies."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while True:
            m = regex.search(self.log_path.read_text(errors="replace"))
            if m:
                return m
            code = self.poll()
            if code is not None:
                raise self.failed(f"exited with code {code} while starting")
            if time.monotonic() > deadline:
                self.stop()
                raise self.failed(f"did not start within {timeout_s:.0f} s")
            time.sleep(0.1)

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the child to exit; its exit code."""
        if self.proc is None:
            raise JoulebenchError(f"{self.name} was not started")
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise self.failed(f"did not finish within {timeout_s:.0f} s") from None

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc, self.stop_timeout_s, self.name)

    def __enter__(self) -> Child:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS's pick)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def write_pidfile(path: Path, pid: int | None) -> None:
    """``pid`` (None: no process) into ``path`` at once, for a monitor that follows it (``--attribute-pidfile``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("" if pid is None else f"{pid}\n")
        tmp.replace(path)
    except OSError as err:
        raise JoulebenchError(f"cannot write the pidfile {path}: {err}") from err
