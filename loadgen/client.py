"""The OpenAI streaming client: one request in, one ``RequestRecord`` out, whatever happens.

Two HTTP stacks carry a request (``CLIENTS``, ``ClientConfig.client``): by default geventhttpclient's C parser on a
gevent socket (``loadgen.fasthttp``: every event that has arrived is taken in one read), or the standard library's
``http.client`` (the client to 0.1.0, blocking code that gevent's monkey-patching makes cooperative under Locust).
They give the same record for the same reply (``tests/test_loadgen/test_clients_agree.py``). Token-id prompts
of exact length go to ``/v1/completions`` (the default); ``/v1/chat/completions`` takes text. Output length is forced
(``max_tokens``, ``min_tokens``, ``ignore_eos``). Every chunk's arrival time and token count is
kept (``continuous_usage_stats`` gives exact counts where the server serves them; otherwise a chunk
with text counts as one token). ``transformers serve`` (``api="transformers"``, found by ``server_api``) takes
text only, refuses ``min_tokens``/``ignore_eos``, and ends its streams without ``[DONE]``: its requests set
the length through its own ``generation_config`` field with EOS disabled, so the length is still forced, and
a stream that ended after its usage is complete. A failure is a status on the record, never an exception:
``http_error``, ``timeout`` (no byte for ``timeout_s``), ``disconnect`` (the stream ended before
``[DONE]``, or the connection failed), ``bad_stream`` (an event that is not a JSON object, or fields of
the wrong type), ``not_streaming`` (one JSON body instead of an event stream), ``short_output``
(fewer tokens than forced).

A target is ``http(s)://host:port`` with an optional path prefix (a proxy's); ``host:port`` is taken
as ``http://host:port``, and a trailing ``/v1`` is the API's, not the prefix (``normalize_target``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from loadgen.errors import LoadgenError
from loadgen.records import RequestRecord
from loadgen.sse import SSEParser

log = logging.getLogger(__name__)

#: Request dialects: the OpenAI API with vLLM's extensions, and ``transformers serve``'s.
APIS = ("vllm", "transformers")
#: The HTTP stacks a request travels over: geventhttpclient's C parser on a gevent socket (``loadgen.fasthttp``,
#: each read takes every event that has arrived), or the standard library's ``http.client`` (the client until
#: 0.1.0, one read per event; kept to compare). The records are the same.
CLIENTS = ("geventhttpclient", "http.client")


def normalize_target(text: str, what: str = "--target") -> str:
    """The server's root URL: a scheme added to ``host:port``, a trailing ``/v1`` taken off; checked."""
    text = text.strip()
    if "://" not in text:
        text = f"http://{text}"
    try:
        url = urllib.parse.urlsplit(text)
        host = url.hostname  # raises for a bracketed host that is not an IPv6 address
    except ValueError:
        raise LoadgenError(f"{what} {text!r}: not a URL") from None
    try:
        port = url.port  # None when not given; raises for a port that is not a number in 0–65535
    except ValueError:
        raise LoadgenError(f"{what} {text!r}: the port must be a number in 1–65535") from None
    if url.scheme not in ("http", "https") or not host or port == 0:
        raise LoadgenError(f"{what} {text!r}: give http(s)://HOST[:PORT] or HOST:PORT, e.g. http://127.0.0.1:8000")
    path = url.path.rstrip("/")
    path = path.removesuffix("/v1")
    return f"{url.scheme}://{url.netloc}{path}"


def connection(base_url: str, timeout_s: float) -> http.client.HTTPConnection:
    """A connection to the server speaking the URL's scheme (HTTPS verifies the certificate)."""
    url = urllib.parse.urlsplit(base_url)
    conn_type = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    return conn_type(url.hostname or "127.0.0.1", url.port, timeout=timeout_s)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    base_url: str
    model: str
    chat: bool = False
    timeout_s: float = 300.0  # the longest wait for any byte
    api_key: str | None = None
    continuous_usage: bool = True
    api: str = "vllm"  # one of APIS
    client: str = "geventhttpclient"  # one of CLIENTS

    def __post_init__(self) -> None:
        if self.client not in CLIENTS:
            raise LoadgenError(f"client {self.client!r}: give one of {', '.join(CLIENTS)}")

    @property
    def path(self) -> str:
        prefix = urllib.parse.urlsplit(self.base_url).path.rstrip("/")
        return f"{prefix}/v1/chat/completions" if self.chat else f"{prefix}/v1/completions"


