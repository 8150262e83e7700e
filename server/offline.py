"""Offline serving: the same tokens as the online replay, served as batches by ``vllm.LLM.generate``.

Requests are token-id prompts of exact length with forced output lengths (``ignore_eos``,
``min_tokens``). A batch size B serves the requests B at a time, so every batch is full; the engine
is built once with ``max_num_seqs`` equal to the largest batch. Energy comes from an ``EnergyMeter``
(a running monitor, or an in-process sampler) over the generate window; the loaded-idle power is
measured just before, so J/token is given both attributional (all energy in the window) and dynamic
(less loaded-idle power × time).
"""

from __future__ import annotations

import logging
import random
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

    def run(
        self,
        requests: Sequence[Request],
        batch_size: int,
        idle_w: float,
        progress: Callable[[int, int], None] | None = None,
    ) -> OfflineResult:
        from vllm import SamplingParams, TokensPrompt

        if self._llm is None:
            self.load()
        if not requests:
            raise ServerError("no requests to serve")
        # Fresh prompts for every run: a repeat of the same prompts would be served from the prefix cache.
        prompts = token_prompts(requests, self.vocab, (self.seed, self._runs))
        self._runs += 1
        params = [
            SamplingParams(max_tokens=r.output_tokens, min_tokens=r.output_tokens, ignore_eos=True, temperature=0.0)
            for r in requests
        ]
        n_in = n_out = 0
        t0 = self.meter.now()
        for start in range(0, len(requests), batch_size):
            chunk = slice(start, start + batch_size)
            outputs = self._llm.generate(
                [TokensPrompt(prompt_token_ids=p) for p in prompts[chunk]], params[chunk], use_tqdm=False
            )
            for o in outputs:
                n_in += len(o.prompt_token_ids)
                n_out += len(o.outputs[0].token_ids)
            if progress is not None:
                progress(min(start + batch_size, len(requests)), len(requests))
        return measured("vLLM", self.meter, t0, self.meter.now(), requests, batch_size, (n_in, n_out), idle_w)


def measured(
    engine: str,
    meter: EnergyMeter,
    t0: float,
    t1: float,
    requests: Sequence[Request],
    batch_size: int,
    served: tuple[int, int],
    idle_w: float,
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
    )
