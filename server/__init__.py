"""The server side: vLLM's OpenAI server (GPU or CPU build), the weight-free model kit, offline runs."""

from server.binning import count_bins, estimate
from server.errors import ServerError
from server.launch import VllmServer, vllm_install
from server.models import PRESETS, ModelSpec, prepare_model, resolve_model
from server.offline import OfflineResult, OfflineRunner, Request
from server.options import EngineOptions

__all__ = [
    "PRESETS",
    "EngineOptions",
    "ModelSpec",
    "OfflineResult",
    "OfflineRunner",
    "Request",
    "ServerError",
    "VllmServer",
    "count_bins",
    "estimate",
    "prepare_model",
    "resolve_model",
    "vllm_install",
]
