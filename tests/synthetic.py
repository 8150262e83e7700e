"""Synthetic input files for tests."""

from __future__ import annotations

from pathlib import Path


def azure_trace(path: Path, n: int = 40, seconds: float = 20.0) -> Path:
    """A trace in the Azure LLM inference format: ``n`` requests evenly over ``seconds``, varied lengths."""
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(n):
        t = i * seconds / n
        rows.append(f"2023-11-16 18:{int(t // 60):02d}:{t % 60:09.6f},{40 + 37 * i % 200},{4 + 7 * i % 24}")
    path.write_text("\n".join(rows) + "\n")
    return path
