"""Who may drive Locust's web UI, and where its start form may point.

The UI starts load against a server and writes files, so a page the user happens to open in the same browser must
not be able to drive it, and the form must not reach past what the operator set up:

- **Same origin only** (``SameOrigin``, around Locust's Flask app): Locust allows every origin (flask-cors, which
  echoes the caller's ``Origin``); here no response carries a CORS header, and a request that changes anything
  (not GET or HEAD) from a page of another origin (``Origin``, ``Sec-Fetch-Site``) is refused before Locust sees
  it. A browser sends a cross-origin form post whatever CORS says: refusing it is what stops a run being started
  from elsewhere. Bound to loopback, the UI also answers only to a loopback ``Host``: a page whose own name
  resolves to 127.0.0.1 (DNS rebinding) is same-origin with itself, not with this UI.
- **A login** (Locust's ``--web-login``, ``add_login``): one operator, ``USER``, whose password is ``PASSWORD_ENV``
  in the environment (compose takes it from ``.env``), never a command-line argument (``ps`` shows those, and
  Locust's form lists its options).
- **The form's confines** (``Confines``, ``confine_form``): the host is the command line's ``--host`` (without
  one, a loopback address); a trace is a named one or a file in the traces folder the command line gave; the
  runs and trace folders are the command line's or below them; the monitor is the command line's; no other
  option Locust holds (its ``--csv`` prefix, its ``--html`` file) can be set from the form. A refusal names the
  field and the allowed place, and no file is read for it.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.client import normalize_target
from loadgen.errors import LoadgenError
from loadgen.options import LOCUST_OPTIONS
from loadgen.traces import NAMED

#: The one account of ``--web-login`` (as Grafana's ``admin`` in the compose stack).
USER = "admin"
#: Where ``--web-login`` reads the password.
PASSWORD_ENV = "JOULEBENCH_LOCUST_PASSWORD"
#: Locust's own fields of the start form; every other option Locust holds is the command line's alone.
LOCUST_FIELDS = ("user_count", "spawn_rate", "host", "run_time", "profile", "user_classes", "shape_class")
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hostname(authority: str) -> str:
    """The name in a ``Host`` header (``[::1]:8089`` → ``::1``)."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def refusal(environ: dict[str, Any], loopback_only: bool) -> str | None:
    """Why a request must not reach the UI (one line), or None."""
    authority = environ.get("HTTP_HOST", "")
    if loopback_only and not is_loopback(_hostname(authority)):
        return f"Host {authority!r} is not this machine: the UI answers to 127.0.0.1 or localhost"
    if environ.get("REQUEST_METHOD", "GET") in _SAFE_METHODS:
        return None  # reading: without a CORS header another origin's page cannot read the reply
    origin = environ.get("HTTP_ORIGIN")
    # The host and port decide: behind a proxy that ends TLS the page's scheme is not the one this server sees,
    # and a page elsewhere cannot name this host as its own origin.
    if origin is not None and urllib.parse.urlsplit(origin).netloc != authority:
        return f"a page of {origin} may not drive this UI (same origin only: {authority})"
    if environ.get("HTTP_SEC_FETCH_SITE") in ("cross-site", "same-site"):
        return "a page of another origin may not drive this UI (same origin only)"
    return None


class SameOrigin:
    """WSGI around Locust's app: cross-origin changes refused (403), no CORS header on any response."""

    def __init__(self, app: Callable[..., Iterable[bytes]], loopback_only: bool) -> None:
        self.app, self.loopback_only = app, loopback_only

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if (reason := refusal(environ, self.loopback_only)) is not None:
            body = f"refused: {reason}\n".encode()
            start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("Content-Length", str(len(body)))])  # fmt: skip
            return [body]

        def without_cors(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]
            return start_response(status, kept, exc_info)

        return self.app(environ, without_cors)


@dataclass(frozen=True)
class Confines:
    """What the operator gave on the command line, which the start form may not leave."""

    host: str | None  # the --host (normalized), or None: loopback addresses only
    traces: Path | None  # the folder a form's trace file must be in (--jb-trace-dir, else the --jb-trace file's)
    trace_dir: Path | None
    runs_dir: Path
    monitor: str

    @classmethod
    def of(cls, options: Any, host: str | None) -> Confines:
        trace, trace_dir = str(getattr(options, "jb_trace", "") or ""), getattr(options, "jb_trace_dir", "") or ""
        traces = Path(trace_dir) if trace_dir else (Path(trace).parent if trace and trace not in NAMED else None)
        monitor = getattr(options, "jb_monitor", "") or ""
        return cls(
            host=normalize_target(host, "--host") if host else None,
            traces=traces.resolve() if traces is not None else None,
            trace_dir=Path(trace_dir).resolve() if trace_dir else None,
            runs_dir=Path(getattr(options, "jb_runs_dir", None) or LOCUST_OPTIONS["jb_runs_dir"][0]).resolve(),
            monitor=normalize_target(monitor, "--jb-monitor") if monitor else "",
        )


