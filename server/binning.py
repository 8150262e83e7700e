"""The binning estimator of Fernandez et al. 2025 (§4.1): a trace's energy from one batch per bin.

Input lengths fall into power-of-two bins from 32 to 8192 tokens, output lengths from 8 to 512; each
request goes to the smallest bin that holds it (its ceiling bin). One full batch of B requests at
each bin's lengths is measured offline; the trace's energy is estimated as

    E ≈ Σ_bins N(bin) / B(bin) · E_batch(bin)

Requests longer than the largest bins are excluded and counted, never silently dropped.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

INPUT_BINS = tuple(2**k for k in range(5, 14))  # 32 … 8192
OUTPUT_BINS = tuple(2**k for k in range(3, 10))  # 8 … 512

Bin = tuple[int, int]


def ceiling_bin(input_tokens: int, output_tokens: int) -> Bin | None:
    """The smallest (input, output) bin that holds the request, or None when it is too long."""
    i = bisect.bisect_left(INPUT_BINS, input_tokens)
    o = bisect.bisect_left(OUTPUT_BINS, output_tokens)
    if i == len(INPUT_BINS) or o == len(OUTPUT_BINS):
        return None
    return INPUT_BINS[i], OUTPUT_BINS[o]


@dataclass(frozen=True, slots=True)
class BinCounts:
    counts: Counter[Bin]
    excluded: int
    excluded_tokens: int

    @property
    def included(self) -> int:
        return sum(self.counts.values())


def count_bins(requests: Iterable[tuple[int, int]]) -> BinCounts:
    counts: Counter[Bin] = Counter()
    excluded = excluded_tokens = 0
    for n_in, n_out in requests:
        b = ceiling_bin(n_in, n_out)
        if b is None:
            excluded += 1
            excluded_tokens += n_in + n_out
        else:
            counts[b] += 1
    return BinCounts(counts=counts, excluded=excluded, excluded_tokens=excluded_tokens)


@dataclass(frozen=True, slots=True)
class BatchEnergy:
    """One measured full batch at a bin's lengths."""

    batch_size: int
    energy_j: float
    uncertainty_j: float = 0.0


def measured_bins(results: Iterable[Mapping]) -> dict[Bin, BatchEnergy]:
    """The bins an offline run measured (``joulebench offline --bins``: its JSON's ``results``)."""
    return {
        (r["bin"][0], r["bin"][1]): BatchEnergy(r["batch_size"], r["energy_j"], r["uncertainty_j"])
        for r in results
        if r.get("bin")
    }


@dataclass(frozen=True, slots=True)
class BinningEstimate:
    energy_j: float
    uncertainty_j: float
    included: int
    excluded: int
    excluded_tokens: int
    per_bin_j: dict[Bin, float] = field(default_factory=dict)


def estimate(counts: BinCounts, measured: Mapping[Bin, BatchEnergy]) -> BinningEstimate:
    """Σ N(bin)/B(bin) · E_batch(bin); every bin with requests must have been measured."""
    missing = sorted(b for b in counts.counts if b not in measured)
    if missing:
        raise KeyError(f"bins with requests but no measured batch: {missing}")
    per_bin = {b: n / measured[b].batch_size * measured[b].energy_j for b, n in counts.counts.items()}
    var = sum((n / measured[b].batch_size * measured[b].uncertainty_j) ** 2 for b, n in counts.counts.items())
    return BinningEstimate(
        energy_j=sum(per_bin.values()),
        uncertainty_j=var**0.5,
        included=counts.included,
        excluded=counts.excluded,
        excluded_tokens=counts.excluded_tokens,
        per_bin_j=per_bin,
    )
