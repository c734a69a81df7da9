"""The dashboard as served: the page, the JSON API, the event stream, behind the checks that keep it safe.

Safe by default:

* a password (``--dashboard-password-file``: HTTP Basic, any user name, compared in constant time) is asked for on
  every request when one is given -- and the face gives the dashboard no address but loopback without one;
* without a password, only requests naming the server by an IP address or ``localhost`` are answered: a page
  elsewhere cannot reach it through a name it points at 127.0.0.1 (DNS rebinding);
* the page runs under a Content-Security-Policy that loads nothing from elsewhere, and may not be framed; a
  message's HTML is served sanitised, under a policy with no script, for a sandboxed frame of the page only;
* deletes are POSTs with the token header (api.py), and no path from a URL reaches the filesystem (inbox.py).

:class:`DashboardServer` serves it on its own engine -- always the event loop, in a thread of the serving master --
whatever model the services run under: an open stream would hold the only thread of ``iterative`` or a thread of
``pool``, and under ``prefork`` every worker would watch the same Maildir and feed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from sockhop.dashboard.api import PREFIX, Answer, Api
from sockhop.dashboard.http import DashboardConnection
from sockhop.dashboard.live import Hub, Watch
from sockhop.engine.eventloop import EventLoopServer
from sockhop.engine.limits import Limits
from sockhop.engine.listener import Listener
from sockhop.errors import SockhopError
from sockhop.web.response import http_date, reason

log = logging.getLogger("sockhop.dashboard")

#: The page's own policy: everything from here, nothing from elsewhere, never inside another site's frame.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # fmt: skip
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/style.css": ("style.css", "text/css; charset=utf-8")}  # fmt: skip
EVENTS = PREFIX + "events"


class DashboardError(SockhopError):
    """The dashboard cannot be set up as asked."""


@dataclass(frozen=True)
class Stream(Answer):
    """The answer that is an event stream (http.py keeps the connection for it)."""

    stream: bool = True


def error(status: int, message: str) -> Answer:
    return Answer(status, "application/json", json.dumps({"error": message}).encode() + b"\n")


def read_password(path: str) -> str:
    """The first line of the password file."""
    try:
        with open(path, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DashboardError(
            f"cannot read the dashboard password file {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not password:
        raise DashboardError(f"the dashboard password file {path} is empty")
    return password


def _local_name(host_header: str) -> bool:
    """Host names an IP address or localhost (with or without a port)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Dashboard:
    """Everything a dashboard connection needs, shared by all of them."""

    def __init__(self, api: Api, hub: Hub, password: str | None = None, clock: Callable[[], float] = time.time):
        self.api = api
        self.hub = hub
        self.password = password.encode() if password is not None else None
        self.clock = clock
        package = resources.files("sockhop.dashboard") / "static"
        self.static = {path: (package.joinpath(name).read_bytes(), kind) for path, (name, kind) in STATIC.items()}

    def factory(self) -> DashboardConnection:
        return DashboardConnection(self)

    # -- answering ---------------------------------------------------------------------------------------------
    def respond(self, method: str, target: str, headers: dict[str, str]) -> Answer:
        refused = self._refused(headers)
        if refused is not None:
            return refused
        path = target.partition("?")[0]
        if path == EVENTS and method == "GET":
            return Stream(200, "text/event-stream", b"")
        if path == PREFIX + "services" and method in ("GET", "HEAD"):
            return Answer(200, "application/json", json.dumps(self.hub.services_json()).encode() + b"\n")
        if path == PREFIX + "activity" and method in ("GET", "HEAD"):
            return Answer(200, "application/json", json.dumps({"lines": self.hub.recent_lines()}).encode() + b"\n")
        if path.startswith(PREFIX):
            return self.api.handle(method, target, headers)
        found = self.static.get(path)
        if found is None:
            return error(404, "not found: the dashboard is at /, its API under /api/v1/")
        if method not in ("GET", "HEAD"):
            return Answer(405, "application/json", b'{"error": "use GET"}\n', (("Allow", "GET, HEAD"),))
        body, kind = found
        return Answer(200, kind, body, (("Content-Security-Policy", PAGE_CSP),))

    def _refused(self, headers: dict[str, str]) -> Answer | None:
        if self.password is not None:
            if self._authorized(headers.get("authorization", "")):
                return None
            return Answer(401, "application/json", b'{"error": "the dashboard needs its password"}\n',
                          (("WWW-Authenticate", 'Basic realm="sockhop dashboard", charset="UTF-8"'),))  # fmt: skip
        if not _local_name(headers.get("host", "")):
            return error(403, "this dashboard answers to localhost or an IP address only (set a password to name it)")
        return None

    def _authorized(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        password = decoded.partition(b":")[2]
        assert self.password is not None
        return hmac.compare_digest(password, self.password)

    # -- the bytes ---------------------------------------------------------------------------------------------
    def wire(self, answer: Answer, *, head: bool = False, close: bool = False) -> list[bytes]:
        headers = [("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body))),
                   ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                   ("Referrer-Policy", "no-referrer")]  # fmt: skip
        headers += [(n, v) for n, v in answer.headers if n.lower() not in ("x-content-type-options", "referrer-policy")]
        # A message's HTML view (a policy with no script at all) may be framed by the page only; nothing else may.
        framed = answer.content_type.startswith("text/html") and any(
            n.lower() == "content-security-policy" and "script-src" not in v for n, v in answer.headers
        )
        if framed:
            headers = [(n, v + "; frame-ancestors 'self'" if n.lower() == "content-security-policy" else v)
                       for n, v in headers]  # fmt: skip
        headers.append(("X-Frame-Options", "SAMEORIGIN" if framed else "DENY"))
        if close:
            headers.append(("Connection", "close"))
        start = f"HTTP/1.1 {answer.status} {reason(answer.status)}\r\nServer: sockhop\r\nDate: {self._date()}\r\n"
        text = start + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        out = [text.encode("latin-1", "replace")]
        if not head and answer.body:
            out.append(answer.body)
        return out

    def _date(self) -> str:
        return http_date(self.clock())

    def stream_head(self) -> bytes:
        return (
            f"HTTP/1.1 200 OK\r\nServer: sockhop\r\nDate: {self._date()}\r\n"
            "Content-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\n"
            "X-Content-Type-Options: nosniff\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
            "retry: 2000\n\n"
        ).encode()


class DashboardServer:
    """The dashboard on its listening socket, served by an event loop of its own in a thread of the master.

    The socket is bound with the others (before any privilege drop); ``start`` once serving, ``stop`` at the end.
    """

    def __init__(self, sock: socket.socket, dashboard: Dashboard, limits: Limits | None = None) -> None:
        self.sock = sock
        self.dashboard = dashboard
        limits = limits or Limits(idle_timeout=60.0, max_connections=256, grace=1.0)
        listener = Listener(sock, dashboard.factory, name="dashboard")
        self.server = EventLoopServer([listener], limits, jobs=[Watch(dashboard.hub)])
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        # The thread must not take the main loop's signals (a signal it took would not wake the loop's poll).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self.thread = threading.Thread(target=self._run, name="sockhop-dashboard", daemon=True)
            self.thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _run(self) -> None:
        try:
            self.server.serve()
        except Exception as exc:  # noqa: BLE001 -- the services go on without their dashboard
            log.error("the dashboard stopped: %s: %s", type(exc).__name__, exc)

    def stop(self) -> None:
        if self.thread is not None:
            self.server.stop()
            self.thread.join(5.0)
        else:
            self.sock.close()
