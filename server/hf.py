"""The HF Transformers engine: the same offline requests as vLLM's runner, served by ``model.generate()``.

Fernandez et al. (ACL 2025) compare vLLM against "unoptimized PyTorch + HF Transformers"; this is that
baseline. A preset's config is built with random weights initialised on the device (``from_config``
under ``torch.device``: an 8B model starts in seconds, nothing is read from disk), SDPA attention.
Batches are static: the requests are served ``batch_size`` at a time, each batch one ``generate()``
call, left-padded to its longest prompt, and every row generates the batch's longest output length
(``min_new_tokens`` = ``max_new_tokens``, so EOS cannot end a row early). The tokens counted are the
requests' own; the padding a mixed batch computes is the engine's cost, as it is HF's in practice.
``compile=True`` uses a static KV cache, with which ``generate()`` compiles the forward pass with
``torch.compile`` (transformers' own way; ``CompileConfig``, also off-GPU); each batch shape is
compiled in unmeasured batches before its energy window.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from monitor.meter import EnergyMeter
from server.errors import ServerError
from server.models import ModelSpec
from server.offline import OfflineResult, Request, measured, token_prompts

log = logging.getLogger(__name__)

#: What the offline record says about how batches are formed.
STATIC_BATCHES = (
    "static: requests are served batch-size at a time, one generate() call each, left-padded to the batch's "
    "longest prompt; every row generates the batch's longest output (EOS suppressed). Tokens counted are the "
    "requests' own; padded compute is the engine's cost"
)


@dataclass(frozen=True, slots=True)
class TransformersInstall:
    transformers: str
    torch: str


def transformers_install() -> TransformersInstall:
    """The installed transformers and torch; a one-line error saying what to install if either is missing."""
    try:
        return TransformersInstall(importlib.metadata.version("transformers"), importlib.metadata.version("torch"))
    except importlib.metadata.PackageNotFoundError as err:
        raise ServerError(
            f"{err.name} is not installed: pip install 'joulebench[gpu]' (or '[cpu]'), which bring transformers and "
            "torch with vLLM"
        ) from None


@dataclass(frozen=True, slots=True)
class TransformersOptions:
    """How ``generate()`` runs; recorded with every result."""

    compile: bool = False  # torch.compile through a static cache, vs eager with a dynamic cache
    dtype: str = "auto"  # "auto": the config's torch_dtype
    device: str = "auto"  # "auto": cuda if there is one, else cpu
    attn_implementation: str = "sdpa"
    seed: int = 0

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "cache": "static" if self.compile else "dynamic"}


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, config: Any) -> Any:
    """A torch dtype from ``dtype`` ("auto": the config's own, float32 if it names none)."""
    import torch

    name = dtype
    if dtype == "auto":
        configured = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        name = str(configured or "float32").removeprefix("torch.")
    resolved = getattr(torch, name, None)
    if not isinstance(resolved, torch.dtype):
        raise ServerError(f"--dtype {dtype!r}: not a torch dtype (auto, bfloat16, float16, float32)")
    return resolved


class TransformersRunner:
    """Holds one HF model; ``run`` serves a request set at a batch size and measures it (as ``OfflineRunner``)."""

    def __init__(
        self, spec: ModelSpec, options: TransformersOptions, meter: EnergyMeter, vocab: int, seed: int = 0
    ) -> None:
        self.spec = spec
        self.options = options
        self.meter = meter
        self.vocab = vocab
        self.seed = seed
        self._runs = 0
        self._model: Any = None
        self._device = ""
        self._pad_id = 0
        self._eos_id: int | None = None
        self._compiled: set[tuple[int, int, int]] = set()  # (rows, prompt length, output length) warmed

    def load(self) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        transformers_install()
        config = AutoConfig.from_pretrained(self.spec.model)
        dtype = resolve_dtype(self.options.dtype, config)
        self._device = resolve_device(self.options.device)
        attn = self.options.attn_implementation
        torch.manual_seed(self.options.seed)
        if self.spec.weights == "real":
            model = AutoModelForCausalLM.from_pretrained(self.spec.model, dtype=dtype, attn_implementation=attn)
            model = model.to(self._device)
        else:
            # Built under the device: parameters are allocated and randomly initialised there, not on the CPU.
            with torch.device(self._device):
                model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
        self._model = model.eval()
        eos = config.eos_token_id
        self._eos_id = eos[0] if isinstance(eos, list) else eos
        # Padding is EOS: EOS is suppressed until the last token, so a pad in the output is a row that stopped.
        self._pad_id = 0 if self._eos_id is None else int(self._eos_id)

    def close(self) -> None:
        import gc

        import torch

        self._model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def about(self) -> dict[str, Any]:
        """What the record says about the engine."""
        install = transformers_install()
        return {
            "name": "transformers",
            "transformers": install.transformers,
            "torch": install.torch,
            "device": self._device or resolve_device(self.options.device),
            "weights_initialised": "on the device (from_config)" if self.spec.weights == "dummy" else "loaded",
            "options": self.options.record(),
        }

    def _generation_config(self, new_tokens: int) -> Any:
        from transformers import CompileConfig, GenerationConfig

        kwargs: dict[str, Any] = {}
        if self.options.compile:
            compile_config = CompileConfig()
            # transformers compiles on its own only on accelerators; this asks for it on the CPU too.
            compile_config._compile_all_devices = True
            kwargs = {"cache_implementation": "static", "compile_config": compile_config}
        return GenerationConfig(
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=self._eos_id,
            pad_token_id=self._pad_id,
            use_cache=True,
            **kwargs,
        )

    def _generate(self, prompts: Sequence[list[int]], new_tokens: int) -> tuple[int, list[int]]:
        """One static batch; (prompt tokens, tokens generated per row before any row stopped)."""
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)  # left padding: generation continues
            mask[row, width - len(p) :] = 1
        out = self._model.generate(  # generate() runs under no_grad itself
            input_ids=ids.to(self._device),
            attention_mask=mask.to(self._device),
            generation_config=self._generation_config(new_tokens),
        )
        generated = out[:, width:].cpu()  # also waits for the device
        if self._eos_id is None:  # nothing can stop a row early
            return int(mask.sum()), [generated.shape[1]] * len(prompts)
        # A row that stopped early is padded from there on: count only what it generated.
        return int(mask.sum()), (generated != self._pad_id).sum(dim=1).tolist()

    def _warm_compiled(self, shape: tuple[int, int, int], seed: tuple[int, ...]) -> None:
        """Two unmeasured batches of ``shape``: the first compiles; the second still ran 6× slower than the
        third on the CPU (and CUDA graphs are recorded on a second call), later ones are steady."""
        rows, n_in, n_out = shape
        for k in range(2):
            self._generate(token_prompts([Request(n_in, n_out)] * rows, self.vocab, (*seed, k)), n_out)
        self._compiled.add(shape)

    def warm_up(self, requests: Sequence[Request], max_output_tokens: int = 16) -> None:
        """Serve a batch unmeasured, outputs capped; compiled, at the batch's full shape (that is what compiles)."""
        if self._model is None:
            self.load()
        if self.options.compile:
            self._warm_compiled(_shape(requests), (self.seed, -1))
            return
        prompts = token_prompts(requests, self.vocab, (self.seed, -1))
        self._generate(prompts, min(max(r.output_tokens for r in requests), max_output_tokens))

    def run(
        self,
        requests: Sequence[Request],
        batch_size: int,
        idle_w: float,
        progress: Callable[[int, int], None] | None = None,
    ) -> OfflineResult:
        if self._model is None:
            self.load()
        if not requests:
            raise ServerError("no requests to serve")
        chunks = [list(requests[i : i + batch_size]) for i in range(0, len(requests), batch_size)]
        if self.options.compile:  # compile every new shape before the window, not inside it
            for shape in sorted({_shape(c) for c in chunks} - self._compiled):
                self._warm_compiled(shape, (self.seed, -2, *shape))
        prompts = token_prompts(requests, self.vocab, (self.seed, self._runs))
        self._runs += 1
        n_in = n_out = done = 0
        t0 = self.meter.now()
        for chunk in chunks:
            n_new = max(r.output_tokens for r in chunk)
            served_in, per_row = self._generate(prompts[done : done + len(chunk)], n_new)
            if any(k != n_new for k in per_row):
                raise ServerError(f"transformers generated {per_row} tokens per row, asked {n_new} for every row")
            n_in += served_in
            n_out += sum(r.output_tokens for r in chunk)  # the requests' own; the rest is padding
            done += len(chunk)
            if progress is not None:
                progress(done, len(requests))
        return measured("transformers", self.meter, t0, self.meter.now(), requests, batch_size, (n_in, n_out), idle_w)


def _shape(batch: Sequence[Request]) -> tuple[int, int, int]:
    return len(batch), max(r.input_tokens for r in batch), max(r.output_tokens for r in batch)


def random_weights_dir(spec: ModelSpec) -> Path:
    """A directory ``transformers serve`` loads as random weights: the preset's files and a checkpoint with no
    tensors, so transformers initialises every weight (on the device it loads to) and says they were missing.

    ``transformers serve`` reads weights from its model directory and has no dummy format; this costs no disk
    for any model size. Written beside the preset's directory, once.
    """
    if spec.weights != "dummy":
        raise ServerError(f"{spec.model} has weights: serve it as it is")
    src = Path(spec.model)
    dst = src.with_name(src.name + "-hf-random")
    if (dst / "model.safetensors").is_file():
        return dst
    from safetensors.torch import save_file

    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    save_file({}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "README.md").write_text(
        (src / "README.md").read_text()
        + "This copy has a checkpoint with no tensors: transformers initialises every weight randomly at load.\n"
    )
    (tmp / "joulebench.json").write_text(json.dumps({"weights": "dummy", "from": str(src)}) + "\n")
    tmp.rename(dst)
    return dst
