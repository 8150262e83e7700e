"""Real servers the tests start as processes."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


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