def request_body(config: ClientConfig, prompt: list[int] | str, output_tokens: int) -> dict[str, Any]:
    if config.api == "transformers":
        # It serves the one model it is pinned to (a request naming another is refused) and always ends with
        # usage; EOS id -1 is none, so the reply is exactly max_new_tokens long.
        length = {"max_new_tokens": output_tokens, "eos_token_id": -1, "do_sample": False}
        body: dict[str, Any] = {"max_tokens": output_tokens, "temperature": 0.0, "stream": True,
                                "generation_config": json.dumps(length)}  # fmt: skip
        if config.model:
            body["model"] = config.model
    else:
        body = {
            "model": config.model,
            "max_tokens": output_tokens,
            "min_tokens": output_tokens,
            "ignore_eos": True,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": config.continuous_usage},
        }
    if config.chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def send(
    config: ClientConfig, record: RequestRecord, body: dict[str, Any], clock: Callable[[], float] = time.time
) -> RequestRecord:
    """Send ``body``, stream the answer into ``record`` and set its status. Never raises: what it cannot
    handle is the record's ``client_error`` with the message."""
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    reply: Reply | None = None
    try:
        payload = json.dumps(body).encode()
        record.sent_s = clock()
        reply = _open(config, payload, headers)
        record.http_status = reply.status
        if reply.status != 200:
            record.status = "http_error"
            record.error = f"HTTP {reply.status}: {reply.head(500).decode(errors='replace').strip()}"
            return record
        content_type = reply.content_type.split(";")[0].strip()
        if content_type.endswith("json"):
            record.status = "not_streaming"
            record.error = (
                f"the server answered one {content_type} body, not an event stream (it ignored stream: true): "
                f"{reply.head(200).decode(errors='replace').strip()}"
            )
            return record
        _stream(reply, record, clock, needs_done=config.api != "transformers")
    except TimeoutError:
        record.status = "timeout"
        record.error = f"no data for {config.timeout_s:g} s"
    except (ConnectionError, http.client.HTTPException, OSError) as err:
        record.status = "disconnect"
        record.error = f"{type(err).__name__}: {err}"
    except Exception as err:  # anything unforeseen: the record says what, and the replay goes on
        log.warning("request %s: client_error: %r", record.request_id, err, exc_info=log.isEnabledFor(logging.DEBUG))
        record.status = "client_error"
        record.error = f"{type(err).__name__}: {str(err)[:300]}"
    finally:
        if reply is not None:
            reply.close()
    return record


class Reply(Protocol):
    """One exchange's reply as ``send`` reads it, whichever HTTP stack carries it (``CLIENTS``). Its errors
    are the standard library's: ``TimeoutError``, ``OSError``, ``http.client.HTTPException`` (a body cut short
    is ``IncompleteRead``)."""

    status: int
    content_type: str

    def head(self, n: int) -> bytes:
        """Up to the first ``n`` bytes of the body (fewer where it ends first)."""

    def reads(self) -> Iterator[bytes]:
        """The body's bytes as they arrive, each read as much as has arrived; ends with the body."""

    def close(self) -> None: ...


class _StdlibReply:
    """``http.client``: one HTTP chunk a read (each SSE event is its own chunk: a ``recv`` and a switch each)."""

    def __init__(self, config: ClientConfig, payload: bytes, headers: dict[str, str]) -> None:
        self._conn = connection(config.base_url, config.timeout_s)
        try:
            self._conn.request("POST", config.path, body=payload, headers=headers)
            self._resp = self._conn.getresponse()
        except BaseException:  # no reply to close: the connection is closed here
            self._conn.close()
            raise
        self.status = self._resp.status
        self.content_type = self._resp.getheader("Content-Type") or ""

    def head(self, n: int) -> bytes:
        return self._resp.read(n)

    def reads(self) -> Iterator[bytes]:
        last = time.monotonic()
        while data := self._resp.read1(65536):
            yield data
            # A server that refills the socket as fast as it is read leaves read1 nothing to wait for, and under
            # gevent only a wait lets the hub run (and take a SIGINT): give it a turn at least every YIELD_S.
            if (now := time.monotonic()) - last >= YIELD_S:
                time.sleep(0)
                last = now

    def close(self) -> None:
        self._conn.close()


