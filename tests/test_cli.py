"""The one ``joulebench`` command: what it imports."""

from __future__ import annotations

import subprocess
import sys


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
