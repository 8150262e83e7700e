"""Serve an ASGI app on a host and port until SIGINT or SIGTERM, then return normally.

Used by every HTTP service of joulebench (the monitor, the mock OpenAI server). The socket is bound
before anything else happens, so a port in use is a one-line error; signal handlers are installed
before the caller says it is listening, so no signal is missed; and uvicorn's habit of re-raising the
signal after shutting down is suppressed, so the caller's cleanup (stopping a sampler, flushing a log)
always runs.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator
from typing import Any

from joulebench.errors import JoulebenchError


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it: without it a keep-alive client waits on delayed ACKs (40 ms a request).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as err:
        sock.close()
        raise JoulebenchError(f"cannot listen on {host}:{port} ({err.strerror}): choose another with --port") from err
    except (OverflowError, ValueError) as err:  # a port beyond 65535, an address no resolver takes
        sock.close()
        raise JoulebenchError(f"cannot listen on {host}:{port} ({err}): check --host and --port") from None
    return sock


class AppServer:
    """``with AppServer(app, host, port) as http: print(http.url); http.run()``."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        log_level: str = "warning",
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self.ssl = (ssl_certfile, ssl_keyfile) if ssl_certfile else None
        self.server: Any = None
        self._sock: socket.socket | None = None
        self._previous: dict[int, Any] = {}

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"{'https' if self.ssl else 'http'}://{host}:{self.port}"

    @property
    def should_exit(self) -> bool:
        return bool(self.server is not None and self.server.should_exit)

    def __enter__(self) -> AppServer:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # AppServer's own handlers ask the server to exit, and nothing is re-raised

        self._sock = listen(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        # A stalled client connection must not hold the shutdown forever.
        certfile, keyfile = self.ssl or (None, None)
        config = uvicorn.Config(
            self.app, log_level=self.log_level, lifespan="off", timeout_graceful_shutdown=3,
            ssl_certfile=certfile, ssl_keyfile=keyfile,
        )  # fmt: skip
        if self.ssl:
            try:
                config.load()  # reads the certificate and key now: a bad one is a one-line error
            except (OSError, ValueError) as err:
                self._sock.close()
                raise JoulebenchError(f"cannot serve HTTPS with {certfile} and {keyfile}: {err}") from None
        self.server = Server(config)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self.server.handle_exit)
        return self

    def run(self) -> None:
        self.server.run(sockets=[self._sock])

    def exit(self) -> None:
        """Ask ``run`` to return, as SIGTERM does (from any thread)."""
        self.server.should_exit = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._sock is not None:
            self._sock.close()
