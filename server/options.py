"""The optimization axes of Fernandez et al. 2025, passed through to vLLM and recorded with every result."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Any

from server.errors import ServerError
from server.models import ModelSpec

#: vLLM's --dtype values.
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """One description of how vLLM runs, for both the server (CLI flags) and offline (``LLM`` kwargs)."""

    max_num_seqs: int | None = None  # the max batch size
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    quantization: str | None = None
    enforce_eager: bool = False  # eager vs compiled with CUDA graphs
    prefix_caching: bool | None = None  # None: vLLM's default
    chunked_prefill: bool | None = None
    speculative_config: dict[str, Any] | None = None
    gpu_memory_utilization: float | None = None
    seed: int = 0

    def record(self) -> dict[str, Any]:
        return asdict(self)

    def cli_args(self, spec: ModelSpec) -> list[str]:
        args = [
            "--model",
            spec.model,
            "--served-model-name",
            spec.name,
            "--dtype",
            self.dtype,
            "--seed",
            str(self.seed),
        ]
        if spec.load_format:
            args += ["--load-format", spec.load_format]
        for flag, value in (
            ("--max-num-seqs", self.max_num_seqs),
            ("--max-model-len", self.max_model_len),
            ("--quantization", self.quantization),
            ("--gpu-memory-utilization", self.gpu_memory_utilization),
        ):
            if value is not None:
                args += [flag, str(value)]
        if self.tensor_parallel_size != 1:
            args += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.enforce_eager:
            args.append("--enforce-eager")
        if self.prefix_caching is not None:
            args.append("--enable-prefix-caching" if self.prefix_caching else "--no-enable-prefix-caching")
        if self.chunked_prefill is not None:
            args.append("--enable-chunked-prefill" if self.chunked_prefill else "--no-enable-chunked-prefill")
        if self.speculative_config is not None:
            args += ["--speculative-config", json.dumps(self.speculative_config)]
        return args

    def engine_arguments(self) -> list[str]:
        """The flags of ``add_engine_arguments`` that give these options back (all but ``--model``)."""
        args = [
            "--dtype",
            self.dtype,
            "--seed",
            str(self.seed),
            "--tensor-parallel-size",
            str(self.tensor_parallel_size),
        ]
        for flag, value in (
            ("--max-model-len", self.max_model_len),
            ("--quantization", self.quantization),
            ("--gpu-memory-utilization", self.gpu_memory_utilization),
        ):
            if value is not None:
                args += [flag, str(value)]
        if self.enforce_eager:
            args.append("--enforce-eager")
        for flag, value in (("prefix-caching", self.prefix_caching), ("chunked-prefill", self.chunked_prefill)):
            if value is not None:
                args.append(f"--{flag}" if value else f"--no-{flag}")
        if self.speculative_config is not None:
            args += ["--speculative-config", json.dumps(self.speculative_config)]
        return args

    def llm_kwargs(self, spec: ModelSpec) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": spec.model,
            "served_model_name": spec.name,
            "dtype": self.dtype,
            "seed": self.seed,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enforce_eager": self.enforce_eager,
        }
        if spec.load_format:
            kw["load_format"] = spec.load_format
        for key in ("max_num_seqs", "max_model_len", "quantization", "gpu_memory_utilization", "speculative_config"):
            value = getattr(self, key)
            if value is not None:
                kw[key] = value
        if self.prefix_caching is not None:
            kw["enable_prefix_caching"] = self.prefix_caching
        if self.chunked_prefill is not None:
            kw["enable_chunked_prefill"] = self.chunked_prefill
        return kw


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("engine (passed to vLLM and recorded with every result)")
    g.add_argument("--model", default="tiny", help="a preset, a model directory or a hub id (default: %(default)s)")
    g.add_argument("--max-model-len", type=int, help="context length (default: the model's, capped on CPU)")
    g.add_argument("--tensor-parallel-size", type=int, default=1)
    g.add_argument("--dtype", default="auto", help="auto, bfloat16, float16, float32 (default: %(default)s)")
    g.add_argument("--quantization", help="e.g. fp8 (default: none)")
    g.add_argument("--enforce-eager", action="store_true", help="eager mode: no torch.compile, no CUDA graphs")
    g.add_argument("--prefix-caching", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--chunked-prefill", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--speculative-config", type=json.loads, help="JSON, as vLLM's --speculative-config")
    g.add_argument("--gpu-memory-utilization", type=float)
    g.add_argument("--seed", type=int, default=0)


def check_engine_arguments(args: argparse.Namespace) -> None:
    """The engine options' values, before vLLM is started: a ``ServerError`` naming the option."""
    if not args.model.strip():
        raise ServerError("--model: give a preset, a model directory or a hub id")
    if args.max_model_len is not None and not 2 <= args.max_model_len < 2**31:
        raise ServerError(f"--max-model-len {args.max_model_len}: give a context of at least 2 tokens")
    if not 1 <= args.tensor_parallel_size <= 1024:
        raise ServerError(f"--tensor-parallel-size {args.tensor_parallel_size}: give 1 or more GPUs")
    if args.dtype not in DTYPES:
        raise ServerError(f"--dtype {args.dtype!r}: give one of {', '.join(DTYPES)}")
    if args.gpu_memory_utilization is not None and not 0 < args.gpu_memory_utilization <= 1:
        raise ServerError(f"--gpu-memory-utilization {args.gpu_memory_utilization}: give a fraction in (0, 1]")
    if args.speculative_config is not None and not isinstance(args.speculative_config, dict):
        raise ServerError("--speculative-config: give a JSON object, as vLLM's")
    if not 0 <= args.seed < 2**32:
        raise ServerError(f"--seed {args.seed}: give 0 to {2**32 - 1}")


def cpu_defaults(args: argparse.Namespace, spec_max_len: int | None, cpu: bool) -> None:
    """On vLLM's CPU build, a context of at most 16384 unless ``--max-model-len`` says: the CPU KV cache is small."""
    if cpu and args.max_model_len is None and spec_max_len is not None:
        args.max_model_len = min(spec_max_len, 16384)


def engine_options(args: argparse.Namespace, max_num_seqs: int | None = None) -> EngineOptions:
    return EngineOptions(
        max_num_seqs=max_num_seqs,
        max_model_len=args.max_model_len,
        tensor_parallel_size=args.tensor_parallel_size,
        dtype=args.dtype,
        quantization=args.quantization,
        enforce_eager=args.enforce_eager,
        prefix_caching=args.prefix_caching,
        chunked_prefill=args.chunked_prefill,
        speculative_config=args.speculative_config,
        gpu_memory_utilization=args.gpu_memory_utilization,
        seed=args.seed,
    )
