"""Real servers the tests start as processes."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def mock_server(*args: str) -> Iterator[str]:
    """``joulebench mock-server`` on a free port; yields its URL; must stop cleanly on SIGTERM."""
    with subprocess.Popen(
        [sys.executable, "-m", "joulebench", "mock-server", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            m = re.search(r"listening on (http://\S+)", line)
            assert m, line + (proc.stderr.read() if proc.stderr else "")
            yield m.group(1)
        finally:
            proc.terminate()
            assert proc.wait(timeout=15) == 0
