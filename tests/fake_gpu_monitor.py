"""``python tests/fake_gpu_monitor.py [joulebench monitor options]``: the real monitor process, with one
fake GPU at the NVML boundary whose power follows the machine's CPU load (80 W idle, up to 280 W).

For tests that need GPU metrics from a monitor running as its own process (tests/test_stack.py)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from fake_nvml import FakeNvml, make_gpus

IDLE_W, W_PER_CPU_PERCENT = 80.0, 2.0


def main() -> int:
    lib = FakeNvml(make_gpus(1, power_w=IDLE_W))

    def follow_load() -> None:
        while True:
            lib.gpus[0].set_power(IDLE_W + W_PER_CPU_PERCENT * psutil.cpu_percent(interval=0.25))

    threading.Thread(target=follow_load, daemon=True).start()
    sys.modules["pynvml"] = lib  # type: ignore[assignment]  # what NvmlSource imports
    from monitor.cli import main as monitor_main

    return monitor_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
