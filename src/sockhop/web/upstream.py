"""Where a reverse proxy sends requests: upstreams as ``--proxy PREFIX=URL[,URL...]`` names them, the round robin
that picks one (skipping a failed one for a while, as nginx's ``max_fails``/``fail_timeout``), and the keep-alive
pool of idle upstream connections.

An upstream is ``http://IP:PORT[/PATH]``, ``https://NAME-OR-IP:PORT[/PATH]`` (its certificate verified against the
system's store or ``--proxy-ca``) or ``unix:/path/to.sock[:/PATH]``. A name is looked up once, at startup, as nginx
does; the engine itself never resolves. As nginx's ``proxy_pass``: with a path in the URL the matched PREFIX is
replaced by it (``/api/=http://10.0.0.1:8000/`` sends ``/api/x`` as ``/x``); without one the request's own path goes
on unchanged.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import socket
import ssl
import weakref
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sockhop.errors import SockhopError


class UpstreamError(SockhopError):
    """An upstream cannot be used as written."""


#: How long an upstream that failed is skipped (nginx's fail_timeout).
FAIL_TIMEOUT = 10.0


@dataclass(eq=False)
class Upstream:
    """One upstream server."""

    url: str
    address: tuple[str, int] | str  # (IP, port) or a Unix socket's path
    host: str  # the Host header it is sent (nginx's $proxy_host)
    path: str | None  # the URL's path, replacing the prefix; None: the request's path unchanged
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None
    failed_until: float = 0.0

    def __post_init__(self) -> None:
        self.host_bytes = self.host.encode()  # the Host header, encoded once

    def __str__(self) -> str:
        return self.url


@dataclass(eq=False)
class Route:
    """A URL prefix and the upstreams that serve it, in turn."""

    prefix: str
    upstreams: list[Upstream]
    turn: Any = field(default_factory=itertools.count)

    def order(self, now: float) -> list[Upstream]:
        """The upstreams to try for one request: the next one in turn first, then the others; those that failed
        lately go last (all of them failed: try them all the same, as nginx does when every one is down)."""
        n = len(self.upstreams)
        if n == 1:
            return list(self.upstreams)
        start = next(self.turn) % n
        ring = self.upstreams[start:] + self.upstreams[:start]
        return [u for u in ring if u.failed_until <= now] + [u for u in ring if u.failed_until > now]

    def target(self, upstream: Upstream, path: bytes) -> bytes:
        """The request target the upstream is sent."""
        if upstream.path is None:
            return path
        return upstream.path.encode() + path[len(self.prefix) :]


class Routes:
    """The proxied prefixes of one host; the longest that matches a path wins."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        self.first = tuple({r.prefix[:1].encode() for r in routes})

    def match(self, path: bytes) -> Route | None:
        for route in self.routes:
            if path.startswith(route.prefix.encode()):
                return route
        return None


def proxy_spec(text: str) -> tuple[str, list[str]]:
    """``PREFIX=URL[,URL...]`` as argparse's ``type`` (URLs are checked, not yet resolved)."""
    prefix, sep, rest = text.partition("=")
    if not sep or not prefix.startswith("/") or not rest:
        raise argparse.ArgumentTypeError(f"not /PREFIX=URL[,URL...]: {text!r}")
    urls = [u.strip() for u in rest.replace("|", ",").split(",") if u.strip()]
    for url in urls:
        try:
            _split(url)
        except UpstreamError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return prefix, urls


def _split(url: str) -> tuple[str, str | None, int | None, str | None]:
    """(scheme, host or socket path, port, path) of an upstream URL."""
    if url.startswith("unix:"):
        rest = url[5:]
        sock_path, colon, path = rest.partition(":")
        if not sock_path.startswith("/"):
            raise UpstreamError(f"not unix:/PATH[:/URI]: {url!r}")
        if colon and not path.startswith("/"):
            raise UpstreamError(f"the URI after the socket's path must start with '/': {url!r}")
        return "unix", sock_path, None, path if colon else None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"not an http://, https:// or unix: upstream: {url!r}")
    if parts.query or parts.fragment or parts.username:
        raise UpstreamError(f"an upstream URL has no query, fragment or user: {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UpstreamError(f"bad port in {url!r}") from None
    return parts.scheme, parts.hostname, port, parts.path or None


def make_upstream(url: str, cafile: str | None = None) -> Upstream:
    """An upstream ready to connect to: its name resolved once (now), its TLS context made."""
    scheme, host, port, path = _split(url)
    assert host is not None
    if scheme == "unix":
        return Upstream(url, host, "localhost", path)
    assert port is not None
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        try:
            ip = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
        except (OSError, IndexError) as exc:
            raise UpstreamError(f"cannot resolve the upstream {host}: {exc}") from None
    literal = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    header = literal if port == default else f"{literal}:{port}"
    tls = None
    if scheme == "https":
        try:
            tls = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"cannot load the upstream CA {cafile}: {exc}") from None
        tls.set_alpn_protocols(["http/1.1"])
    return Upstream(url, (ip, port), header, path, tls, host if scheme == "https" else None)


def make_routes(specs: list[tuple[str, list[str]]], cafile: str | None = None) -> Routes | None:
    """The routes of one host from its ``(prefix, urls)`` pairs; a prefix named twice gathers its upstreams."""
    if not specs:
        return None
    gathered: dict[str, list[Upstream]] = {}
    for prefix, urls in specs:
        gathered.setdefault(prefix, []).extend(make_upstream(url, cafile) for url in urls)
    return Routes([Route(prefix, ups) for prefix, ups in gathered.items()])


class Pool:
    """Idle keep-alive connections to the upstreams, per loop (an outbound connection belongs to the reactor that
    drives it: under the event loop every client shares one pool; under the blocking models a client connection
    reuses its own)."""

    def __init__(self) -> None:
        self.idle: weakref.WeakKeyDictionary[Any, dict[Upstream, list[Any]]] = weakref.WeakKeyDictionary()

    def take(self, loop: Any, upstream: Upstream) -> Any | None:
        conns = self.idle.get(loop, {}).get(upstream)
        while conns:
            conn = conns.pop()
            if not conn.handle.closed:
                return conn
        return None

    def put(self, loop: Any, upstream: Upstream, conn: Any, limit: int = 64) -> bool:
        conns = self.idle.setdefault(loop, {}).setdefault(upstream, [])
        if len(conns) >= limit:
            return False
        conns.append(conn)
        return True

    def remove(self, loop: Any, upstream: Upstream, conn: Any) -> None:
        conns = self.idle.get(loop, {}).get(upstream)
        if conns and conn in conns:
            conns.remove(conn)