#: The longest ``http.client`` reads in a row without a turn for gevent's hub.
YIELD_S = 0.05


def _open(config: ClientConfig, payload: bytes, headers: dict[str, str]) -> Reply:
    """Connect, send the request and read the reply's head, over the config's client."""
    if config.client == "http.client":
        return _StdlibReply(config, payload, headers)
    # Imported here: the CLI imports this module for its checks, and geventhttpclient's import is 50–90 ms.
    from loadgen.fasthttp import FastReply

    return FastReply(config.base_url, config.path, payload, headers, config.timeout_s)


def _stream(reply: Reply, record: RequestRecord, clock: Callable[[], float], needs_done: bool = True) -> None:
    parser = SSEParser()
    done = False
    counted = 0
    for data in reply.reads():
        now = clock()
        for event in parser.feed(data):
            if event == "[DONE]":
                done = True
                break
            try:
                obj = _decode(event)
            except json.JSONDecodeError:
                record.status = "bad_stream"
                record.error = f"an event is not JSON: {event[:200]!r}"
                return
            if (problem := _event_problem(obj)) is not None:
                record.status = "bad_stream"
                record.error = f"{problem}: {event[:200]!r}"
                return
            if "error" in obj and not obj.get("choices"):
                record.status = "http_error"
                record.error = f"error in stream: {json.dumps(obj['error'])[:300]}"
                return
            usage = obj.get("usage")
            if usage:
                record.usage_input_tokens = usage.get("prompt_tokens")
                record.usage_output_tokens = usage.get("completion_tokens")
            # A chunk with neither usage nor text is no token: transformers serve's opening role chunk comes
            # before generation starts.
            if obj.get("choices") and (usage or _has_text(obj["choices"][0])):
                n = (record.usage_output_tokens - counted) if usage and record.usage_output_tokens else 1
                counted += n
                if record.first_token_s is None:
                    record.first_token_s = now
                record.last_token_s = now
                record.chunks.append((now, n))
        if done:
            break
    if not done and not needs_done and record.usage_output_tokens is not None:
        done = True  # a server that sends no [DONE] has finished once it has sent its usage
    if not done:
        record.status = "disconnect"
        record.error = "the stream ended before [DONE]"
    elif record.usage_output_tokens is None:
        record.usage_output_tokens = counted
        record.status = "ok" if counted >= record.output_tokens else "short_output"
    else:
        record.status = "ok" if record.usage_output_tokens >= record.output_tokens else "short_output"
    if record.status == "short_output":
        record.error = f"{record.usage_output_tokens} of {record.output_tokens} output tokens"


_SCAN = json.JSONDecoder().scan_once


def _decode(event: str) -> Any:
    """``json.loads(event)``, one C scan where the event is one JSON value with nothing around it (every server's
    are): loads also matches whitespace before and after it, two regular expressions an event."""
    try:
        obj, end = _SCAN(event, 0)
    except StopIteration:  # no value at 0 (whitespace, or none): loads says what is wrong, or takes it
        return json.loads(event)
    return obj if end == len(event) else json.loads(event)


def _is_count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def _event_problem(obj: Any) -> str | None:
    """What makes a parsed event unusable, or None: the client reads only these fields of it."""
    if not isinstance(obj, dict):
        return f"an event is JSON but not an object ({type(obj).__name__})"
    if not isinstance(obj.get("choices") or [], list):
        return "an event's choices are not a list"
    usage = obj.get("usage")
    if usage is not None and not isinstance(usage, dict):
        return f"an event's usage is not an object ({type(usage).__name__})"
    if usage and not (_is_count(usage.get("prompt_tokens")) and _is_count(usage.get("completion_tokens"))):
        return "an event's usage counts are not non-negative integers"
    return None


