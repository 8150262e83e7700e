"""The physical floor of energy per token: a GPU at its board power limit doing nothing but dense BF16
matrix work at its peak rate, and a forward pass that costs 2 FLOPs per parameter per token.

    floor J/token = power limit (W) ÷ peak dense BF16 rate (FLOP/s) × 2 × parameters

No real serving reaches it (memory traffic, attention, idle and non-matrix work all cost more); the
measured ÷ floor ratio says how far a stack is from it, as Fernandez et al. (2025, Table 4) do. Peak
rates are dense (the datasheets quote twice as much "with sparsity").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class GpuPeak:
    name: str
    bf16_dense_flops: float
    board_power_w: float
    source: str


#: Matched in order against the name NVML reports (the first whose every word is in it).
GPUS: tuple[tuple[tuple[str, ...], GpuPeak], ...] = (
    (("H200", "NVL"), GpuPeak("H200 NVL", 835.5e12, 600.0,
                              "NVIDIA H200 NVL datasheet: BF16 1,671 TFLOPS with sparsity, up to 600 W")),
    (("H200",), GpuPeak("H200 SXM", 989.5e12, 700.0,
                        "NVIDIA H200 Tensor Core GPU datasheet: BF16 1,979 TFLOPS with sparsity, up to 700 W")),
    (("H100", "PCIe"), GpuPeak("H100 PCIe", 756.5e12, 350.0,
                               "NVIDIA H100 Tensor Core GPU datasheet: BF16 1,513 TFLOPS with sparsity, 300–350 W")),
    (("H100",), GpuPeak("H100 SXM", 989.5e12, 700.0,
                        "NVIDIA H100 Tensor Core GPU datasheet: BF16 1,979 TFLOPS with sparsity, up to 700 W")),
    (("A100",), GpuPeak("A100 SXM", 312e12, 400.0,
                        "NVIDIA A100 Tensor Core GPU datasheet: BF16 312 TFLOPS (624 with sparsity), 400 W")),
    (("L40S",), GpuPeak("L40S", 362.05e12, 350.0,
                        "NVIDIA L40S datasheet: BF16 362.05 TFLOPS (733 with sparsity), 350 W")),
)  # fmt: skip


def gpu_peak(name: str) -> GpuPeak | None:
    for words, peak in GPUS:
        if all(w.lower() in name.lower() for w in words):
            return peak
    return None


def floor_j_per_token(parameters: float, peak: GpuPeak, power_w: float | None = None) -> float:
    """J per token of a compute-bound forward pass at ``power_w`` (default: the datasheet's board power)."""
    return (peak.board_power_w if power_w is None else power_w) / peak.bf16_dense_flops * 2.0 * parameters


def physical_floor(parameters: float | None, devices: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The floor for the run's GPUs (their enforced power limit where NVML says it), or None where the
    GPU is not in the table, there is no GPU, or the model's size is unknown."""
    gpus = [(d, gpu_peak(str(d.get("name") or ""))) for d in devices if d.get("kind") == "gpu"]
    known = [(d, p) for d, p in gpus if p is not None]
    if not parameters or not gpus or len(known) < len(gpus):
        return None
    power = sum((d.get("status") or {}).get("power_limit_w") or p.board_power_w for d, p in known)
    flops = sum(p.bf16_dense_flops for _, p in known)
    return {
        "j_per_token": power / flops * 2.0 * parameters,
        "parameters": parameters,
        "power_w": power,
        "bf16_dense_flops": flops,
        "gpus": [p.name for _, p in known],
        "sources": sorted({p.source for _, p in known}),
        "definition": "board power limit ÷ peak dense BF16 rate × 2 × parameters: J per token of a compute-bound "
        "forward pass (Fernandez et al. 2025, Table 4's floor)",
    }
