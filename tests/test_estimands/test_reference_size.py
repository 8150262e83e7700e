"""The saturated reference's size: grown from a pilot until its steady part lasts --reference-s."""

from estimands.reference import MAX_REFERENCE_BATCHES, reference_size, steady_seconds


def closed_loop(n: int, concurrency: int, service_s: float) -> list[dict]:
    """``n`` requests kept ``concurrency`` in flight, each served in ``service_s`` (first token at a tenth)."""
    free = [0.0] * concurrency
    out = []
    for _ in range(n):
        k = min(range(concurrency), key=free.__getitem__)
        sent = free[k]
        free[k] = sent + service_s
        out.append({"status": "ok", "sent_s": sent, "first_token_s": sent + service_s / 10, "last_token_s": free[k]})
    return out


def test_a_pilot_too_short_is_grown_by_its_completion_rate():
    pilot = closed_loop(12, 4, 0.1)  # 40 completions a second: 0.2 s of steady part
    assert 0 < steady_seconds(pilot, 4) < 1
    batches = reference_size(pilot, 4, 3, target_s=10.0)
    grown = closed_loop(4 * batches, 4, 0.1)
    assert steady_seconds(grown, 4) >= 10.0  # the margin covers the cohort and the drain
    assert steady_seconds(grown, 4) < 15.0  # and is a margin, not a multiple


def test_a_long_enough_pilot_is_kept_and_growth_is_bounded():
    slow = closed_loop(16, 4, 8.0)  # the cohort ends at 8 s, the last send at 24 s
    assert steady_seconds(slow, 4) >= 10.0 and reference_size(slow, 4, 4, target_s=10.0) == 4
    instant = closed_loop(12, 4, 1e-6)
    assert reference_size(instant, 4, 3, target_s=10.0) == MAX_REFERENCE_BATCHES
    failed = [{**r, "status": "http_error", "last_token_s": None} for r in closed_loop(12, 4, 0.1)]
    assert reference_size(failed, 4, 3, target_s=10.0) == 3  # nothing to size it by: the pilot's, and its verdict


def loop_with_a_long_first_request(n: int, long_tokens: int, pace_full: float, pace_drain: float) -> list[dict]:
    """Four in flight: the first request has ``long_tokens`` output tokens, the others 10 (0.1 s each at
    ``pace_full`` s a token, the pace of a full loop); after the last send the long one runs at ``pace_drain``
    (the loop drained: faster steps)."""
    short = closed_loop(n - 1, 3, 10 * pace_full)
    for r in short:
        r["output_tokens"] = 10
    last_send = max(r["sent_s"] for r in short)
    first = 0.01
    at_full = first + (long_tokens - 1) * pace_full
    left = long_tokens - 1 - (last_send - first) / pace_full
    end = at_full if at_full <= last_send else last_send + left * pace_drain
    long = {"status": "ok", "sent_s": 0.0, "first_token_s": first, "last_token_s": end, "output_tokens": long_tokens}
    return [long, *short]


def test_a_cohort_request_that_ends_in_the_pilot_s_drain_is_sized_at_the_full_loop_s_pace():
    """The pilot's long cohort request finished fast once its pool ran dry; in a loop that stays full it runs
    at the full loop's pace (results/h100-code, segment 1: no steady part at the size its pilot's end gave)."""
    pilot = loop_with_a_long_first_request(16, 1000, 0.01, 0.0025)
    assert steady_seconds(pilot, 4) == 0.0  # the cohort outlasts the sends
    batches = reference_size(pilot, 4, 4, target_s=5.0)
    grown = loop_with_a_long_first_request(4 * batches, 1000, 0.01, 0.0025)
    assert steady_seconds(grown, 4) >= 5.0  # the long request ends at 10 s, at the full loop's pace
