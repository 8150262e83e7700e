"""``loadgen.client.send``'s default transport: one request over a gevent socket, its reply parsed by
geventhttpclient's C parser (llhttp; Locust's own HTTP stack).

Each read takes every byte the socket holds, so the events that arrived while the client was busy are parsed
from one ``recv``; ``http.client`` reads one HTTP chunk, i.e. one SSE event, a call. The body's bytes are the
parser's own buffers, handed on uncopied.

A record does not depend on the stack. llhttp is stricter than ``http.client`` (which takes a head with bare LF
line ends, a chunk size of ``0x5``, a chunk whose CRLF is two other bytes) and ends differently where a reply
is cut short; so wherever llhttp does not reach the end of a well-formed reply (a parse error, the connection
closed before the reply's end, an interim reply other than 100) the bytes received so far, then the socket's,
are handed to ``http.client`` itself, which reads the reply again from its first byte and goes on from where
llhttp stopped (``_Replay``): the same status, headers, body and error as ``http.client`` alone, by
construction. For that a chunked reply's bytes are kept: its head, and its chunks from a chunk boundary that both
have passed (``chunk_boundary`` frames them as ``http.client`` does; trimmed past ``KEEP_BYTES``), so a stream holds
about 64 kB at most. A body by length or to the close needs none: there the two stacks read alike.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import gevent.socket
import gevent.ssl
from geventhttpclient.response import HTTPParseError, HTTPResponse, HTTPResponseParser

#: The most bytes one ``recv`` takes.
READ_BYTES = 65536


class _Parser(HTTPResponse):
    """The reply's status and headers, and the body's bytes parsed since the last ``take``; ``ended`` once the
    final reply is complete (bytes after it are ignored, as ``http.client`` never reads them)."""

    feed = HTTPResponseParser.feed  # the C parser's own: HTTPResponse.feed adds only a fix-up for replies to HEAD

    def __init__(self) -> None:
        super().__init__("POST")
        self.body: bytearray | None = None
        self.ended = False
        self.interim = False
        self.seen_100 = False

    def _on_body(self, buf: bytearray) -> None:  # the C parser's callback, with a new bytearray each time
        if self.ended:
            return
        if self.body is None:
            self.body = buf
        else:
            self.body += buf

    def _on_message_complete(self) -> None:
        super()._on_message_complete()
        code = self.get_code()
        if code >= 200:
            self.ended = True
        elif code == 100:
            self.seen_100 = True
        else:
            self.interim = True  # an interim reply http.client takes as the reply (it skips 100s only)

    def take(self) -> bytearray:
        data, self.body = self.body or bytearray(), None
        return data


def request_head(url: urllib.parse.SplitResult, path: str, headers: dict[str, str], length: int) -> bytes:
    """The request line and headers of a POST with a body of ``length`` bytes, as ``http.client`` sends them (its Host
    and its ``Accept-Encoding: identity``: without it a server or proxy may compress the reply), in its order."""
    host = url.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    if url.port is not None and url.port != (443 if url.scheme == "https" else 80):
        host = f"{host}:{url.port}"
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity", f"Content-Length: {length}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _connect(host: str, port: int, timeout_s: float) -> gevent.socket.socket:
    """A TCP connection; an address is connected to as it is, a name resolved first (gevent resolves in a thread
    of its pool: a hand-off and a wake-up that cost more than the rest of a request's set-up)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return gevent.socket.create_connection((host, port), timeout=timeout_s)
    sock = gevent.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _Replay(io.RawIOBase):
    """The bytes received so far, then the socket's: the stream ``http.client`` would have read."""

    def __init__(self, received: bytes, sock: gevent.socket.socket) -> None:
        self._received, self._at, self._sock = received, 0, sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._at < len(self._received):
            n = min(len(buffer), len(self._received) - self._at)
            buffer[:n] = self._received[self._at : self._at + n]
            self._at += n
            return n
        return self._sock.recv_into(buffer)

    def makefile(self, mode: str) -> io.BufferedReader:  # as a socket, for http.client.HTTPResponse
        return io.BufferedReader(self)


def chunk_boundary(body: bytes | bytearray, start: int, most: int) -> tuple[int, int]:
    """How far from ``start`` (where a chunk-size line begins) ``http.client`` reads whole chunks of ``body``, framing
    them as it does (a size line to its LF, an extension after ``;`` dropped, ``int(…, 16)``, the data, two bytes
    tossed), and their data bytes, at most ``most`` of them; stops before a last chunk, a line it refuses or a
    chunk not all there."""
    at, data = start, 0
    while (end := body.find(b"\n", at, at + 65537)) >= 0:  # a longer line is http.client's LineTooLong
        line = body[at:end]
        try:
            size = int(line.partition(b";")[0], 16)
        except ValueError:
            break
        if size <= 0 or end + size + 3 > len(body) or data + size > most:
            break
        at, data = end + size + 3, data + size
    return at - start, data


class FastReply:
    """Connects, sends the request and reads the reply's head; then ``head`` or ``reads`` the body."""

    #: A chunked reply's bytes kept for ``_hand_over`` (its head, then its chunks from a boundary) are trimmed to
    #: the last chunk llhttp has handed on whole once they pass this many.
    KEEP_BYTES = 65536

    def __init__(self, base_url: str, path: str, payload: bytes, headers: dict[str, str], timeout_s: float) -> None:
        url = urllib.parse.urlsplit(base_url)
        host = url.hostname or "127.0.0.1"
        https = url.scheme == "https"
        sock = _connect(host, url.port or (443 if https else 80), timeout_s)
        self._sock, self._tls = sock, https
        self._watchers: tuple[Any, ...] = ()
        self._stdlib: http.client.HTTPResponse | None = None  # where http.client reads the reply (_Replay)
        self._given = 0  # the body's bytes handed on so far
        self._failed = False  # llhttp stopped before the reply's end: http.client goes on from here
        self._received = bytearray()  # what http.client would read again: the head, then whole chunks' bytes
        self._body_at = -1  # where the body starts in _received (-1: not known, nothing trimmed)
        self._dropped = 0  # the body's bytes in the chunks trimmed from _received
        self._chunked = False  # known with the head
        try:
            if https:  # as http.client does: the default context (SSL_CERT_FILE read now), ALPN http/1.1, PHA
                context = gevent.ssl.create_default_context()
                context.set_alpn_protocols(["http/1.1"])
                if context.post_handshake_auth is not None:
                    context.post_handshake_auth = True
                sock = self._sock = context.wrap_socket(sock, server_hostname=host)
            sock.sendall(request_head(url, path, headers, len(payload)) + payload)
            parser = self._parser = _Parser()
            while not parser.headers_complete or parser.status_code == 100:  # a 100 Continue precedes the reply
                if not (data := sock.recv(READ_BYTES)):
                    break
                self._feed(data)
                if self._failed:
                    break
            encoding = parser.get("transfer-encoding")
            self._chunked = isinstance(encoding, str) and encoding.lower() == "chunked"
            if (not parser.headers_complete or parser.status_code < 200 or parser.interim
                    or (encoding is not None and not self._chunked)):  # fmt: skip
                # cut short, not HTTP as llhttp reads it, an interim reply that http.client takes as the reply, or a
                # transfer coding it does not decode (llhttp decodes "gzip, chunked" as chunked)
                self._hand_over()
                return
        except BaseException:
            sock.close()
            raise
        if self._chunked and not parser.seen_100:
            self._body_at = self._received.find(b"\r\n\r\n") + 4  # llhttp took the head: its lines end in CRLF
        elif not self._chunked:
            self._received = bytearray()  # a body by length or to the close: llhttp and http.client read it alike
        self.status = parser.status_code
        content_type = parser.get("content-type")  # a list where it is repeated: http.client joins them
        self.content_type = ", ".join(content_type) if isinstance(content_type, list) else content_type or ""

    def _hand_over(self) -> http.client.HTTPResponse:
        """``http.client`` reads the reply again from its first byte; the body's bytes already handed on are
        skipped."""
        resp = http.client.HTTPResponse(_Replay(bytes(self._received), self._sock), method="POST")  # type: ignore[arg-type]
        self._received = bytearray()
        self._stdlib = resp
        resp.begin()
        self.status = resp.status
        self.content_type = resp.getheader("Content-Type") or ""
        skip = self._given - self._dropped
        while skip > 0 and (data := resp.read1(min(skip, READ_BYTES))):
            skip -= len(data)
        return resp

    def _feed(self, data: bytes) -> None:
        parser = self._parser
        if parser.ended:
            return
        if self._chunked or not parser.headers_complete:
            self._received += data
        try:
            parser.feed(data)
        except HTTPParseError:
            self._failed = not parser.ended  # bytes after the reply's end are bytes http.client never reads

    def _keep_less(self) -> None:
        """Trim the kept body to its chunks from the last whole one that llhttp has handed on."""
        trimmed, body = chunk_boundary(self._received, self._body_at, self._given - self._dropped)
        del self._received[self._body_at : self._body_at + trimmed]
        self._dropped += body

    def _cut_short(self) -> bool:
        """The connection closed before llhttp saw the reply's end: True where http.client must say what that is
        (a chunked body); a body by length or to the close ends there for both."""
        self._failed = self._chunked
        return self._failed

    def head(self, n: int) -> bytes:
        parser, body = self._parser, bytearray()
        while self._stdlib is None:
            body += parser.take()
            if len(body) >= n or parser.ended:
                return bytes(body[:n])
            if self._failed:
                break
            data = self._sock.recv(READ_BYTES)
            if not data and not self._cut_short():
                return bytes(body[:n])
            if not data:
                break
            self._feed(data)
        resp = self._stdlib or self._hand_over()
        return resp.read(n)

    def reads(self) -> Iterator[bytes | bytearray]:
        parser, sock = self._parser, self._sock
        if self._stdlib is None and parser.body is not None:  # arrived with the head
            data = parser.take()
            self._given += len(data)
            yield data
        # gevent's recv reads first and waits when that fails; an SSE stream is idle between events, so each event
        # cost a failed read (EAGAIN, raised and caught) and a new Timeout object. Here the read waits first, on an
        # io watcher and a timer made once: no byte for timeout_s is TimeoutError, as from the socket. TLS may hold
        # bytes the socket does not show as readable: its recv waits as it must.
        hub = io_ = timer = None
        if not self._tls and self._stdlib is None:
            hub = gevent.get_hub()
            io_ = hub.loop.io(sock.fileno(), 1)
            timeout_s = sock.gettimeout()
            timer = hub.loop.timer(timeout_s, timeout_s)
            self._watchers = (io_, timer)
            me = gevent.getcurrent()
        while self._stdlib is None and not parser.ended and not self._failed:
            if hub is not None:
                # again, not start: libev's stop leaves a timer only what was left of its time, so start after stop
                # counted every wait of the stream against one timeout_s (an 8 s stream cut at 5 s); again arms it
                # for its full repeat, timeout_s from now (not the loop's last turn)
                timer.again(me.throw, TimeoutError, update=True)
                try:
                    hub.wait(io_)
                finally:
                    timer.stop()
            data = sock.recv(READ_BYTES)
            if not data:
                if not self._cut_short():
                    return
                break
            self._feed(data)
            if parser.body is not None:
                data = parser.take()
                self._given += len(data)
                if self._body_at > 0 and len(self._received) - self._body_at > self.KEEP_BYTES:
                    self._keep_less()
                yield data
        if self._stdlib is None and not self._failed:
            return
        resp = self._stdlib or self._hand_over()
        while data := resp.read1(READ_BYTES):
            yield data

    def close(self) -> None:
        for watcher in self._watchers:
            watcher.close()
        self._sock.close()
