from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the fakes live beside the tests


@functools.cache
def _nvml_unavailable() -> str | None:
    """Why there is no NVIDIA GPU to test on, or None when there is one."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        return f"needs an NVIDIA GPU: NVML could not start ({err})"
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return "needs an NVIDIA GPU: NVML sees none"
    finally:
        pynvml.nvmlShutdown()
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    reason = _nvml_unavailable()
    if reason is not None:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=reason))
