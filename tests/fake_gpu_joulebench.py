"""``python tests/fake_gpu_joulebench.py [--settings-file F] [--fail-set-call N] [--no-permission] -- ARGS``:
the real ``joulebench`` command in its own process, with one fake GPU at the NVML boundary whose power
follows the machine's CPU load (80 W idle, up to 280 W); the monitor reports it as simulated.

``--settings-file`` keeps the GPU's locked clocks and power limit in a JSON file, so another process (the
sweep's restore guard, the test) sees the same GPU; ``--fail-set-call N`` fails the Nth settings call;
``--no-permission`` fails every one as NVML does for a user who is not root. For tests that need a GPU in
a separate process (tests/test_stack.py, tests/test_sweep.py)."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import psutil
import pynvml

sys.path.insert(0, str(Path(__file__).parent))
from fake_nvml import FakeNvml, make_gpus

IDLE_W, W_PER_CPU_PERCENT = 80.0, 2.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings-file", type=Path)
    parser.add_argument("--fail-set-call", type=int)
    parser.add_argument("--no-permission", action="store_true")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ours = parser.parse_args()
    lib = FakeNvml(make_gpus(1, power_w=IDLE_W))
    # The library says so, and the monitor passes it on with the device (Locust's Energy tab shows it): the CI
    # stack, and one brought up by hand with its override, must not pass this GPU off as measured.
    lib.SIMULATED = "a fake GPU (tests/fake_gpu_joulebench.py) whose power follows the CPU load, 80-280 W"
    gpu = lib.gpus[0]
    gpu.settings_file = ours.settings_file
    gpu.fail_set_call = ours.fail_set_call
    gpu.set_error = pynvml.NVML_ERROR_NO_PERMISSION if ours.no_permission else None

    def follow_load() -> None:
        while True:
            gpu.set_power(IDLE_W + W_PER_CPU_PERCENT * psutil.cpu_percent(interval=0.25))

    threading.Thread(target=follow_load, daemon=True).start()
    sys.modules["pynvml"] = lib  # type: ignore[assignment]  # what the monitor and the sweep import
    from joulebench.cli import main as joulebench_main

    args = ours.args[1:] if ours.args[:1] == ["--"] else ours.args
    return joulebench_main(args)


if __name__ == "__main__":
    sys.exit(main())
