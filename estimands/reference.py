"""The saturated reference: where a closed loop is in steady state, and its energy per token there.

A closed loop (a saturate replay, or the offline engine kept at ``--max-num-seqs``) keeps ``concurrency``
requests in flight, each sent as one ends. Its **steady part** (``steady_span``) opens when every request of
the start cohort (the first ``concurrency`` sends) has *ended*: every slot has turned over at least once, so
the synchronised prefill burst of the start and the cohort's decode are both behind it, and the batch holds
requests of every age, as it does for the rest of the run. It closes at the last send: after it the pool is
dry and the batch can no longer be refilled. (``estimands.windows.saturated_window`` snaps the same span to
energy slices.) Over it (``span_figures``):

- **energy**: the monitor's reading of the span, all of the measured devices (attributional);
- **tokens**: those processed inside the span (``estimands.tokens.tokens_in_window``): output at each chunk,
  prompt tokens spread from the send to the first token — without the engine's prefill rate, the bound that
  puts them earliest; where they fall at the span's edges (between there and all at the first token) is a
  type B term of the uncertainty;
- **J/token** = energy ÷ (input + output tokens), **J/output token** = energy ÷ output tokens, with the
  standard uncertainty of the monitor's interpolation and of the edges' prompt tokens combined. The
  sensor's own accuracy (NVML ±5 %) is a gain error: it cancels in the premium, so it is not in it.

A reference is **valid** when its steady part is at least two counter updates long, every device was read
across it, at least ``MIN_COMPLETED`` requests ended in it, none failed, **its mix is the workload's** (the
span's input ÷ output tokens within ``MIX_TOLERANCE`` of its pool's: the requests it was given) and **it is
steady** (the J/token of its two halves within ``HALVES_TOLERANCE`` of each other; ``checks``). At a power cap
J/output-token is linear in the mix, so a span that misses the cohort's prefill prices every premium high.
Pure functions: the caller reads the energy (``loadgen.reference.measure`` from the monitor; ``joulebench
report`` from the run directory; ``server.offline`` from its step log).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from estimands.prices import Prices, premium, ratio_term, work
from estimands.tokens import end_of, tokens_in_window

#: Requests that must end inside the steady part for a reference to be valid.
MIN_COMPLETED = 20
#: The span's input ÷ output tokens may differ from its pool's by this share, and its halves' J/token from
#: each other by this share, for the reference to be valid.
MIX_TOLERANCE = 0.05
HALVES_TOLERANCE = 0.05
#: A prefill rate so high that every prompt token falls at its request's first token (the other bound).
AT_FIRST_TOKEN = 1e15
#: A reference sends until ``--reference-s`` after its start cohort has ended (the load generator's
#: ``--steady-s``, read live as ``steady_span`` reads it), at most ``MAX_REFERENCE_S``: a start cohort holding a
#: request of thousands of output tokens gives a long reference, never an endless one. Its pool holds
#: ``REFERENCE_POOL_BATCHES`` × ``--max-num-seqs`` requests, more than a server completing 40 requests a second
#: sends in that time.
MAX_REFERENCE_S, REFERENCE_POOL_BATCHES = 600.0, 100


def steady_span(records: Sequence[Mapping[str, Any]], concurrency: int) -> tuple[float, float] | None:
    """The closed loop's steady part, (start, end) Unix seconds: the start cohort's last end → the last send.
    None when there is none (no more sends than the cohort, or the cohort outlasts the sends)."""
    sent = sorted((r for r in records if r.get("sent_s") is not None), key=lambda r: r["sent_s"])
    if concurrency < 1 or len(sent) <= concurrency:
        return None
    opened = max(end_of(r) for r in sent[:concurrency])  # cohort_end, on the sends already in order
    last = sent[-1]["sent_s"]
    return (opened, last) if last > opened else None


def start_cohort(records: Sequence[Mapping[str, Any]], concurrency: int) -> list[Mapping[str, Any]]:
    """The closed loop's start cohort: its first ``concurrency`` sends, in the order they were sent."""
    return sorted((r for r in records if r.get("sent_s") is not None), key=lambda r: r["sent_s"])[:concurrency]


def cohort_end(records: Sequence[Mapping[str, Any]], concurrency: int) -> float:
    """When every request of the closed loop's start cohort had ended: the latest of their ends
    (``estimands.tokens.end_of``: a request that failed ended when it was last seen)."""
    return max(end_of(r) for r in start_cohort(records, concurrency))


def capacity(records: Sequence[Mapping[str, Any]], concurrency: int) -> float | None:
    """The server's capacity for this workload: requests completed a second in the closed loop's steady part."""
    span = steady_span(records, concurrency)
    if span is None:
        return None
    t0, t1 = span
    done = sum(1 for r in records if r.get("status") == "ok" and t0 <= (r.get("last_token_s") or -math.inf) < t1)
    return done / (t1 - t0) if done else None


