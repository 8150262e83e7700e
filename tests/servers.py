"""Real servers the tests start as processes."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import psutil


@contextlib.contextmanager
def running(*args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """``python -m ARGS`` with ``--port 0``: yields the process and the URL it says it listens on.

    The process is killed if still running on the way out, and always reaped.
    """
    with subprocess.Popen(
        [sys.executable, "-m", *args, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            seen = []
            for line in proc.stdout:
                seen.append(line)
                m = re.search(r"listening on (https?://\S+)", line)
                if m:
                    yield proc, m.group(1)
                    break
            else:
                raise AssertionError(f"{args[0]} did not start: {seen} {proc.stderr.read() if proc.stderr else ''}")
        finally:
            if proc.poll() is None:
                proc.kill()


@contextlib.contextmanager
def mock_server(*args: str) -> Iterator[str]:
    """``joulebench mock-server`` on a free port; yields its URL; must stop cleanly on SIGTERM."""
    with running("joulebench", "mock-server", *args) as (proc, url):
        yield url
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def joulebench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``joulebench ARGS`` in its own process, to the end: its exit code and output."""
    return subprocess.run([sys.executable, "-m", "joulebench", *args], capture_output=True, text=True, timeout=timeout)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM), made by the openssl command; a client trusts it with
    ``SSL_CERT_FILE``."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


class CompareRun:
    """``joulebench compare`` on the tiny preset in its own session (as from a terminal), on a small trace in
    the Azure format (2 requests/s); remembers every descendant it saw, to check that none is left."""

    def __init__(self, tmp_path: Path, *extra: str, rates: str = "1", requests: int = 16, warmup_share: float = 0.1):
        from synthetic import azure_trace

        self.run_dir = tmp_path / "run"
        trace = azure_trace(tmp_path / "trace.csv")
        cmd = [
            sys.executable, "-m", "joulebench", "compare", "--model", "tiny", "--model-cache",
            str(tmp_path / "models"), "--max-model-len", "1024", "--max-num-seqs", "8", "--trace", str(trace),
            "--rates", rates, "--warmup-share", str(warmup_share), "--requests", str(requests), "--min-requests", "4",
            "--reference-batches", "2", "--reference-s", "2", "--source", "estimate", "--idle-max-s", "8",
            "--bin-batch", "2", "--offline", "on", "--profile", "off", "--out", str(self.run_dir), *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)  # fmt: skip
        self.seen: dict[int, psutil.Process] = {}

    def descendants(self) -> list[psutil.Process]:
        try:
            found = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.seen.update({p.pid: p for p in found})
        return found

    def wait_until(self, what: str, ready: Callable[[], bool], timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            self.descendants()
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"compare exited ({self.proc.returncode}) before {what}: {err}")
            assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
            time.sleep(0.1)
        self.descendants()

    def find(self, pattern: str) -> psutil.Process | None:
        for p in self.descendants():
            try:
                if re.search(pattern, " ".join(p.cmdline())):
                    return p
            except psutil.Error:  # gone meanwhile
                continue
        return None

    def child(self, pattern: str) -> psutil.Process:
        found = self.find(pattern)
        assert found is not None, f"no child process matches {pattern!r}"
        return found

    def config(self) -> dict:
        try:
            return json.loads((self.run_dir / "config.json").read_text())
        except (OSError, ValueError):
            return {}

    def finish(self, timeout_s: float = 300) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=timeout_s)
        return self.proc.returncode, err

    def assert_no_process_left(self) -> None:
        _, alive = psutil.wait_procs(list(self.seen.values()), timeout=15)
        assert not alive, [p.cmdline() for p in alive]
        left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
                if any(str(self.run_dir) in c for c in p.info["cmdline"] or [])]  # fmt: skip
        assert not left, left


@contextlib.contextmanager
def monitor(*args: str) -> Iterator[tuple[str, float]]:
    """A real monitor with the estimate source: its URL and when it started."""
    started = time.time()
    with subprocess.Popen(
        [sys.executable, "-m", "monitor", "--port", "0", "--source", "estimate", "--quiet", *args],
        stdout=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            m = re.search(r"listening on (\S+)", proc.stdout.readline() + proc.stdout.readline())
            assert m, "the monitor did not start"
            yield m.group(1), started
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@contextlib.contextmanager
def started(server: Any, timeout_s: float = 600) -> Iterator[Any]:
    """A server launcher (``server.launch``'s) started and ready, stopped on the way out."""
    server.start()
    try:
        server.wait_ready(timeout_s=timeout_s)
        yield server
    finally:
        server.stop()


class ScriptedServer:
    """A TCP server on 127.0.0.1 that answers each request with the bytes it is given, as they are: the HTTP
    no server sends on purpose (a head cut short, a chunk cut mid-way, a stream that stalls). ``serve(script)``
    sets the answer to the following requests: each item is bytes (sent), a float (a pause, in seconds) or
    ``None`` (hold the connection open until the client closes it); the connection is closed after the last.
    Each request's head is read to its end (kept in ``heads``), and its body by its Content-Length, before the
    answer starts."""

    def __init__(self) -> None:
        import socket
        import threading

        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # accept wakes to see close()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._script: list[bytes | float | None] = []
        self.heads: list[bytes] = []  # each request's line and headers, as received
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def serve(self, script: list[bytes | float | None]) -> str:
        self._script = list(script)
        return self.url

    def _accept(self) -> None:
        import threading

        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # the listener closed
                return
            thread = threading.Thread(target=self._answer, args=(conn, self._script), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _answer(self, conn, script: list[bytes | float | None]) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    if not (more := conn.recv(65536)):
                        return
                    data += more
                head, _, body = data.partition(b"\r\n\r\n")
                self.heads.append(head)
                length = int(m.group(1)) if (m := re.search(rb"(?i)content-length: *(\d+)", head)) else 0
                while len(body) < length:
                    if not (more := conn.recv(65536)):
                        return
                    body += more
                for item in script:
                    if isinstance(item, bytes):
                        conn.sendall(item)
                    elif isinstance(item, float):
                        self._stop.wait(item)
                    else:
                        while not self._stop.is_set() and conn.recv(65536):
                            pass
            except OSError:  # the client went away first
                return

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=10)


@contextlib.contextmanager
def scripted_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def locust(*args: str, log: Path) -> Iterator[subprocess.Popen]:
    """``joulebench locust ARGS``, its output in ``log``; terminated on the way out if still running."""
    with log.open("w") as out, subprocess.Popen(
        [sys.executable, "-m", "joulebench", "locust", *args], stdout=out, stderr=subprocess.STDOUT
    ) as proc:  # fmt: skip
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=30)


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.3) -> Any:
    """``check()``'s first true value, asked every ``every_s`` (a refused connection is a no)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx2.TransportError):
            if value := check():
                return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)
