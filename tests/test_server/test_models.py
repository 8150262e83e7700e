"""Weight-free model presets: a config and a generated tokenizer any vLLM serves with --load-format dummy."""

from __future__ import annotations

import pytest
from servers import joulebench

from server.errors import ServerError
from server.models import prepare_model, resolve_model

pytestmark = pytest.mark.integration


def test_presets_write_a_tokenizer_padded_to_the_vocabulary(tmp_path):
    from tokenizers import Tokenizer

    path = prepare_model("tiny", tmp_path)
    assert prepare_model("tiny", tmp_path) == path  # written once
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    assert tok.get_vocab_size() == 4096
    assert tok.token_to_id("<|begin_of_text|>") == 0 and tok.token_to_id("<|end_of_text|>") == 1
    assert tok.decode(tok.encode("hello world").ids) == "hello world"
    assert resolve_model(str(path), tmp_path).weights == "dummy"  # a directory without weights
    assert resolve_model("meta-llama/Llama-3.1-8B", tmp_path).weights == "real"
    with pytest.raises(ServerError, match=r"no config\.json"):
        resolve_model(str(tmp_path), tmp_path)


def test_model_writes_a_preset_where_asked_for_any_vllm(tmp_path):
    out = joulebench("model", "tiny", "--out", str(tmp_path / "tiny"))
    assert out.returncode == 0, out.stderr
    assert "--load-format dummy --served-model-name tiny" in out.stdout
    spec = resolve_model(str(tmp_path / "tiny"), tmp_path)
    assert spec.weights == "dummy" and spec.vocab_size == 4096
    assert joulebench("model", "tiny", "--out", str(tmp_path / "tiny")).returncode == 0  # kept as it is
    bad = joulebench("model", "llama-9000", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
