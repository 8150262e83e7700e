"""Model presets and the weight-free model kit.

A preset names a real architecture by its Hugging Face ``config.json``. ``prepare_model`` writes a model
directory with that config and a generated tokenizer (a byte-level BPE trained in seconds on a
synthetic corpus, its vocabulary padded to the config's ``vocab_size``), offline. vLLM serves it with
``--load-format dummy``: random weights, so with forced input and output lengths the compute, and so
the energy, is that of the real architecture. Every result records that the weights were dummy.

A path to a model directory, or a hub id, passes through unchanged for users who have weights.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from server.errors import ServerError

_LLAMA3_ROPE = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3",
}


def _llama(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "mlp_bias": False,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    base.update(over)
    return base


#: Architectures by preset name: the shapes of the published configs (weights never needed).
PRESETS: dict[str, dict[str, Any]] = {
    "llama-3.1-8b": _llama(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, max_position_embeddings=131072,
        rope_theta=500000.0, rope_scaling=_LLAMA3_ROPE,
    ),
    "llama-3.2-1b": _llama(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=131072,
        rope_theta=500000.0, tie_word_embeddings=True, rope_scaling={**_LLAMA3_ROPE, "factor": 32.0},
    ),
    "qwen2.5-7b": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
        "max_window_layers": 28, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "sliding_window": 131072,
        "use_sliding_window": False, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "use_cache": True, "bos_token_id": 0, "eos_token_id": 1,
    },
    "mistral-7b": {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu",
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 32768, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "use_cache": True, "bos_token_id": 0, "eos_token_id": 1,
    },
    # Two layers, for CPUs and tests: real Llama code paths at a toy size.
    "tiny": _llama(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, vocab_size=4096, max_position_embeddings=16384,
        rope_theta=10000.0, torch_dtype="float32",
    ),
}  # fmt: skip

#: Where presets' model directories are written unless ``--model-cache`` says.
DEFAULT_CACHE = Path.home() / ".cache" / "joulebench" / "models"
SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>")
#: Prompts are drawn from the trained part of the vocabulary (ids below this), never from the padding.
TRAINED_VOCAB = 2048
_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What to serve: a path or hub id, and whether its weights are real."""

    model: str  # a directory or a hub id, as vLLM takes it
    name: str  # the name requests use (served-model-name)
    weights: Literal["dummy", "real"]
    preset: str | None
    max_position_embeddings: int | None
    vocab_size: int | None
    parameters: int | None = None  # counted from the config (decoder-only transformers), None if unknown

    @property
    def load_format(self) -> str | None:
        return "dummy" if self.weights == "dummy" else None


def parameter_count(config: dict[str, Any]) -> int | None:
    """Parameters of a Llama-like decoder (grouped-query attention, gated MLP, RMS norms) from its config:
    embeddings (and an untied output head), per layer q/k/v/o and the three MLP matrices and two norms,
    and the final norm. None when the config lacks a size this needs."""
    try:
        h, inter, layers, vocab = (int(config[k]) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                             "vocab_size"))  # fmt: skip
        heads = int(config["num_attention_heads"])
        kv = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or h // heads)
    except (KeyError, TypeError, ValueError):
        return None
    attention = h * heads * head_dim * 2 + h * kv * head_dim * 2  # q and o; k and v
    if config.get("attention_bias") or config.get("model_type") == "qwen2":  # Qwen2 has q/k/v biases
        attention += heads * head_dim + 2 * kv * head_dim
    per_layer = attention + 3 * h * inter + 2 * h
    embeddings = vocab * h * (1 if config.get("tie_word_embeddings") else 2)
    return layers * per_layer + embeddings + h


def resolve_model(name: str, cache_dir: Path) -> ModelSpec:
    """A preset name (model written under ``cache_dir``), a local model directory, or a hub id."""
    key = name.lower()
    if key in PRESETS:
        path = prepare_model(key, cache_dir)
        config = PRESETS[key]
        return ModelSpec(
            model=str(path), name=key, weights="dummy", preset=key,
            max_position_embeddings=config["max_position_embeddings"], vocab_size=config["vocab_size"],
            parameters=parameter_count(config),
        )  # fmt: skip
    path = Path(name).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ServerError(f"{path} has no config.json: is it a Hugging Face model directory?")
        config = json.loads(config_file.read_text())
        has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
        return ModelSpec(
            model=str(path), name=path.name, weights="real" if has_weights else "dummy", preset=None,
            max_position_embeddings=config.get("max_position_embeddings"), vocab_size=config.get("vocab_size"),
            parameters=parameter_count(config),
        )  # fmt: skip
    if "/" in name and not name.startswith((".", "/", "~")):
        return ModelSpec(
            model=name, name=name, weights="real", preset=None, max_position_embeddings=None, vocab_size=None
        )
    raise ServerError(
        f"unknown model {name!r}: use a preset ({', '.join(PRESETS)}), a model directory, or a hub id (org/name)"
    )


def _preset(preset: str) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ServerError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def prepare_model(preset: str, cache_dir: Path) -> Path:
    """Write (once) a weight-free model directory for ``preset`` under ``cache_dir`` and return it."""
    digest = hashlib.sha256(json.dumps(_preset(preset), sort_keys=True).encode()).hexdigest()[:10]
    return write_model(preset, Path(cache_dir) / f"{preset}-{digest}")


def write_model(preset: str, path: Path) -> Path:
    """Write ``preset``'s weight-free model directory at ``path`` unless it is there already."""
    config = _preset(preset)
    if (path / "tokenizer.json").is_file() and (path / "config.json").is_file():
        return path
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    _write_tokenizer(tmp, config["vocab_size"])
    (tmp / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 0, "eos_token_id": 1, "do_sample": False}) + "\n"
    )
    (tmp / "README.md").write_text(
        f"Weight-free {preset} written by joulebench: the architecture's config.json and a generated "
        "tokenizer. Serve with --load-format dummy (random weights). Not a usable language model.\n"
    )
    tmp.rename(path)
    return path


def _corpus(lines: int = 4000, seed: int = 0) -> list[str]:
    """Deterministic pseudo-text: enough structure for BPE to learn a few thousand merges."""
    rng = random.Random(seed)
    syllables = [a + b for a in "bcdfghklmnprstvwz" for b in "aeiouy"] + list("aeiou")
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    punct = [".", ",", "?", "!", ":", ";", " -", "()", "0", "42", "2024", "\n"]
    return [
        " ".join(rng.choice(words) if rng.random() > 0.08 else rng.choice(punct) for _ in range(rng.randint(5, 30)))
        for _ in range(lines)
    ]


def _write_tokenizer(path: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    trained = min(TRAINED_VOCAB, vocab_size - len(SPECIAL_TOKENS))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=trained + len(SPECIAL_TOKENS),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    # Pad the vocabulary to the model's size with tokens no merge produces, so every id the model can
    # emit decodes, and the tokenizer's length matches the config.
    n = len(vocab)
    while n < vocab_size:
        vocab[f"<|reserved_{n}|>"] = n
        n += 1
    (path / "tokenizer.json").write_text(json.dumps(spec))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": SPECIAL_TOKENS[0],
                "eos_token": SPECIAL_TOKENS[1],
                "pad_token": SPECIAL_TOKENS[1],
                "model_max_length": 1 << 20,
                "clean_up_tokenization_spaces": False,
                "chat_template": _CHAT_TEMPLATE,
            },
            indent=2,
        )
        + "\n"
    )
    (path / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": SPECIAL_TOKENS[0], "eos_token": SPECIAL_TOKENS[1]}) + "\n"
    )
