"""The binning estimator (Fernandez et al. 2025, §4.1): bins, exclusions, the sum."""

from __future__ import annotations

import pytest
from paths import TRACES

from server.binning import (
    INPUT_BINS,
    OUTPUT_BINS,
    BatchEnergy,
    ceiling_bin,
    ceiling_inflation,
    count_bins,
    estimate,
    largest_batch,
)


def test_bins_are_powers_of_two():
    assert INPUT_BINS[0] == 32 and INPUT_BINS[-1] == 8192 and len(INPUT_BINS) == 9
    assert OUTPUT_BINS[0] == 8 and OUTPUT_BINS[-1] == 512 and len(OUTPUT_BINS) == 7


@pytest.mark.parametrize(
    ("n_in", "n_out", "expected"),
    [(1, 1, (32, 8)), (32, 8, (32, 8)), (33, 9, (64, 16)), (1020, 129, (1024, 256)), (8192, 512, (8192, 512)),
     (8193, 10, None), (100, 513, None)],
)  # fmt: skip
def test_each_request_goes_to_its_ceiling_bin(n_in, n_out, expected):
    assert ceiling_bin(n_in, n_out) == expected


def test_estimate_sums_batches_and_counts_what_it_left_out():
    requests = [(100, 10)] * 30 + [(1000, 200)] * 8 + [(14000, 50), (500, 1000)]
    counts = count_bins(requests)
    assert counts.counts == {(128, 16): 30, (1024, 256): 8}
    assert counts.excluded == 2 and counts.excluded_tokens == 14050 + 1500
    measured = {(128, 16): BatchEnergy(10, 50.0, 1.0), (1024, 256): BatchEnergy(4, 400.0, 4.0)}
    est = estimate(counts, measured)
    assert est.energy_j == pytest.approx(30 / 10 * 50 + 8 / 4 * 400)
    assert est.uncertainty_j == pytest.approx(((3 * 1.0) ** 2 + (2 * 4.0) ** 2) ** 0.5)
    assert est.included == 38 and est.excluded == 2


def test_a_bin_is_batched_as_large_as_the_kv_cache_and_the_max_batch_hold():
    # 10,000 blocks of 16 tokens: a (1024, 256) request needs 80 blocks, so 125 fit; the max batch caps at 64
    assert largest_batch(1024 + 256, 256, 10_000, 16) == 125
    assert largest_batch(1024 + 256, 64, 10_000, 16) == 64
    assert largest_batch(8192 + 512, 256, 10_000, 16) == 18  # 544 blocks each
    assert largest_batch(100, 256, 5, 16) == 1  # never none
    assert largest_batch(100, 32, None, None) == 32  # the KV cache unknown: the max batch


def test_ceiling_bins_inflate_the_work():
    assert ceiling_inflation([(100, 10), (1000, 200)]) == pytest.approx((128 + 16 + 1024 + 256) / (110 + 1200))
    assert ceiling_inflation([(14000, 50)]) is None  # nothing in the bins


def test_the_estimate_says_the_engine_time_it_covers():
    est = estimate(count_bins([(100, 10)] * 30), {(128, 16): BatchEnergy(10, 50.0, 1.0, duration_s=2.0)})
    assert est.busy_s == pytest.approx(30 / 10 * 2.0)


def test_a_bin_never_measured_is_an_error():
    with pytest.raises(KeyError, match=r"\(128, 16\)"):
        estimate(count_bins([(100, 10)]), {})


def test_the_real_conversation_trace_bins(tmp_path):
    import csv

    trace = TRACES / "AzureLLMInferenceTrace_conv.csv"
    if not trace.is_file():
        pytest.skip(f"needs the shared traces beside the checkout ({trace})")
    with trace.open() as f:
        rows = [(int(r["ContextTokens"]), int(r["GeneratedTokens"])) for r in csv.DictReader(f)]
    counts = count_bins(rows)
    assert counts.included + counts.excluded == 19366
    # 563 requests ask for more than 512 output tokens (or 8192 input): excluded, and counted
    assert counts.excluded == sum(1 for i, o in rows if i > 8192 or o > 512) == 563
    assert counts.counts.most_common(2) == [((2048, 512), 4477), ((512, 128), 3933)]