def _has_text(choice: Any) -> bool:
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta") or {}
    content = delta.get("content") or delta.get("reasoning_content") if isinstance(delta, dict) else None
    return bool(choice.get("text") or content)


@contextlib.contextmanager
def deadline(conn: http.client.HTTPConnection, timeout_s: float) -> Iterator[threading.Event]:
    """Cut ``conn`` ``timeout_s`` from now (the event is set when it was): its timeout is per read, so a server
    that trickles a byte within each would hold a start-up check for as long as it likes."""
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        if conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)  # the read waiting on it returns at once

    timer = threading.Timer(timeout_s, cut)
    timer.daemon = True
    timer.start()
    try:
        yield expired
    finally:
        timer.cancel()


def server_api(base_url: str, timeout_s: float = 10.0) -> str:
    """``"transformers"`` for ``transformers serve`` (its OpenAPI schema has its ``/load_model``), else ``"vllm"``."""
    conn = connection(base_url, timeout_s)
    try:
        with deadline(conn, timeout_s) as expired:
            conn.request("GET", f"{urllib.parse.urlsplit(base_url).path.rstrip('/')}/openapi.json")
            resp = conn.getresponse()
            paths = json.loads(resp.read()).get("paths", {}) if resp.status == 200 and not expired.is_set() else {}
    except (OSError, http.client.HTTPException, ValueError, AttributeError):
        paths = {}
    finally:
        conn.close()
    return "transformers" if isinstance(paths, dict) and "/load_model" in paths else "vllm"


def served_model(base_url: str, timeout_s: float = 10.0) -> tuple[str, int | None]:
    """The server's first model and its ``max_model_len`` (vLLM says it), from ``/v1/models``.

    ``transformers serve`` lists its hub cache there (or answers 500 without one), not the model it is
    pinned to: for it, ``("", None)`` (requests then name no model and get the pinned one)."""
    path = f"{urllib.parse.urlsplit(base_url).path}/v1/models"
    conn = connection(base_url, timeout_s)
    expired = threading.Event()
    try:
        with deadline(conn, timeout_s) as expired:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
    except ssl.SSLError as err:
        raise LoadgenError(
            f"the TLS handshake with {base_url} failed ({err}): trust its certificate (SSL_CERT_FILE=PEM) "
            "or check --target"
        ) from err
    except (OSError, http.client.HTTPException) as err:
        if not expired.is_set():
            raise LoadgenError(f"no OpenAI server answers at {base_url} ({err}): start one, or check --target") from err
    finally:
        conn.close()
    if expired.is_set():  # cut: what was read may even parse (a head cut short reads as one that ended)
        raise LoadgenError(f"{base_url} did not answer GET {path} within {timeout_s:g} s (it sends too slowly): "
                           "check --target")  # fmt: skip
    try:
        data = json.loads(body) if resp.status == 200 else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    models = data.get("data") if isinstance(data, dict) else None
    pinned = isinstance(models, list) and models and isinstance(models[0], dict) and "max_model_len" in models[0]
    if not pinned and resp.status != 404 and server_api(base_url, timeout_s) == "transformers":
        return "", None
    if resp.status != 200:
        hint = ": is --target the server's root URL (http://HOST:PORT)?" if resp.status == 404 else ""
        raise LoadgenError(f"{base_url} answered HTTP {resp.status} for GET {path}{hint}")
    if not isinstance(models, list) or not all(isinstance(m, dict) and "id" in m for m in models):
        raise LoadgenError(f"{base_url} answered GET {path} with no OpenAI model list: {body[:200]!r}")
    if not models:
        raise LoadgenError(f"{base_url}{path} lists no model: the server serves none")
    max_len = models[0].get("max_model_len")
    return str(models[0]["id"]), max_len if isinstance(max_len, int) and max_len > 0 else None


