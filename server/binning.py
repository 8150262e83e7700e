"""The binning estimator of Fernandez et al. 2025 (§4.1): a trace's energy from one batch per bin.

Input lengths fall into power-of-two bins from 32 to 8192 tokens, output lengths from 8 to 512; each
request goes to the smallest bin that holds it (its ceiling bin). One batch at each bin's lengths is
measured offline, as large as fits (``largest_batch``: the engine's KV cache and its max batch, as the
paper batches); the trace's energy is estimated as

    E ≈ Σ_bins N(bin) / B(bin) · E_batch(bin)

a partial batch counted by the same linear rule (N/B of a batch's energy). The estimate covers the
engine's busy time only (Σ N/B · t_batch): against wall-clock energy it needs an idle term,
P_idle × (T_wall − T_busy). Ceiling bins also inflate the work: ``ceiling_inflation`` says by how much.
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


def largest_batch(tokens: int, max_num_seqs: int, kv_blocks: int | None, block_size: int | None) -> int:
    """The largest batch of requests of ``tokens`` (input + output) that the engine holds at once: its max
    batch, and the KV cache's blocks over the blocks each request needs."""
    if not kv_blocks or not block_size:
        return max_num_seqs
    per_request = -(-tokens // block_size)
    return max(1, min(max_num_seqs, kv_blocks // per_request))


def ceiling_inflation(requests: Iterable[tuple[int, int]]) -> float | None:
    """The bins' tokens over the requests' own (input + output), for the requests the bins hold."""
    own = binned = 0
    for n_in, n_out in requests:
        b = ceiling_bin(n_in, n_out)
        if b is not None:
            own += n_in + n_out
            binned += b[0] + b[1]
    return binned / own if own else None


@dataclass(frozen=True, slots=True)
class BatchEnergy:
    """One measured batch at a bin's lengths."""

    batch_size: int
    energy_j: float
    uncertainty_j: float = 0.0
    duration_s: float = 0.0


def measured_bins(results: Iterable[Mapping]) -> dict[Bin, BatchEnergy]:
    """The bins an offline run measured (``joulebench offline --bins``: its JSON's ``results``)."""
    return {
        (r["bin"][0], r["bin"][1]): BatchEnergy(
            r["batch_size"], r["energy_j"], r["uncertainty_j"], r.get("duration_s", 0.0)
        )
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
    busy_s: float = 0.0  # Σ N/B · t_batch: the engine time the estimate covers


def estimate(counts: BinCounts, measured: Mapping[Bin, BatchEnergy]) -> BinningEstimate:
    """Σ N(bin)/B(bin) · E_batch(bin); every bin with requests must have been measured."""
    missing = sorted(b for b in counts.counts if b not in measured)
    if missing:
        raise KeyError(f"bins with requests but no measured batch: {missing}")
    per_bin = {b: n / measured[b].batch_size * measured[b].energy_j for b, n in counts.counts.items()}
    var = sum((n / measured[b].batch_size * measured[b].uncertainty_j) ** 2 for b, n in counts.counts.items())
    busy = sum(n / measured[b].batch_size * measured[b].duration_s for b, n in counts.counts.items())
    return BinningEstimate(
        energy_j=sum(per_bin.values()),
        uncertainty_j=var**0.5,
        included=counts.included,
        excluded=counts.excluded,
        excluded_tokens=counts.excluded_tokens,
        per_bin_j=per_bin,
        busy_s=busy,
    )
