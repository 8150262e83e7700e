"""``joulebench mock-server``: an OpenAI-compatible streaming server with set latencies.

A real HTTP server (FastAPI on uvicorn), not a mock object: it calibrates the client (measured TTFT
minus the configured TTFT is the client's own error) and serves tests. It answers
``/v1/completions`` (token-id or text prompts) and ``/v1/chat/completions``, streaming or not, with
forced output lengths, vLLM's ``usage`` (``stream_options.include_usage`` and
``continuous_usage_stats``), ``/tokenize``, ``/v1/models`` and ``/health``; with ``--record-arrivals``,
``/mock/arrivals`` gives every request's arrival time (a client's schedule seen from outside), from all
worker processes (``--workers N``: N processes accept on one socket; each appends its arrivals to its own
file in ``arrivals_dir``, any of them answers with all). Its
tokenizer is one token per whitespace-separated word. Tokens are paced on a fixed schedule from the
request's arrival (first after ``ttft``, then one every ``itl``), so its own sleeps do not accumulate error.

An engine's queue, for measuring how a client counts work: with ``max_num_seqs`` S, at most S requests
are served at once and the others wait in FIFO order (vLLM's waiting queue); with ``prefill_s_per_token``
p, an admitted request's first token comes ``ttft + p·n_in`` after its admission. ``/metrics`` serves
vLLM's names for what a comparison reads (``vllm:num_requests_running`` and ``_waiting``, the
``vllm:request_queue_time_seconds`` and ``vllm:request_prefill_time_seconds`` histograms' sums and
counts, ``vllm:prompt_tokens_total``), and ``/mock/arrivals`` gives, beside every arrival, each
request's admission and first-token times and input length: the truth a client's estimate is tested
against. The queue is per process (use it with one worker).

For failure tests a request may ask for a fault with the body field ``mock_fault``: ``status:CODE``
(answer HTTP CODE, e.g. 429, 500, 503), ``stall`` (one token, then silence), ``disconnect`` (half
the tokens, then the connection drops), ``garbage`` (an event that is not JSON), ``not_object`` (an
event that is JSON but not an object), ``bad_usage`` (a usage whose counts are text), ``short`` (half
the tokens, then a clean end), ``no_stream`` (one JSON body although the request asked for a stream),
``deep_json`` (an event nested deeper than Python's JSON parser goes: a fault no client check expects),
``endless_line`` (one token, then an event line that never ends, as fast as the client reads it).
``--fault FAULT`` gives every ``--fault-every``-th request that fault unless it asks for its own;
``--ssl-certfile``/``--ssl-keyfile`` serve HTTPS.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


@dataclass(frozen=True, slots=True)
class MockConfig:
    ttft_s: float = 0.05
    itl_s: float = 0.01
    default_output_tokens: int = 16
    max_model_len: int = 32768
    model: str = "mock"
    arrivals_dir: str | None = None  # where every request's arrival time is kept for GET /mock/arrivals
    max_num_seqs: int = 0  # requests served at once; 0: no limit, no queue
    prefill_s_per_token: float = 0.0  # after admission, the first token waits this long per input token
    fault: str = ""  # the fault of every fault_every-th request that asks for none
    fault_every: int = 1


class ArrivalLog:
    """Arrival times shared by the mock's worker processes: each appends 8-byte floats to its own file.

    A request served to its first token adds a second record in ``<pid>.served``: (arrival, admitted,
    first token, input tokens), four floats.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._fd: tuple[int, dict[str, int]] | None = None  # (pid, fds): a forked worker opens its own

    def _write(self, suffix: str, data: bytes) -> None:
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), {})
        fds = self._fd[1]
        if suffix not in fds:
            path = os.path.join(self.directory, f"{os.getpid()}.{suffix}")
            fds[suffix] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fds[suffix], data)

    def add(self, t: float) -> None:
        self._write("f64", struct.pack("<d", t))

    def served(self, arrived_s: float, admitted_s: float, first_token_s: float, input_tokens: int) -> None:
        self._write("served", struct.pack("<4d", arrived_s, admitted_s, first_token_s, float(input_tokens)))

    def _take(self, suffix: str, fmt: str) -> list[tuple[float, ...]]:
        size = struct.calcsize(fmt)
        out: list[tuple[float, ...]] = []
        for name in os.listdir(self.directory):
            if not name.endswith("." + suffix):
                continue
            with open(os.path.join(self.directory, name), "r+b") as f:
                data = f.read()
                f.truncate(0)
            out += list(struct.iter_unpack(fmt, data[: len(data) // size * size]))
        return sorted(out)

    def take(self) -> list[float]:
        """Every worker's arrivals since the last ``take()``, sorted (ask once the traffic is over)."""
        return [t for (t,) in self._take("f64", "<d")]

    def take_served(self) -> list[dict[str, float]]:
        """(arrival, admission, first token, input tokens) of each request served since the last call."""
        keys = ("arrived_s", "admitted_s", "first_token_s", "input_tokens")
        return [dict(zip(keys, row, strict=True)) for row in self._take("served", "<4d")]


def count_tokens(text: str) -> int:
    return len(text.split())


def _prompt_tokens(body: dict[str, Any]) -> int:
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        if prompt and isinstance(prompt[0], list):
            return len(prompt[0])
        if all(isinstance(p, int) for p in prompt):
            return len(prompt)
        return count_tokens(" ".join(map(str, prompt)))
    return count_tokens(str(prompt))


def _chat_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(count_tokens(str(m.get("content", ""))) for m in messages)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class EngineState:
    """The queue and vLLM's counters of one mock process."""

    def __init__(self, max_num_seqs: int) -> None:
        self.slots = asyncio.Semaphore(max_num_seqs) if max_num_seqs > 0 else None
        self.running = self.waiting = 0
        self.queue_s = self.prefill_s = 0.0
        self.observed = self.prompt_tokens = self.generation_tokens = 0

    async def admit(self) -> None:
        self.waiting += 1
        try:
            if self.slots is not None:
                await self.slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        self.running -= 1
        if self.slots is not None:
            self.slots.release()

    def metrics(self, model: str) -> str:
        label = f'{{model_name="{model}"}}'
        rows = [
            ("vllm:num_requests_running", "gauge", "", self.running),
            ("vllm:num_requests_waiting", "gauge", "", self.waiting),
            ("vllm:request_queue_time_seconds", "histogram", "_sum", self.queue_s),
            ("vllm:request_queue_time_seconds", "histogram", "_count", self.observed),
            ("vllm:request_prefill_time_seconds", "histogram", "_sum", self.prefill_s),
            ("vllm:request_prefill_time_seconds", "histogram", "_count", self.observed),
            ("vllm:prompt_tokens", "counter", "_total", self.prompt_tokens),
            ("vllm:generation_tokens", "counter", "_total", self.generation_tokens),
        ]
        out, typed = [], set()
        for name, kind, suffix, value in rows:
            if name not in typed:
                typed.add(name)
                out.append(f"# TYPE {name} {kind}")
                if kind == "histogram":  # a histogram needs its +Inf bucket to parse
                    out.append(f'{name}_bucket{{model_name="{model}",le="+Inf"}} {self.observed}')
            out.append(f"{name}{suffix}{label} {value}")
        return "\n".join(out) + "\n"


def create_app(config: MockConfig = MockConfig()) -> FastAPI:
    app = FastAPI(title="joulebench mock OpenAI server", docs_url=None, redoc_url=None)
    arrivals = ArrivalLog(config.arrivals_dir) if config.arrivals_dir else None
    engine = EngineState(config.max_num_seqs)
    served = itertools.count()

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)

    async def generate(request: Request, chat: bool) -> Any:
        arrived = time.perf_counter()
        arrived_unix = time.time()
        if arrivals is not None:
            arrivals.add(arrived_unix)
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error(400, "the body is not JSON")
        n_in = _chat_tokens(body.get("messages", [])) if chat else _prompt_tokens(body)
        n_out = int(body.get("max_tokens") or body.get("max_completion_tokens") or config.default_output_tokens)
        if n_in + n_out > config.max_model_len:
            return error(400, f"{n_in} + {n_out} tokens exceed max_model_len {config.max_model_len}")
        fault = str(body.get("mock_fault") or (config.fault if next(served) % config.fault_every == 0 else ""))
        if fault.startswith("status:"):
            return error(int(fault.split(":", 1)[1]), f"mock fault {fault}")
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:16]}"
        obj = "chat.completion" if chat else "text_completion"
        await engine.admit()
        admitted = time.perf_counter()
        first_due = admitted + config.ttft_s + config.prefill_s_per_token * n_in
        engine.queue_s += admitted - arrived
        engine.prefill_s += first_due - admitted
        engine.observed += 1
        engine.prompt_tokens += n_in

        async def at(k: int) -> None:  # token k (0-based) is due at admission + ttft + p·n_in + k·itl
            delay = first_due + k * config.itl_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            engine.generation_tokens += 1
            if k == 0 and arrivals is not None:
                arrivals.served(arrived_unix, arrived_unix + admitted - arrived, time.time(), n_in)

        if not body.get("stream") or fault == "no_stream":
            try:
                for k in range(n_out):
                    await at(k)
            finally:
                engine.release()
            text = " ".join(["tok"] * n_out)
            choice = {"index": 0, "finish_reason": "length"}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            return {"id": rid, "object": obj, "model": config.model, "choices": [choice], "usage": _usage(n_in, n_out)}

        opts = body.get("stream_options") or {}
        continuous = bool(opts.get("continuous_usage_stats"))
        include_usage = bool(opts.get("include_usage")) or continuous

        async def events() -> AsyncIterator[bytes]:
            try:
                async for event in stream():
                    yield event
            finally:
                engine.release()

        async def stream() -> AsyncIterator[bytes]:
            created = int(time.time())
            sent = n_out // 2 if fault in ("disconnect", "short") else n_out
            for k in range(sent):
                await at(k)
                if fault == "stall" and k == 1:
                    await asyncio.sleep(3600)
                if fault == "garbage" and k == 1:
                    yield b"data: {this is not json\n\n"
                if fault == "not_object" and k == 1:
                    yield b"data: [1, 2, 3]\n\n"
                if fault == "deep_json" and k == 1:
                    yield b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n"
                if fault == "endless_line" and k == 1:
                    yield b"data: "
                    while True:
                        yield b"x" * 65536
                        await asyncio.sleep(0)  # the loop's other work (a shutdown) goes on
                delta = {"delta": {"content": " tok" if k else "tok"}} if chat else {"text": " tok" if k else "tok"}
                chunk: dict[str, Any] = {
                    "id": rid, "object": f"{obj}.chunk" if chat else obj, "created": created, "model": config.model,
                    "choices": [{"index": 0, **delta, "finish_reason": "length" if k == n_out - 1 else None}],
                }  # fmt: skip
                if continuous:
                    chunk["usage"] = _usage(n_in, k + 1)
                if fault == "bad_usage" and k == 1:
                    chunk["usage"] = {"prompt_tokens": str(n_in), "completion_tokens": "two"}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            if fault == "disconnect":
                raise ConnectionAbortedError("mock fault: the connection drops mid-stream")
            if include_usage:
                final = {"id": rid, "object": obj, "created": created, "model": config.model, "choices": [],
                         "usage": _usage(n_in, sent)}  # fmt: skip
                yield f"data: {json.dumps(final)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await generate(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await generate(request, chat=True)

    @app.post("/tokenize")
    async def tokenize(request: Request) -> Any:
        body = await request.json()
        n = _chat_tokens(body["messages"]) if "messages" in body else count_tokens(str(body.get("prompt", "")))
        return {"count": n, "max_model_len": config.max_model_len, "tokens": list(range(n))}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": config.model, "object": "model", "max_model_len": config.max_model_len}],
        }

    @app.get("/mock/arrivals")
    async def get_arrivals() -> dict[str, Any]:
        """Arrival times (Unix seconds) since the last call: how a client really timed its requests; and
        each request's admission and first-token times: when this engine really did its prefill."""
        return {
            "recording": arrivals is not None,
            "arrivals_s": arrivals.take() if arrivals else [],
            "served": arrivals.take_served() if arrivals else [],
        }

    @app.get("/metrics")
    async def metrics() -> Any:
        from fastapi.responses import PlainTextResponse

        return PlainTextResponse(engine.metrics(config.model), media_type="text/plain; version=0.0.4")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {}

    return app