def _within(value: str, folder: Path | None) -> bool:
    return folder is not None and Path(value).resolve().is_relative_to(folder)


def confine_form(form: Any, options: Any, confines: Confines) -> None:
    """A ``LoadgenError`` naming the first field of the start form that leaves ``confines``."""
    held = set(vars(options)) if options is not None else set()
    for key in form:
        if key in held and key not in LOCUST_FIELDS and key not in LOCUST_OPTIONS:
            raise LoadgenError(f"{key}: not a field of the start form (set it on Locust's command line)")
    if (host := form.get("host")) is not None:
        target = normalize_target(host, "host")
        if confines.host is not None and target != confines.host:
            raise LoadgenError(f"host {host!r}: this Locust sends load to {confines.host} only (its --host)")
        if confines.host is None and not is_loopback(urllib.parse.urlsplit(target).hostname or ""):
            raise LoadgenError(f"host {host!r}: without --host on its command line, this Locust sends load to "
                               "this machine only (127.0.0.1, localhost)")  # fmt: skip
    trace = form.get("jb_trace")
    if trace and trace not in NAMED and not _within(trace, confines.traces):
        where = f"a file in {confines.traces}" if confines.traces else "no file (the command line named none)"
        raise LoadgenError(f"--jb-trace {trace!r}: the form takes a named trace ({', '.join(NAMED)}) or {where}")
    if (trace_dir := form.get("jb_trace_dir")) and not _within(trace_dir, confines.trace_dir):
        raise LoadgenError(f"--jb-trace-dir {trace_dir!r}: the form takes {confines.trace_dir or 'none'} "
                           "(the command line's) or a folder in it")  # fmt: skip
    if (runs_dir := form.get("jb_runs_dir")) is not None and not _within(runs_dir, confines.runs_dir):
        raise LoadgenError(f"--jb-runs-dir {runs_dir!r}: the form takes {confines.runs_dir} (the command line's) "
                           "or a folder in it")  # fmt: skip
    if (monitor := form.get("jb_monitor")) and normalize_target(monitor, "--jb-monitor") != confines.monitor:
        raise LoadgenError(f"--jb-monitor {monitor!r}: the form takes {confines.monitor or 'none'} (the command "
                           "line's) or none")  # fmt: skip


def add_login(web_ui: Any, base: str) -> None:
    """``--web-login``: Locust's login page, checked against ``USER`` and ``PASSWORD_ENV`` (with it unset, nobody
    logs in); a session lasts as long as this Locust process."""
    from flask import redirect, request, session, url_for
    from flask_login import UserMixin, login_user

    class Operator(UserMixin):
        id = USER

    password = os.environ.get(PASSWORD_ENV, "")
    web_ui.login_manager.user_loader(lambda user_id: Operator() if user_id == USER else None)
    web_ui.app.secret_key = secrets.token_bytes(32)
    web_ui.app.config.update(SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_HTTPONLY=True)
    web_ui.auth_args = {"username_password_callback": f"{base}/joulebench/login"}

    @web_ui.app.route(f"{base}/joulebench/login", methods=["POST"])
    def login() -> Any:
        user_ok = hmac.compare_digest(request.form.get("username", "").encode(), USER.encode())
        password_ok = hmac.compare_digest(request.form.get("password", "").encode(), password.encode())
        if user_ok and password_ok and password:
            login_user(Operator())
            session.pop("auth_error", None)
            return redirect(f"{base}/")
        session["auth_error"] = "wrong user name or password"
        return redirect(url_for("locust.login"))


def check_login_password(extra: list[str]) -> None:
    """``joulebench locust --web-login`` needs ``PASSWORD_ENV`` set: without it nobody could log in."""
    if "--web-login" in extra and not os.environ.get(PASSWORD_ENV):
        raise LoadgenError(f"--web-login: set {PASSWORD_ENV} in the environment to the UI's password (user {USER})")