def pool_mix(records: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """The input and output tokens the closed loop was given (its pool: every request, as asked)."""
    return sum(int(r.get("input_tokens") or 0) for r in records), sum(int(r.get("output_tokens") or 0) for r in records)


def checks(
    span_tokens: tuple[float, float],
    pool_tokens: tuple[float, float],
    halves: Sequence[tuple[float, float, float] | None],
    ratio: float | None,
    measured: bool = True,
) -> dict[str, Any]:
    """Whether the steady part has the workload's mix and is steady: its input ÷ output tokens against its
    pool's (``MIX_TOLERANCE``), and the energy per unit of work of its first half against its second's
    (``HALVES_TOLERANCE``); each with its relative difference, and the reasons it fails.

    ``halves``: each half's (energy J, input tokens, output tokens), None where it was too short to read.
    Work is priced at the saturated prices (``estimands.prices``: r·input + output, ``ratio`` = r): a plain
    J/token of a half moves with the mix of the requests it happens to hold (±6 % between the halves of a
    steady 240-request simulation), which is the mix check's business, not a sign of a transient. Without
    prices (``ratio`` None) the halves are shown per token and not judged: an arbitrary r would decide the
    verdict. Where the energy is not ``measured`` (the
    CPU utilization estimate, a simulated GPU) the halves are shown but not judged: the model's own swings
    (±15–45 % between halves of a steady mock-server loop on a shared machine) say nothing of the server's."""
    reasons = []
    span_ratio = span_tokens[0] / span_tokens[1] if span_tokens[1] > 0 else None
    pool_ratio = pool_tokens[0] / pool_tokens[1] if pool_tokens[1] > 0 else None
    mix_off = span_ratio / pool_ratio - 1 if span_ratio is not None and pool_ratio else None
    if mix_off is None:
        reasons.append("no mix: the span or its pool has no output tokens")
    elif abs(mix_off) > MIX_TOLERANCE:
        reasons.append(
            f"not the workload's mix: the span processed {span_ratio:.3g} input tokens per output token, its pool "
            f"holds {pool_ratio:.3g} ({100 * mix_off:+.1f} %, bound ±{100 * MIX_TOLERANCE:.0f} %): a longer reference"
        )
    r = 1.0 if ratio is None else ratio
    per_work = [h[0] / (r * h[1] + h[2]) if h is not None and r * h[1] + h[2] > 0 else None for h in halves]
    first, second = per_work
    halves_off = second / first - 1 if first and second else None
    judged = measured and ratio is not None
    if not judged:
        pass
    elif halves_off is None:
        reasons.append("its halves were not both measured (each needs two counter updates)")
    elif abs(halves_off) > HALVES_TOLERANCE:
        reasons.append(
            f"not steady: its second half cost {100 * halves_off:+.1f} % per unit of work against its first "
            f"(bound ±{100 * HALVES_TOLERANCE:.0f} %)"
        )
    return {
        "mix": {"span_input_per_output": span_ratio, "pool_input_per_output": pool_ratio, "off": mix_off},
        "halves": {"j_per_work": per_work, "prefill_per_decode_token": ratio, "off": halves_off, "judged": judged},
        "reasons": reasons,
    }


def steady_seconds(records: list[dict[str, Any]], concurrency: int) -> float:
    """How long a closed loop's steady part lasted (``steady_span``); 0 when it had none."""
    span = steady_span(records, concurrency)
    return 0.0 if span is None else span[1] - span[0]


def span_figures(
    records: Sequence[Mapping[str, Any]],
    t0: float,
    t1: float,
    reading: Any,
    halves: tuple[Any, Any],
    ratio: float | None,
) -> dict[str, Any]:
    """The reference's figures over its steady part ``t0``–``t1``, from the energy ``reading`` of that span
    and of its two halves (each a ``monitor.meter`` reading: ``energy_j``, ``uncertainty_j``, ``short_window``,
    ``uncovered_s``, ``kind``, ``sources``): validity with its reasons, tokens, J/token and J/output token with
    their uncertainties, and the mix and halves ``checks`` (the halves' work priced at ``ratio``)."""
    n_in, u_in, n_out = _span_tokens(records, t0, t1)
    e, u_e = reading.energy_j, reading.uncertainty_j
    ended = [r for r in records if t0 <= (r.get("last_token_s") or -math.inf) < t1]
    failed = [r for r in records if r.get("status") != "ok"]
    reasons = []
    if reading.short_window:
        reasons.append("the steady part is shorter than two updates of the energy counter: send more requests")
    for device, missed in sorted(getattr(reading, "uncovered_s", {}).items()):
        reasons.append(f"energy incomplete: {device} was not read for {missed:.1f} s of it (stale)")
    if len(ended) < MIN_COMPLETED:
        reasons.append(f"too few requests: {len(ended)} ended in the steady part, {MIN_COMPLETED} needed")
    if failed:
        reasons.append(f"{len(failed)} request(s) did not finish ok: a reference needs every one served")
    tm = (t0 + t1) / 2
    half_work = []
    for (a, b), h in zip(((t0, tm), (tm, t1)), halves, strict=True):
        h_in, _, h_out = _span_tokens(records, a, b)
        half_work.append(None if h.short_window else (h.energy_j, h_in, h_out))
    simulated = any((d or {}).get("simulated") for d in (getattr(reading, "devices", None) or {}).values())
    check = checks(
        (n_in, n_out), pool_mix(records), half_work, ratio, "estimate" not in reading.sources and not simulated
    )
    reasons += check["reasons"]

    def per(tokens: float, u_tokens: float) -> tuple[float | None, float | None]:
        if tokens <= 0 or e <= 0:
            return None, None
        return e / tokens, e / tokens * math.hypot(u_e / e, u_tokens / tokens)

    jt, ujt = per(n_in + n_out, u_in)
    jo, ujo = per(n_out, 0.0)
    return {
        "valid": not reasons and jt is not None, "reasons": reasons or ([] if jt is not None else ["no tokens"]),
        "start_s": t0, "end_s": t1, "duration_s": t1 - t0, "energy_j": e, "uncertainty_j": u_e,
        "kind": reading.kind, "sources": list(reading.sources), "input_tokens": n_in, "input_tokens_uncertainty": u_in,
        "output_tokens": n_out, "completed": len(ended), "average_power_w": e / (t1 - t0),
        "j_per_token": jt, "uncertainty_j_per_token": ujt, "j_per_output_token": jo,
        "uncertainty_j_per_output_token": ujo, "mix": check["mix"], "halves": check["halves"],
    }  # fmt: skip


def _span_tokens(records: Sequence[Mapping[str, Any]], t0: float, t1: float) -> tuple[float, float, float]:
    """Input tokens (the middle of the two prefill bounds), their uncertainty (half the bounds' distance) and
    output tokens processed between ``t0`` and ``t1``, without the engine's prefill rate."""
    n_in, n_out = tokens_in_window(records, t0, t1)
    n_in_late = tokens_in_window(records, t0, t1, AT_FIRST_TOKEN)[0]
    return (n_in + n_in_late) / 2, abs(n_in_late - n_in) / 2, n_out


#: Why a reference gives no premium: it has no saturated prices (``loadgen.reference.measure`` fits them on the
#: steady part's energy slices; ``estimands.prices.span_prices`` needs three slices and a decode cost).
NO_PRICES = (
    "the reference has no saturated prices (its steady part was too short to fit them): no premium rather than "
    "one at a prefill price nobody measured; a longer saturate run measures them"
)


def work_price(reference: Mapping[str, Any]) -> tuple[float, float, Prices] | None:
    """The reference's price of one unit of work, b = E ÷ (r·input + output tokens) over its steady part (the
    joules of one output token's worth of work at saturation, ``estimands.prices.work``), with its standard
    uncertainty (the monitor's and where the edges' prompt tokens fall; r's own is in its prices, beside it),
    and its prices (r). None where the reference has no prices (``NO_PRICES``) or no energy or work."""
    record = reference.get("prices")
    if not record:
        return None
    prices = Prices.from_record(record)
    e = reference.get("energy_j") or 0.0
    w = work(reference.get("input_tokens") or 0.0, reference.get("output_tokens") or 0.0, prices.ratio)
    if e <= 0 or w <= 0:
        return None
    rel = math.hypot((reference.get("uncertainty_j") or 0.0) / e,
                     prices.ratio * (reference.get("input_tokens_uncertainty") or 0.0) / w)  # fmt: skip
    return e / w, e / w * rel, prices


def premiums(figures: Mapping[str, Any] | None, reference: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A run's premium over the stack's reference: its energy ÷ what its own input and output tokens cost at the
    reference's saturated prices (``estimands.prices.premium``: one premium, whichever tokens a J/token counts),
    with its standard uncertainty — the run's energy's, the reference's price's (``work_price``) and r's where
    the run's mix differs from the reference's (``estimands.prices.ratio_term``) — and, beside it, the two
    mixes (input ÷ output tokens) and r. Without prices in the reference there is no premium: ``reason`` says
    why. None without figures or a reference."""
    if not figures or not reference:
        return None
    tokens = float(figures.get("input_tokens") or 0.0), float(figures.get("output_tokens") or 0.0)
    ref_tokens = float(reference.get("input_tokens") or 0.0), float(reference.get("output_tokens") or 0.0)
    out: dict[str, Any] = {
        "reference_run_id": reference.get("run_id"), "workload": reference.get("workload"),
        "premium": None, "uncertainty_premium": None, "prefill_per_decode_token": None,
        "input_per_output": tokens[0] / tokens[1] if tokens[1] > 0 else None,
        "reference_input_per_output": ref_tokens[0] / ref_tokens[1] if ref_tokens[1] > 0 else None, "reason": None,
    }  # fmt: skip
    priced = work_price(reference)
    if priced is None:
        return out | {"reason": NO_PRICES if not reference.get("prices") else "the reference has no energy or work"}
    b, u_b, prices = priced
    out["prefill_per_decode_token"] = prices.ratio
    e = figures.get("energy_j") or 0.0
    value = premium(e, tokens, reference["energy_j"], ref_tokens, prices.ratio)
    if value is None:
        return out | {"reason": "no energy or no tokens in the run yet"}
    rel = math.hypot((figures.get("uncertainty_j") or 0.0) / e, u_b / b, ratio_term(tokens, ref_tokens, prices))
    return out | {"premium": value, "uncertainty_premium": value * rel}