class TextCalibrator:
    """Chat prompts of an exact token count, as the server itself counts them.

    Counts come from the server's own ``usage.prompt_tokens`` of a one-token chat completion: on vLLM
    0.32 ``/tokenize`` with messages counts 5 tokens fewer than the chat endpoint charges for the same
    text, so the endpoint is asked directly. The prompt is a run of a filler word; two lengths give the
    line to the target, the last steps are taken one word at a time; a count below the chat template's
    own length is unreachable and gets the shortest prompt. The line is measured once, results are cached
    per count; ``texts`` calibrates every length of a replay before its schedule starts.
    Every chat prompt of a length is the same text: serve chat replays with prefix caching off
    (``--no-prefix-caching``), or the cache makes them cheaper than the trace; token-id completions
    (the default) are distinct per request. Where the cache cannot be turned off (``transformers serve``),
    ``distinct`` gives text of the same count whose words are drawn per request.
    """

    FILLER = "a"  # " a" is one token in byte-level BPEs, so every count is reachable
    ALTERNATES = ("b", "c", "d", "e", "f", "g")  # used by ``distinct`` where they count as the filler does

    def __init__(self, base_url: str, model: str, timeout_s: float = 60.0, api: str = "vllm") -> None:
        self.config = ClientConfig(base_url=base_url, model=model, chat=True, timeout_s=timeout_s, api=api)
        self._cache: dict[int, str] = {}
        self._line: tuple[int, float] | None = None  # (count of one word, tokens per further word)
        self._fillers: list[str] | None = None

    def count(self, text: str) -> int:
        body = {**request_body(self.config, text, 1), "stream": False}
        body.pop("stream_options", None)
        conn = connection(self.config.base_url, self.config.timeout_s)
        try:
            conn.request("POST", self.config.path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise LoadgenError(f"calibrating chat prompts: {self.config.path} answered HTTP {resp.status}")
            return int(json.loads(data)["usage"]["prompt_tokens"])
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as err:
            raise LoadgenError(f"calibrating chat prompts against {self.config.base_url} failed ({err})") from err
        finally:
            conn.close()

    def text(self, n_tokens: int) -> str:
        """Text whose chat prompt is ``n_tokens`` long (or the nearest length the template allows)."""
        if n_tokens in self._cache:
            return self._cache[n_tokens]
        words = lambda k: " ".join([self.FILLER] * k)  # noqa: E731
        if self._line is None:
            c0 = self.count(words(1))
            self._line = (c0, max((self.count(words(33)) - c0) / 32, 1e-9))
        c0, per_word = self._line
        k = max(1, round(1 + (n_tokens - c0) / per_word))
        c = self.count(words(k))
        for _ in range(64):  # walk the last few words
            if c == n_tokens:
                break
            step = 1 if c < n_tokens else -1
            if k + step < 1:
                break
            c_next = self.count(words(k + step))
            if (c_next - n_tokens) * (c - n_tokens) < 0 and abs(c_next - n_tokens) >= abs(c - n_tokens):
                break  # crossed over: the nearest is where we are
            k, c = k + step, c_next
        self._cache[n_tokens] = words(k)
        return self._cache[n_tokens]

    def texts(self, lengths: Iterable[int], tick: Callable[[int, int], None] | None = None) -> dict[int, str]:
        """The text of every distinct length; ``tick(done, total)`` after each."""
        distinct = sorted(set(lengths))
        out = {}
        for done, n in enumerate(distinct, start=1):
            out[n] = self.text(n)
            if tick is not None:
                tick(done, len(distinct))
        return out

    def distinct(self, n_tokens: int, seed: object) -> str:
        """``text(n_tokens)``'s count, its words drawn (seeded) from the fillers that count alone and 33 times as
        the filler does (each a token of its own, as words are pre-tokenized apart): no two requests share a
        prefix past their first words."""
        if self._fillers is None:
            one, many = (self.count(" ".join([self.FILLER] * k)) for k in (1, 33))
            alike = [w for w in self.ALTERNATES if self.count(w) == one and self.count(" ".join([w] * 33)) == many]
            self._fillers = [self.FILLER, *alike]
        rng = random.Random(repr(seed))
        return " ".join(rng.choice(self._fillers) for _ in self.text(n_tokens).split(" "))
