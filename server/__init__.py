"""The server side: vLLM's OpenAI server (GPU or CPU build) and ``transformers serve``, the weight-free model kit,
offline runs (vLLM or HF Transformers)."""

from server.binning import count_bins, estimate
from server.errors import ServerError
from server.hf import TransformersOptions, TransformersRunner
from server.launch import TransformersServer, VllmServer, vllm_install
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
    "TransformersOptions",
    "TransformersRunner",
    "TransformersServer",
    "VllmServer",
    "count_bins",
    "estimate",
    "prepare_model",
    "resolve_model",
    "vllm_install",
]
