"""The HF Transformers engine on the CPU with the tiny preset: offline beside vLLM, and ``transformers serve``.

Real engines throughout: transformers' ``generate()`` on a randomly initialised tiny Llama, vLLM's CPU
build, and ``transformers serve`` with continuous batching, replayed against by joulebench's own replay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from servers import joulebench, started

from joulebench.processes import free_port
from loadgen.records import read_records
from monitor.meter import LocalMeter
from server.errors import ServerError
from server.hf import TransformersOptions, TransformersRunner, random_weights_dir
from server.launch import TransformersServer
from server.models import resolve_model
from server.offline import Request


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return resolve_model("tiny", tmp_path_factory.mktemp("models"))


def test_a_mixed_static_batch_counts_the_requests_own_tokens(tiny):
    meter = LocalMeter("estimate")
    runner = TransformersRunner(tiny, TransformersOptions(device="cpu"), meter, vocab=2000)
    try:
        runner.load()
        assert next(runner._model.parameters()).device.type == "cpu"
        assert runner._model.config._attn_implementation == "sdpa"
        requests = [Request(40, 6), Request(17, 9), Request(33, 2), Request(40, 9), Request(5, 1)]
        result = runner.run(requests, batch_size=2, idle_w=0.0)
    finally:
        runner.close()
        meter.close()
    # Left-padded to each batch's longest prompt, every row generating the batch's longest output: the
    # counts are the requests' own, the padding is the engine's cost.
    assert (result.requests, result.input_tokens, result.output_tokens) == (5, 135, 27)
    assert result.energy_j > 0 and result.duration_s > 0 and result.energy_sources == ["estimate"]


def test_the_record_says_what_ran(tiny):
    runner = TransformersRunner(tiny, TransformersOptions(compile=True), LocalMeter("estimate"), vocab=2000)
    try:
        about = runner.about()
    finally:
        runner.meter.close()
    assert about["name"] == "transformers" and about["transformers"] and about["torch"]
    assert about["options"]["compile"] and about["options"]["cache"] == "static"
    assert about["options"]["attn_implementation"] == "sdpa"


def test_random_weights_dir_holds_no_tensor_and_is_kept(tiny):
    from safetensors import safe_open

    path = random_weights_dir(tiny)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert list(f.keys()) == []
    assert (path / "config.json").read_text() == (Path(tiny.model) / "config.json").read_text()
    assert random_weights_dir(tiny) == path
    assert resolve_model(str(path), path.parent).weights == "real"  # why it is not the preset's own directory
    with pytest.raises(ServerError, match="has weights"):
        random_weights_dir(resolve_model(str(path), path.parent))


def test_a_bad_engine_list_is_one_line():
    out = joulebench("offline", "--engines", "vllm,hf")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "--engines 'vllm,hf'" in out.stderr and "transformers" in out.stderr


def test_serving_compiled_is_refused_in_one_line(tmp_path):
    out = joulebench("serve", "--engine", "transformers", "--compile", "--model-cache", str(tmp_path),
                     "--log-dir", str(tmp_path), "--port", str(free_port()))  # fmt: skip
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "does not compile with continuous batching" in out.stderr


OFFLINE = ["--model", "tiny", "--input-tokens", "48", "--output-tokens", "12", "--max-model-len", "1024",
           "--source", "estimate", "--idle-max-s", "4"]  # fmt: skip


@pytest.mark.integration
def test_both_engines_offline_give_the_reduction_per_batch_size(tmp_path):
    out = tmp_path / "frameworks.json"
    cmd = [sys.executable, "-m", "joulebench", "offline", "--engines", "vllm,transformers", *OFFLINE,
           "--model-cache", str(tmp_path), "--batch-sizes", "4,8", "--num-requests", "8",
           "--out", str(out)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env={**os.environ, "COLUMNS": "250"})
    assert run.returncode == 0, run.stderr[-3000:]
    body = json.loads(out.read_text())
    assert body["engines"] == ["vllm", "transformers"]
    vllm, hf = (json.loads(Path(p).read_text()) for p in body["records"])
    assert vllm["engine_name"] == "vllm" and hf["engine_name"] == "transformers"
    assert vllm["weights"] == hf["weights"] == "dummy"
    assert hf["transformers"]["transformers"] and not hf["engine"]["compile"]
    for record in (vllm, hf):
        assert [r["batch_size"] for r in record["results"]] == [4, 8]
        for r in record["results"]:
            assert (r["requests"], r["input_tokens"], r["output_tokens"]) == (8, 8 * 48, 8 * 12)
            assert r["energy_j"] > 0 and r["j_per_output_token"] == pytest.approx(r["energy_j"] / (8 * 12))
    assert [set(r) for r in vllm["results"]] == [set(r) for r in hf["results"]]  # the same records
    assert set(vllm) == set(hf) - {"transformers"} | {"vllm"}
    for row, v, h in zip(body["reduction"], vllm["results"], hf["results"], strict=True):
        assert row["reduction"]["transformers"] == pytest.approx(1 - v["j_per_output_token"] / h["j_per_output_token"])
    assert "reduction vs transformers" in run.stdout and "ESTIMATED" in run.stdout


@pytest.mark.integration
def test_transformers_compiled_offline(tmp_path):
    out = tmp_path / "hf.json"
    cmd = [sys.executable, "-m", "joulebench", "offline", "--engine", "transformers", "--compile", *OFFLINE,
           "--model-cache", str(tmp_path), "--batch-sizes", "2", "--num-requests", "4", "--out", str(out)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["engine"]["compile"] and record["engine"]["cache"] == "static"
    (r,) = record["results"]
    assert (r["requests"], r["input_tokens"], r["output_tokens"]) == (4, 4 * 48, 4 * 12) and r["energy_j"] > 0
    assert "transformers" in run.stdout and "compiled" in run.stdout


@pytest.fixture(scope="module")
def served(tiny, tmp_path_factory):
    server = TransformersServer(tiny, TransformersOptions(), tmp_path_factory.mktemp("serve") / "hf.log",
                                port=free_port())  # fmt: skip
    with started(server):
        yield server


@pytest.mark.integration
def test_transformers_serve_is_found_and_forced_to_exact_lengths(served):
    from loadgen.client import ClientConfig, TextCalibrator, request_body, send, served_model, server_api
    from loadgen.records import RequestRecord

    assert server_api(served.url) == "transformers" and served_model(served.url) == ("", None)
    calibrator = TextCalibrator(served.url, "", api="transformers")
    config = ClientConfig(base_url=served.url, model="", chat=True, timeout_s=120, api="transformers")
    texts = {calibrator.distinct(300, ("seed", i)) for i in range(2)}
    assert len(texts) == 2 and len({len(t.split()) for t in texts}) == 1  # different words, as many
    for n_in, n_out, text in ((60, 3, calibrator.text(60)), (137, 40, calibrator.text(137)), (300, 5, texts.pop())):
        record = RequestRecord("c", 0, scheduled_s=0.0, input_tokens=n_in, output_tokens=n_out)
        send(config, record, request_body(config, text, n_out))
        assert record.status == "ok", record.error
        assert (record.usage_input_tokens, record.usage_output_tokens) == (n_in, n_out)
        assert sum(n for _, n in record.chunks) == n_out and record.first_token_s <= record.last_token_s
    rec = served.record()
    assert rec["weights"] == "dummy" and rec["engine"]["continuous_batching"]
    assert "--continuous-batching" in rec["command"]
    assert rec["served_model_dir"].endswith("-hf-random") and rec["transformers"]["transformers"]


@pytest.mark.integration
def test_the_replay_measures_transformers_serve(served, tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i * 0.5},{40 + 9 * i},{3 + i % 5}\n"
                                                                           for i in range(8)))  # fmt: skip
    records, summary = tmp_path / "requests.jsonl", tmp_path / "summary.json"
    out = joulebench("replay", "--target", served.url, "--trace", str(trace), "--first", "8", "--records",
                     str(records), "--summary", str(summary), timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_records(records)
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}, rows
    assert all((r["usage_input_tokens"], r["usage_output_tokens"]) == (r["input_tokens"], r["output_tokens"])
               for r in rows)  # fmt: skip
    assert json.loads(summary.read_text())["requests"] == 8


@pytest.mark.integration
def test_stop_leaves_no_process_behind(served):
    family = [psutil.Process(served.pid), *psutil.Process(served.pid).children(recursive=True)]
    served.stop()
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, alive
    assert served.poll() is not None
