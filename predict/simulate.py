"""A seeded discrete-event simulation of continuous batching (vLLM v1 style), driven by a profile.

The engine runs in steps. Each step serves every running request: one decode token for each that has its
prompt done, then prompt chunks — for the running requests still in prefill, then for waiting requests
admitted in arrival order while fewer than ``max_num_seqs`` run — up to ``token_budget`` tokens in all
(chunked prefill). A step with ``n`` running requests and ``k`` prompt tokens takes ``step(n) + τ·k``
seconds and spends ``P(n)·time + γ·k`` joules (``predict.profile.Profile``); the step that finishes a
prompt gives the request its first token. With nothing running the server draws its loaded-idle power.

Between events (an arrival, a completion, a prompt to prefill) the batch is fixed, so runs of pure decode
steps are advanced in one go: the simulation costs O(requests × batch), not O(tokens).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from estimands.reference import steady_span
from predict.profile import Profile


@dataclass(frozen=True, slots=True)
class Job:
    """A request to serve: when it arrives (seconds from the simulation's start) and its lengths."""

    arrival_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Figures:
    """What happened inside a span: energy, tokens processed, mean running requests."""

    start_s: float
    end_s: float
    energy_j: float
    input_tokens: float
    output_tokens: float
    running_mean: float

    @property
    def j_per_output_token(self) -> float:
        return self.energy_j / self.output_tokens if self.output_tokens > 0 else math.nan

    @property
    def j_per_token(self) -> float:
        total = self.input_tokens + self.output_tokens
        return self.energy_j / total if total > 0 else math.nan


@dataclass(frozen=True)
class Simulation:
    """Per request: arrival, admission, first and last token (seconds); per span of the engine's time (a
    step, a run of identical decode steps, or an idle gap): its edges, running and waiting requests, energy,
    prompt tokens prefilled and output tokens given. ``chunks``: each request's (time, tokens), when asked."""

    arrival_s: np.ndarray
    admitted_s: np.ndarray
    first_token_s: np.ndarray
    last_token_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    span_start_s: np.ndarray
    span_end_s: np.ndarray
    running: np.ndarray
    waiting: np.ndarray
    energy_j: np.ndarray
    prefill_tokens: np.ndarray
    decode_tokens: np.ndarray
    chunks: list[list[tuple[float, int]]] | None = None
    idle_w: float = 0.0  # the profile's P(0): the power before the first span and after the last

    @property
    def ttft_s(self) -> np.ndarray:
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> np.ndarray:
        return self.last_token_s - self.arrival_s

    @property
    def tpot_s(self) -> np.ndarray:
        """(last − first token) ÷ (output − 1), for requests of more than one output token."""
        many = self.output_tokens > 1
        return (self.last_token_s[many] - self.first_token_s[many]) / (self.output_tokens[many] - 1)

    def figures(self, start_s: float, end_s: float) -> Figures:
        """Energy, tokens and mean running requests in [start, end]; a span cut by an edge counts in
        proportion to its time inside (a run of decode steps spreads its tokens evenly)."""
        lo, hi = self.span_start_s, self.span_end_s
        inside = np.clip(np.minimum(hi, end_s) - np.maximum(lo, start_s), 0.0, None)
        length = hi - lo
        share = np.divide(inside, length, out=np.zeros_like(inside), where=length > 0)
        # an instant span (none here, but cheap to be exact): in when its time is inside
        share = np.where(length > 0, share, ((lo >= start_s) & (lo <= end_s)).astype(float))
        dur = end_s - start_s
        # before the first span and after the last the engine is idle: P(0) for the part of [start, end] there
        first, last = (float(lo.min()), float(hi.max())) if len(lo) else (end_s, end_s)
        idle_s = max(0.0, min(end_s, first) - start_s) + max(0.0, end_s - max(start_s, last))
        return Figures(
            start_s, end_s, float(self.energy_j @ share) + self.idle_w * idle_s, float(self.prefill_tokens @ share),
            float(self.decode_tokens @ share), float(self.running @ inside) / dur if dur > 0 else math.nan,
        )  # fmt: skip


def simulate(profile: Profile, jobs: Sequence[Job], concurrency: int | None = None, chunks: bool = False) -> Simulation:
    """Serve ``jobs``. Open loop (``concurrency`` None): each arrives at its ``arrival_s`` (sorted). Closed
    loop: the first ``concurrency`` arrive at 0 and each later one when a request ends (its ``arrival_s`` is
    ignored), the way a saturate replay sends them."""
    n_jobs = len(jobs)
    inp = [int(j.input_tokens) for j in jobs]
    out = [int(j.output_tokens) for j in jobs]
    if any(i < 1 for i in inp) or any(o < 1 for o in out):
        raise ValueError("every job needs at least one input and one output token")
    closed = concurrency is not None
    if closed and concurrency < 1:
        raise ValueError(f"a closed loop needs a concurrency of at least 1, got {concurrency}")
    arrival = [0.0 if closed else float(j.arrival_s) for j in jobs]
    if not closed and any(b < a for a, b in itertools.pairwise(arrival)):
        raise ValueError("jobs must be sorted by arrival")
    max_seqs, budget_max = profile.max_num_seqs, profile.token_budget
    power = [profile.power(n) for n in range(max_seqs + 1)]
    step = [0.0] + [float(profile.step(n)) for n in range(1, max_seqs + 1)]
    tau, gamma = profile.prefill_s_per_token, profile.prefill_j_per_token

    admitted = [math.nan] * n_jobs
    first = [math.nan] * n_jobs
    last = [math.nan] * n_jobs
    rem_prefill = list(inp)
    rem_out = list(out)
    tokens: list[list[tuple[float, int]]] | None = [[] for _ in range(n_jobs)] if chunks else None
    spans: list[tuple[float, float, int, int, float, float, float]] = []
    queue: deque[int] = deque()
    running: list[int] = []
    released = min(concurrency, n_jobs) if closed else 0  # closed loop: jobs sent so far
    nxt = 0  # the next job not yet in the queue
    now = 0.0

    def arrived_by(t: float) -> None:
        nonlocal nxt
        limit = released if closed else n_jobs
        while nxt < limit and arrival[nxt] <= t:
            queue.append(nxt)
            nxt += 1

    def finish(r: int, t: float) -> None:
        nonlocal released
        last[r] = t
        if closed and released < n_jobs:
            arrival[released] = t
            released += 1

    while True:
        arrived_by(now)
        if not running and not queue:
            limit = released if closed else n_jobs
            if nxt >= limit:
                break
            spans.append((now, arrival[nxt], 0, 0, power[0] * (arrival[nxt] - now), 0.0, 0.0))
            now = arrival[nxt]
            continue
        prefilling = any(rem_prefill[r] for r in running)
        if not prefilling and not (queue and len(running) < max_seqs):
            # a run of identical decode steps, until a request ends or one can be admitted
            n = len(running)
            d = step[n]
            k = min(rem_out[r] for r in running)
            if len(running) < max_seqs and nxt < (released if closed else n_jobs):
                k = min(k, max(1, math.ceil((arrival[nxt] - now) / d - 1e-9)))
            end = now + k * d
            spans.append((now, end, n, len(queue), power[n] * k * d, 0.0, float(n * k)))
            if tokens is not None:
                times = now + d * np.arange(1, k + 1)
                for r in running:
                    tokens[r].extend((float(t), 1) for t in times)
            for r in running:
                rem_out[r] -= k
            for r in [r for r in running if rem_out[r] == 0]:
                finish(r, end)
            running = [r for r in running if rem_out[r] > 0]
            now = end
            continue
        # one step with prompt tokens in it
        decoding = [r for r in running if not rem_prefill[r]]
        budget = budget_max - len(decoding)
        chunk: dict[int, int] = {}
        for r in running:
            if rem_prefill[r] and budget > 0:
                chunk[r] = min(rem_prefill[r], budget)
                budget -= chunk[r]
        while queue and len(running) < max_seqs and budget > 0:
            r = queue.popleft()
            admitted[r] = now
            running.append(r)
            chunk[r] = min(rem_prefill[r], budget)
            budget -= chunk[r]
        n = len(running)
        k_p = sum(chunk.values())
        t = step[n] + tau * k_p
        end = now + t
        given = len(decoding)
        for r in decoding:
            rem_out[r] -= 1
            if tokens is not None:
                tokens[r].append((end, 1))
        for r, c in chunk.items():
            rem_prefill[r] -= c
            if not rem_prefill[r]:
                first[r] = end
                rem_out[r] -= 1
                given += 1
                if tokens is not None:
                    tokens[r].append((end, 1))
        spans.append((now, end, n, len(queue), power[n] * t + gamma * k_p, float(k_p), float(given)))
        for r in [r for r in running if rem_out[r] == 0]:
            finish(r, end)
        running = [r for r in running if rem_out[r] > 0]
        now = end

    s = np.array(spans, dtype=float).reshape(-1, 7)
    return Simulation(
        np.array(arrival), np.array(admitted), np.array(first), np.array(last), np.array(inp, dtype=float),
        np.array(out, dtype=float), s[:, 0], s[:, 1], s[:, 2], s[:, 3], s[:, 4], s[:, 5], s[:, 6], tokens,
        profile.idle_w,
    )  # fmt: skip


def steady_part(sim: Simulation, concurrency: int) -> tuple[float, float] | None:
    """A closed loop's steady part, by the rule a measured one is read (``estimands.reference.steady_span``:
    from when the start cohort has all ended to the last send); None when there is none."""
    records = [{"sent_s": a, "first_token_s": f, "last_token_s": e}
               for a, f, e in zip(sim.arrival_s, sim.first_token_s, sim.last_token_s, strict=True)]  # fmt: skip
    return steady_span(records, concurrency)


def as_records(sim: Simulation, epoch_s: float = 0.0) -> list[dict[str, object]]:
    """The simulation as a load generator would have recorded it (``requests.jsonl`` rows, times from
    ``epoch_s``; sent at arrival): for checking the profile's fit against a known profile."""
    if sim.chunks is None:
        raise ValueError("simulate(..., chunks=True) keeps the chunks the records need")
    return [
        {"request_id": str(i), "status": "ok", "scheduled_s": epoch_s + sim.arrival_s[i],
         "sent_s": epoch_s + sim.arrival_s[i], "first_token_s": epoch_s + sim.first_token_s[i],
         "last_token_s": epoch_s + sim.last_token_s[i], "input_tokens": int(sim.input_tokens[i]),
         "output_tokens": int(sim.output_tokens[i]), "usage_input_tokens": int(sim.input_tokens[i]),
         "usage_output_tokens": int(sim.output_tokens[i]),
         "chunks": [(epoch_s + t, c) for t, c in sim.chunks[i]]}
        for i in range(len(sim.arrival_s))
    ]  # fmt: skip


def energy_slices(sim: Simulation, edges: np.ndarray) -> np.ndarray:
    """The simulation's energy in each slice between ``edges`` (seconds of the simulation's clock)."""
    return np.array([sim.figures(a, b).energy_j for a, b in itertools.pairwise(edges)])
