"""Offline serving: the same tokens as the online replay, served as batches by ``vllm.LLM.generate``.

Requests are token-id prompts of exact length with forced output lengths (``ignore_eos``,
``min_tokens``). A batch size B serves the requests B at a time, so every batch is full; the engine
is built once with ``max_num_seqs`` equal to the largest batch. Energy comes from an ``EnergyMeter``
(a running monitor, or an in-process sampler) over the generate window; the loaded-idle power is
measured just before, so J/token is given both attributional (all energy in the window) and dynamic
(less loaded-idle power × time).

``run_saturated`` measures the *saturated reference*: the engine kept full (closed loop: a request
added as each one ends, ``concurrency`` running) by driving vLLM's engine step by step, and the energy
and tokens of its steady part only — from when every request of the start cohort (the first ``concurrency``
requests) has ended (every slot has turned over) to when the pool runs out (the first step the batch can no
longer be refilled): the rule of ``estimands.reference``; its halves' energy and tokens and its pool's tokens are
kept for the mix and halves checks. Each step's log is kept with the result.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from monitor.meter import EnergyMeter
from server.errors import ServerError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Request:
    input_tokens: int
    output_tokens: int


def token_prompts(
    requests: Sequence[Request], vocab: int, seed: int | tuple[int, ...] = 0, low: int = 2
) -> list[list[int]]:
    """Deterministic token-id prompts of exactly each request's input length (ids in [low, vocab))."""
    rng = random.Random(repr(seed))
    return [[rng.randrange(low, vocab) for _ in range(r.input_tokens)] for r in requests]


@dataclass(frozen=True, slots=True)
class OfflineResult:
    batch_size: int
    requests: int
    input_tokens: int
    output_tokens: int
    duration_s: float
    energy_j: float
    uncertainty_j: float
    idle_power_w: float
    energy_kind: str
    energy_sources: list[str]
    short_window: bool = False  # shorter than two updates of the energy counter: no honest energy
    steps: int = 0  # engine steps

    @property
    def dynamic_energy_j(self) -> float:
        return self.energy_j - self.idle_power_w * self.duration_s

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        tokens = self.input_tokens + self.output_tokens
        out.update(
            average_power_w=self.energy_j / self.duration_s,
            output_tokens_per_s=self.output_tokens / self.duration_s,
            dynamic_energy_j=self.dynamic_energy_j,
            j_per_output_token=self.energy_j / self.output_tokens,
            j_per_token=self.energy_j / tokens,
            dynamic_j_per_output_token=self.dynamic_energy_j / self.output_tokens,
            dynamic_j_per_token=self.dynamic_energy_j / tokens,
            uncertainty_j_per_output_token=self.uncertainty_j / self.output_tokens,
        )
        return out


