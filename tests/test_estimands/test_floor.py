"""The physical floor per token on known GPUs."""

from __future__ import annotations

import pytest

from estimands.floor import floor_j_per_token, gpu_peak, physical_floor
from server.models import PRESETS, parameter_count


def test_llama_3_1_8b_has_its_published_size():
    assert parameter_count(PRESETS["llama-3.1-8b"]) == 8_030_261_248
    assert parameter_count(PRESETS["llama-3.2-1b"]) == 1_235_814_400  # tied embeddings
    assert parameter_count({"hidden_size": 8}) is None


def test_the_floor_on_an_h100_and_an_h200():
    n = parameter_count(PRESETS["llama-3.1-8b"])
    h100 = gpu_peak("NVIDIA H100 80GB HBM3")
    assert h100.name == "H100 SXM" and gpu_peak("NVIDIA H100 PCIe").name == "H100 PCIe"
    # 700 W ÷ 989.5 TFLOP/s × 2 × 8.03e9 parameters
    assert floor_j_per_token(n, h100) == pytest.approx(700 / 989.5e12 * 2 * 8.030261248e9)
    assert floor_j_per_token(n, h100) == pytest.approx(0.01136, rel=1e-3)
    devices = [{"kind": "gpu", "name": "NVIDIA H200", "status": {"power_limit_w": 500.0}},
               {"kind": "cpu", "name": "package-0"}]  # fmt: skip
    f = physical_floor(n, devices)
    assert f["gpus"] == ["H200 SXM"] and f["power_w"] == 500.0  # the enforced limit, not the datasheet's
    assert f["j_per_token"] == pytest.approx(500 / 989.5e12 * 2 * n)
    two = physical_floor(n, [devices[0], {"kind": "gpu", "name": "NVIDIA H200"}])
    assert two["j_per_token"] == pytest.approx((500 + 700) / (2 * 989.5e12) * 2 * n)


def test_no_floor_where_it_is_not_known():
    assert physical_floor(8e9, [{"kind": "gpu", "name": "Some Future GPU"}]) is None
    assert physical_floor(8e9, [{"kind": "host", "name": "host CPU (estimated)"}]) is None
    assert physical_floor(None, [{"kind": "gpu", "name": "NVIDIA H200"}]) is None