class OfflineRunner:
    """Holds one ``vllm.LLM``; ``run`` serves a request set at a batch size and measures it."""

    def __init__(self, llm_kwargs: dict[str, Any], meter: EnergyMeter, vocab: int, seed: int = 0) -> None:
        self.llm_kwargs = llm_kwargs
        self.meter = meter
        self.vocab = vocab
        self.seed = seed
        self._runs = 0
        self._llm: Any = None

    def load(self) -> None:
        try:
            from vllm import LLM
        except ImportError as err:
            raise ServerError(
                "vLLM is not importable here: pip install 'joulebench[gpu]' (or '[cpu]' for the CPU build)"
            ) from err
        self._llm = LLM(**self.llm_kwargs)

    def kv_capacity(self) -> tuple[int, int] | None:
        """The engine's KV cache: (blocks, tokens per block), as its core reported them; None if unknown."""
        if self._llm is None:
            self.load()
        cache = getattr(getattr(self._llm.llm_engine, "vllm_config", None), "cache_config", None)
        blocks, size = getattr(cache, "num_gpu_blocks", None), getattr(cache, "block_size", None)
        return (int(blocks), int(size)) if blocks and size else None

    def close(self) -> None:
        """Shut vLLM's engine core down now: left to interpreter exit, its teardown can hang."""
        llm, self._llm = self._llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    def warm_up(self, requests: Sequence[Request], max_output_tokens: int = 16) -> None:
        """Serve a batch unmeasured, outputs capped: the first batches of a fresh engine run slow."""
        from vllm import SamplingParams, TokensPrompt

        if self._llm is None:
            self.load()
        prompts = token_prompts(requests, self.vocab, (self.seed, -1))
        n = [min(r.output_tokens, max_output_tokens) for r in requests]
        params = [SamplingParams(max_tokens=k, min_tokens=k, ignore_eos=True, temperature=0.0) for k in n]
        self._llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)

    def _drive(
        self,
        requests: Sequence[Request],
        concurrency: int,
        refill: bool,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[tuple[float, int, int, int, int, int, int]]:
        """Serve ``requests`` through vLLM's engine step by step: ``concurrency`` added at once, then either
        one more as each ends (``refill``: closed loop) or the next ``concurrency`` when all have ended
        (static batches). Returns each step's (time, prefill tokens done, output tokens, requests in the
        engine, requests completed so far, requests of the start cohort with a first token, requests of the
        start cohort ended)."""
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if self._llm is None:
            self.load()
        if not requests:
            raise ServerError("no requests to serve")
        engine = self._llm.llm_engine
        # Fresh prompts for every run: a repeat of the same prompts would be served from the prefix cache.
        prompts = token_prompts(requests, self.vocab, (self.seed, self._runs))
        run = self._runs
        self._runs += 1
        queue = list(range(len(requests)))[::-1]
        started: set[int] = set()
        steps: list[tuple[float, int, int, int, int, int, int]] = []
        running = done = cohort = cohort_done = 0
        first_cohort = min(concurrency, len(requests))

        def add() -> None:
            nonlocal running
            i = queue.pop()
            r = requests[i]
            params = SamplingParams(max_tokens=r.output_tokens, min_tokens=r.output_tokens, ignore_eos=True,
                                    temperature=0.0, output_kind=RequestOutputKind.DELTA)  # fmt: skip
            engine.add_request(f"jb{run}-{i}", TokensPrompt(prompt_token_ids=prompts[i]), params)
            running += 1

        def fill() -> None:
            if running == 0 or refill:
                while queue and running < concurrency:
                    add()

        fill()
        while running:
            outputs = engine.step()
            t = time.time()  # the monitor's clock (Unix seconds); an HTTP call per step would cost steps
            step_in = step_out = 0
            for o in outputs:
                i = int(o.request_id.rsplit("-", 1)[1])
                if i not in started:
                    started.add(i)
                    step_in += requests[i].input_tokens
                    cohort += i < first_cohort
                step_out += len(o.outputs[0].token_ids)
                if o.finished:
                    running -= 1
                    done += 1
                    cohort_done += i < first_cohort
            fill()  # before the step is recorded: its count is what the engine holds for the next step
            steps.append((t, step_in, step_out, running, done, cohort, cohort_done))
            if progress is not None:
                progress(done, len(requests))
        return steps

    def _result(self, requests: Sequence[Request], batch_size: int, idle_w: float, t0: float, t1: float,
                steps: list[tuple[float, int, int, int, int, int, int]]) -> OfflineResult:  # fmt: skip
        served = (sum(x[1] for x in steps), sum(x[2] for x in steps))
        return measured("vLLM", self.meter, t0, t1, requests, batch_size, served, idle_w, len(steps))

    def run(
        self,
        requests: Sequence[Request],
        batch_size: int,
        idle_w: float,
        progress: Callable[[int, int], None] | None = None,
    ) -> OfflineResult:
        """Serve ``requests`` in static batches of ``batch_size`` (all at once when it is at least their
        number: vLLM then keeps up to ``max_num_seqs`` running) and measure the whole run."""
        t0 = self.meter.now()
        steps = self._drive(requests, batch_size, refill=False, progress=progress)
        return self._result(requests, batch_size, idle_w, t0, self.meter.now(), steps)

    def run_saturated(
        self,
        requests: Sequence[Request],
        concurrency: int,
        idle_w: float,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """The saturated reference: ``requests`` served closed-loop at ``concurrency`` running, and the
        energy per token of its steady part (see the module's docstring). Returns the whole run's
        ``OfflineResult`` summary with a ``steady`` part: its window, tokens, energy and J/token."""
        if len(requests) < 2 * concurrency:
            raise ServerError(f"a saturated reference needs at least two batches: {len(requests)} < 2 × {concurrency}")
        t0 = self.meter.now()
        steps = self._drive(requests, concurrency, refill=True, progress=progress)
        result = self._result(requests, concurrency, idle_w, t0, self.meter.now(), steps).summary()
        # Steady: from the step by which the start cohort has all ended to the first step after which the batch
        # can no longer be refilled (every request added, fewer in the engine than the concurrency).
        n = len(requests)
        a = next((x[0] for x in steps if x[6] >= concurrency), None)
        b = next((t for t, _, _, left, done, *_ in steps if a is not None and t > a and left + done == n
                  and left < concurrency), None)  # fmt: skip
        if a is None or b is None:
            raise ServerError("the saturated run had no steady part: give it more requests")
        inside = [x for x in steps if a < x[0] <= b]
        reading = self.meter.energy(a, b)
        w_in, w_out = sum(x[1] for x in inside), sum(x[2] for x in inside)
        m = (a + b) / 2
        halves = []  # each half's energy and tokens: ``compare.analysis`` checks them at the run's prices
        for lo, hi in ((a, m), (m, b)):
            half = self.meter.energy(lo, hi)
            tokens = [sum(x[c] for x in inside if lo < x[0] <= hi) for c in (1, 2)]
            halves.append(None if half.short_window else {"energy_j": half.energy_j, "input_tokens": tokens[0],
                                                          "output_tokens": tokens[1]})  # fmt: skip
        pool = [sum(r.input_tokens for r in requests), sum(r.output_tokens for r in requests)]
        dyn = reading.energy_j - idle_w * (b - a)
        result["steady"] = {
            "start_s": a, "end_s": b, "duration_s": b - a, "steps": len(inside),
            "running_min": min(x[3] for x in inside[:-1] or inside), "running_max": max(x[3] for x in inside),
            "input_tokens": w_in, "output_tokens": w_out, "energy_j": reading.energy_j,
            "uncertainty_j": reading.uncertainty_j, "short_window": reading.short_window,
            "average_power_w": reading.energy_j / (b - a), "dynamic_energy_j": dyn,
            "j_per_output_token": reading.energy_j / w_out, "j_per_token": reading.energy_j / (w_in + w_out),
            "dynamic_j_per_output_token": dyn / w_out, "dynamic_j_per_token": dyn / (w_in + w_out),
            "uncertainty_j_per_output_token": reading.uncertainty_j / w_out,
            "output_tokens_per_s": w_out / (b - a), "idle_share": min(1.0, idle_w * (b - a) / reading.energy_j),
            "completion_rate_per_s": (inside[-1][4] - inside[0][4]) / (b - a),
            "pool_tokens": pool, "halves_measured": halves,
        }  # fmt: skip
        columns = ["t_s", "prefill_tokens", "output_tokens", "in_engine", "completed", "cohort_started", "cohort_ended"]
        result["steps_log"] = {"columns": columns, "rows": [list(x) for x in steps]}
        return result


def measured(
    engine: str,
    meter: EnergyMeter,
    t0: float,
    t1: float,
    requests: Sequence[Request],
    batch_size: int,
    served: tuple[int, int],
    idle_w: float,
    steps: int = 0,
) -> OfflineResult:
    """The result of serving ``requests`` between ``t0`` and ``t1``; refused if the tokens ``served`` (in, out)
    are not the ones asked."""
    reading = meter.energy(t0, t1)
    want = (sum(r.input_tokens for r in requests), sum(r.output_tokens for r in requests))
    if served != want:
        raise ServerError(f"{engine} served {served[0]}/{served[1]} tokens in/out, asked {want[0]}/{want[1]}")
    return OfflineResult(
        batch_size=batch_size,
        requests=len(requests),
        input_tokens=served[0],
        output_tokens=served[1],
        duration_s=t1 - t0,
        energy_j=reading.energy_j,
        uncertainty_j=reading.uncertainty_j,
        idle_power_w=idle_w,
        energy_kind=reading.kind,
        energy_sources=reading.sources,
        short_window=reading.short_window,
        steps=steps,
    )
