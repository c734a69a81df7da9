"""The reverse proxy: requests under a ``--proxy`` prefix go to an HTTP/1.1 upstream, through the engine's outbound
connections (``handle.connect``), bodies streamed both ways with backpressure (``handle.link``).

:class:`ProxyServer` is the HTTP/1.1 server (web/protocol.py) with a handle; it is used only when some host has a
proxy, so the static server pays nothing for it. One request at a time talks to an upstream: a request pipelined
behind a proxied one waits in ``queue`` (its answer, or its own exchange) until the one before has answered, so
answers leave in the order asked. An :class:`Exchange` is one request's journey; an :class:`UpstreamConn` one
connection to an upstream, kept in a pool between exchanges when both sides keep alive.

What nginx does, and so this: X-Forwarded-For/-Proto/-Host, Forwarded (RFC 7239) and Via added, hop-by-hop
headers (RFC 9110 7.6.1) dropped both ways; a refused or unreachable upstream is 502, one silent past the connect
or read timeout 504, each a short page; the next upstream in turn is tried when nothing of the request reached the
one that failed, or when the request is idempotent and bodiless; an upstream that fails once is skipped for a
while. Once the answer's head has gone to the client, an upstream that dies aborts the client's connection with a
reset -- never a truncated answer that looks whole. ``Upgrade`` (WebSocket) becomes a tunnel after the 101.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from typing import ClassVar

import httptools

from sockhop.engine.protocol import NOTHING, ClientProtocol, Close, Reply
from sockhop.errors import RemoteProtocolError
from sockhop.web.accesslog import format_entry
from sockhop.web.protocol import CLOSING as CLOSING_STATE
from sockhop.web.protocol import COMPLETE as COMPLETE_EVENT
from sockhop.web.protocol import CONTINUE, MEMO_BYTES, HttpServer, WebOptions
from sockhop.web.protocol import HTTP2 as HTTP2_STATE
from sockhop.web.protocol import IDLE as IDLE_STATE
from sockhop.web.protocol import LAST as LAST_EVENT
from sockhop.web.protocol import _Stop as StopParsing
from sockhop.web.response import error_response, http_date, reason, response_head
from sockhop.web.upstream import FAIL_TIMEOUT, Pool, Route, Upstream

#: Headers that concern one connection only (RFC 9110 7.6.1), never forwarded; plus what the proxy sets itself.
HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    )
)
_REQUEST_DROPPED = HOP_BY_HOP | {b"host", b"expect", b"content-length", b"x-forwarded-proto", b"x-forwarded-host"}
_RESPONSE_DROPPED = HOP_BY_HOP | {b"content-length"}
#: The most of a body kept for the next upstream while the first is still connecting (nginx keeps what it buffered).
REPLAY_LIMIT = 1024 * 1024
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"))


@dataclass(frozen=True)
class ProxyOptions:
    """How the proxy talks to its upstreams (nginx's proxy_connect_timeout, proxy_read_timeout)."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    pool: Pool = field(default_factory=Pool, compare=False)
    via: str = "1.1 sockhop"

    @cached_property
    def via_bytes(self) -> bytes:
        """The Via value as sent, encoded once (not per request)."""
        return self.via.encode()


@dataclass(eq=False)
class _Repeat:
    """A request a connection may send again byte for byte (wrk, a health check, a poll): what its parse decided,
    kept so the same bytes are proxied without parsing them -- as HttpServer's memo answers a static file -- and the
    upstream's request head, made once per upstream."""

    data: bytes
    route: Route
    vhost: tuple
    method: str
    url: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    heads: dict[Upstream, bytes] = field(default_factory=dict)


class _Done(Exception):
    """Raised from a response parser callback: this answer is over (a HEAD's head)."""


def _names_in(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",")}


#: Connection header values that name nothing beyond what is dropped anyway (nginx's "keep-alive"): no set built.
_PLAIN_CONNECTION = frozenset((b"keep-alive", b"close", b"Keep-Alive", b"Close", b"upgrade", b"Upgrade"))
_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason(status)}\r\n".encode()
    return line


class Exchange:
    """One proxied request: which upstreams to try, what has been sent, how far the answer has got."""

    heads: dict[Upstream, bytes] | None = None  # a repeated request's heads, per upstream (ProxyServer._proxy_again)
    # Starting values as class attributes: an exchange sets only what it changes.
    kept_size = 0
    body_sent = 0
    complete = False  # the whole request has been read from the client
    last = False
    started = False
    answered = False  # the answer's head has gone to the client
    finished = False
    conn: UpstreamConn | None = None
    status = 0
    sent = 0  # body bytes to the client, for the access log

    def __init__(self, server: ProxyServer, route: Route, upstreams: list[Upstream], method: str, chunked: bool):
        self.server = server
        self.route = route
        self.tries = upstreams
        self.method = method
        self.url = server.url
        self.version = server.version
        self.chunked = chunked
        self.upgrade = bool(server.parser and server.parser.should_upgrade())
        self.headers = server.headers  # a new list per request (HttpServer._reset_request)
        self.client_keep_alive = server.keep_alive
        self.buffered: list[bytes] = []  # the request's bytes while no upstream connection takes them
        self.kept: list[bytes] | None = []  # the body so far, while no upstream has connected (None: over the limit)
        self.outgoing: list[bytes] = []  # the answer's bytes from the current upstream read

    # -- the request -------------------------------------------------------------------------------------------
    def head_for(self, upstream: Upstream) -> bytes:
        server = self.server
        target = self.route.target(upstream, self.url)
        lines = [self.method.encode(), b" ", target, b" HTTP/1.1\r\nHost: ", upstream.host_bytes, b"\r\n"]
        dropped = _REQUEST_DROPPED
        host = b""
        forwarded_for = b""
        length: bytes | None = None
        named: set[bytes] | None = None  # what the client's Connection header names beyond the usual: hop-by-hop too
        start = len(lines)
        for name, value in self.headers:  # one pass; the fields Connection named are taken out after, if any
            lower = name.lower()
            if lower in dropped:
                if lower == b"host":
                    host = value
                elif lower == b"connection":
                    if value not in _PLAIN_CONNECTION:
                        extra = _names_in(value) - dropped
                        if extra:
                            named = extra if named is None else named | extra
                elif lower == b"content-length" and length is None:
                    length = value
            elif lower == b"x-forwarded-for":
                forwarded_for = forwarded_for + b", " + value if forwarded_for else value
            else:
                lines += (name, b": ", value, b"\r\n")
        if named is not None:
            del lines[start:]
            for name, value in self.headers:
                lower = name.lower()
                if lower not in dropped and lower != b"x-forwarded-for" and lower not in named:
                    lines += (name, b": ", value, b"\r\n")
        lines.append(server.forwarding(host, self.via_received(), forwarded_for))
        if self.upgrade:
            upgrade = next((v for n, v in self.headers if n.lower() == b"upgrade"), b"")
            lines += [b"Connection: upgrade\r\nUpgrade: ", upgrade, b"\r\n"]
        if self.chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        elif length is not None:
            lines += (b"Content-Length: ", length.strip(), b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def via_received(self) -> bytes:
        """The Via entry the upstream is told: the version the request came in by (RFC 9110 7.6.3), then our name."""
        return self.server.proxy.via_bytes

    def body(self, piece: bytes) -> None:
        if self.chunked:
            piece = b"%x\r\n%b\r\n" % (len(piece), piece)
        self._send(piece)
        self.body_sent += len(piece)

    def request_complete(self, last: bool) -> None:
        self.complete = True
        self.last = last
        if self.chunked:
            self._send(b"0\r\n\r\n")

    def _send(self, data: bytes) -> None:
        kept = self.kept
        if kept is not None:  # until an upstream has connected, the body is kept to send to the next one
            kept.append(data)
            self.kept_size += len(data)
            if self.kept_size > REPLAY_LIMIT:
                self.kept = None
        if self.conn is not None and self.started:
            self.conn.handle.send(data)
        else:
            self.buffered.append(data)

    def connected(self) -> None:
        """The upstream took the connection: what was kept for another is no longer needed."""
        self.kept = None

    # -- the upstream ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Take the next upstream's idle connection, or open one, and send what is ready."""
        self.started = True
        server = self.server
        upstream = self.tries.pop(0)
        pool = server.proxy.pool
        loop = server.handle.loop
        conn = pool.take(loop, upstream)
        reused = conn is not None
        if conn is None:
            conn = UpstreamConn(server.proxy, upstream)
            server.handle.connect(
                upstream.address,
                conn,
                tls=upstream.tls,
                server_hostname=upstream.server_hostname,
                timeout=server.proxy.connect_timeout,
            )
        self.conn = conn
        conn.begin(self, reused)
        self.link(conn)
        heads = self.heads
        head = heads.get(upstream) if heads is not None else None
        if head is None:
            head = self.head_for(upstream)
            if heads is not None:
                heads[upstream] = head
        data = [head, *self.buffered]
        self.buffered = []
        if reused:
            self.kept = None
        conn.handle.send(b"".join(data))
        conn.watch(server.clock)

    def failed(self, conn: UpstreamConn, error: BaseException | None, *, connected: bool, timeout: bool) -> None:
        """The upstream connection failed before the answer was over."""
        if self.finished:
            return
        server = self.server
        if not conn.reused:  # a pooled connection closing under us says nothing of the upstream's health
            conn.upstream.failed_until = server.clock() + FAIL_TIMEOUT
        if not self.answered and self.tries and not self.upgrade:
            if not connected and self.kept is not None:  # nothing reached anyone: the next upstream gets it all
                self.buffered = list(self.kept)
                self.conn = None
                self.start()
                return
            if connected and self.method in IDEMPOTENT and self.body_sent == 0 and self.complete:
                self.conn = None
                self.start()
                return
        if not self.answered and conn.reused and self.body_sent == 0 and self.complete and self.method in IDEMPOTENT:
            self.tries.insert(0, conn.upstream)  # a stale keep-alive connection: the same upstream afresh
            self.conn = None
            self.start()
            return
        self.finished = True
        if self.answered:
            self.abort()
            return
        self.gateway_error(HTTPStatus.GATEWAY_TIMEOUT if timeout else HTTPStatus.BAD_GATEWAY)

    def abort(self) -> None:
        """The upstream died once the answer's head had gone: the client must see a failure, not an end."""
        self.server.abort()

    def gateway_error(self, status: int) -> None:
        """No upstream answered: 502, or 504 for a timeout."""
        self.server.gateway_error(self, status)

    def link(self, conn: UpstreamConn) -> None:
        """Backpressure between the client's connection and this upstream connection (HTTP/1.1: one at a time)."""
        self.server.handle.link(conn.handle)

    def upstream_drained(self) -> None:
        """What was handed to the upstream connection has gone to the kernel (asked for by HTTP/2's exchanges)."""

    # -- the answer --------------------------------------------------------------------------------------------
    def answer_head(
        self, status: int, headers: list[tuple[bytes, bytes]], framing: str | None, lowers: list[bytes] | None = None
    ) -> None:
        """The upstream's head, passed on: hop-by-hop fields dropped, Via added, the framing the client needs
        (``lowers``: the fields' names in lower case, when the caller has them)."""
        server = self.server
        self.status = status
        self.answered = True
        lines = [_STATUS_LINES.get(status) or _status_line(status)]
        dropped = _RESPONSE_DROPPED if status != 101 else _RESPONSE_DROPPED - {b"upgrade"}
        named: set[bytes] | None = None  # what a Connection header names beyond the usual: hop-by-hop too
        if lowers is None:
            lowers = [name.lower() for name, _ in headers]
        for lower, (name, value) in zip(lowers, headers, strict=True):  # one pass; Connection's names after
            if lower not in dropped:
                lines += (name, b": ", value, b"\r\n")
            elif lower == b"connection" and value not in _PLAIN_CONNECTION:
                extra = _names_in(value) - dropped - {b"upgrade"}
                if extra:
                    named = extra if named is None else named | extra
        if named is not None:
            lines = [_status_line(status)]
            for name, value in headers:
                lower = name.lower()
                if lower not in dropped and lower not in named:
                    lines += (name, b": ", value, b"\r\n")
        lines += (b"Via: ", server.proxy.via_bytes, b"\r\n")
        self.rechunk = False
        if status == 101:
            lines.append(b"Connection: upgrade\r\n")
        else:
            if framing is not None and framing.isdigit():
                lines += [b"Content-Length: ", framing.encode(), b"\r\n"]
            elif framing == "close":  # the body ends where the upstream closes: chunked to 1.1, close to 1.0
                if self.version == "1.1":
                    lines.append(b"Transfer-Encoding: chunked\r\n")
                    self.rechunk = True
                else:
                    self.last = True
            if self.last or not self.client_keep_alive:
                lines.append(b"Connection: close\r\n")
            elif self.version == "1.0":
                lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        self.outgoing.append(b"".join(lines))

    def answer_body(self, piece: bytes) -> None:
        self.sent += len(piece)
        if self.rechunk:
            piece = b"%x\r\n%b\r\n" % (len(piece), piece)
        self.outgoing.append(piece)

    def pass_on(self) -> None:
        """What one upstream read made of the answer goes to the client in one send (a head and a small body in one
        segment: the client's socket has Nagle on, and a second small write would wait for its delayed ACK)."""
        out = self.outgoing
        if out:
            self.outgoing = []
            self.server.handle.send(out[0] if len(out) == 1 else b"".join(out))

    def answer_complete(self, conn: UpstreamConn, reusable: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if self.rechunk:
            self.outgoing.append(b"0\r\n\r\n")
        self.pass_on()
        # A body on a GET or HEAD is one many upstreams never read: the connection would start with it next time.
        bodiless = self.body_sent == 0 or self.method not in ("GET", "HEAD")
        conn.end(reusable and self.complete and bodiless)
        self.server.finished(self)


class UpstreamConn(ClientProtocol):
    """One connection to an upstream, answering one exchange at a time; idle in the pool between them."""

    def __init__(self, options: ProxyOptions, upstream: Upstream) -> None:
        self.options = options
        self.upstream = upstream
        self.exchange: Exchange | None = None
        self.reused = False
        self.tunnel = False
        self.loop: object = None
        self.timer = None  # the read timeout's (see watch)
        self.last_read = 0.0
        self.held_back = False  # not read on purpose (an HTTP/2 client's shut window): no read timeout meanwhile
        self.parser: httptools.HttpResponseParser | None = None

    def begin(self, exchange: Exchange, reused: bool) -> None:
        self.exchange = exchange
        self.reused = reused
        self.loop = exchange.server.handle.loop
        if not reused or self.parser is None:  # a pooled connection's parser ended its last answer cleanly: kept
            self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.framing: str | None = None
        self.status = 0

    def watch(self, clock) -> None:
        """The read timeout, from now: one timer per connection, re-armed only when it fires and the upstream has
        said something since -- not a timer per read (nginx's proxy_read_timeout: between two reads)."""
        self.clock = clock
        self.last_read = clock()
        if self.timer is None:
            self.timer = self.handle.call_later(self.options.read_timeout, self._check)

    def _check(self) -> Reply:
        self.timer = None
        exchange = self.exchange
        if exchange is None or self.tunnel:
            return NOTHING
        if self.held_back:
            self.last_read = self.clock()
        left = self.last_read + self.options.read_timeout - self.clock()
        if left > 0:
            self.timer = self.handle.call_later(left, self._check)
            return NOTHING
        exchange.failed(self, TimeoutError("read timeout"), connected=True, timeout=True)
        self._forget()
        return Reply(close=Close.AT_ONCE)

    def end(self, reusable: bool) -> None:
        """The exchange is over: back to the pool, or closed."""
        self.exchange = None
        self.handle.unlink()
        if not (reusable and not self.handle.closed and self.options.pool.put(self.loop, self.upstream, self)):
            self.handle.close(Close.AT_ONCE)

    # -- the engine contract -------------------------------------------------------------------------------------
    def connection_made(self, peer, local) -> Reply:
        if self.exchange is not None:
            self.exchange.connected()
        return NOTHING

    def output_drained(self) -> Reply:
        if self.exchange is not None:
            self.exchange.upstream_drained()
        return NOTHING

    def data_received(self, data: bytes) -> Reply:
        exchange = self.exchange
        if exchange is None:  # an idle connection has nothing to say: whatever it is, it ends here
            return Reply(close=Close.AT_ONCE)
        if self.tunnel:
            exchange.server.handle.send(data)
            return NOTHING
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            exchange.pass_on()
            self.tunnel = True
            exchange.server.tunnelled(self)
            rest = data[exc.args[0] :]
            if rest:
                exchange.server.handle.send(rest)
            return NOTHING
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Done):
                return NOTHING
            exchange.outgoing = []
            exchange.failed(self, exc, connected=True, timeout=False)
            return Reply(close=Close.AT_ONCE)
        if self.exchange is None:
            return NOTHING
        exchange.pass_on()
        self.last_read = exchange.server.clock()
        return NOTHING

    def eof_received(self) -> Reply:
        exchange = self.exchange
        if exchange is not None:
            if self.tunnel:
                exchange.server.handle.close()
                return Reply(close=Close.AT_ONCE)
            if self.framing == "close" and self.status:  # the body's end is the connection's
                exchange.answer_complete(self, False)
                return Reply(close=Close.AT_ONCE)
            exchange.failed(self, ConnectionError("the upstream closed"), connected=True, timeout=False)
        self._forget()
        return Reply(close=Close.AT_ONCE)

    def timed_out(self) -> Reply:
        exchange = self.exchange
        if exchange is not None:
            exchange.failed(self, TimeoutError("read timeout"), connected=True, timeout=True)
        self._forget()
        return Reply(close=Close.AT_ONCE)

    def connection_failed(self, error: Exception) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.failed(self, error, connected=False, timeout=isinstance(error, TimeoutError))
        self._forget()

    def connection_lost(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            if self.tunnel:
                exchange.finished = True
                exchange.server.handle.close(Close.RESET if self.handle.error else Close.LINGER)
            else:
                exchange.failed(self, self.handle.error, connected=True, timeout=False)
        self._forget()

    def _forget(self) -> None:
        """The connection is over: out of the pool, and its read timeout let go (a timer left in the engine's heap
        would hold this connection, its socket and parser, for the rest of the timeout)."""
        self.options.pool.remove(self.loop, self.upstream, self)
        self.exchange = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- httptools callbacks -------------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        exchange = self.exchange
        assert exchange is not None
        if 100 <= status < 200 and status != 101:  # 100 Continue, 103 Early Hints: the proxy said its own 100
            self.headers = []
            return
        self.status = status
        framing: str | None = None
        headers = self.headers
        lowers = [name.lower() for name, _ in headers]
        if b"content-length" in lowers:  # the last one, as llhttp reads it
            value = headers[len(lowers) - 1 - lowers[::-1].index(b"content-length")][1]
            framing = value.strip().decode("ascii", "replace")
        chunked = b"transfer-encoding" in lowers
        bodiless = exchange.method == "HEAD" or status in (204, 304) or status == 101
        if chunked:
            framing = "close"  # passed on re-chunked (1.1) or close-delimited (1.0): its own chunks are not kept
        elif framing is None and not bodiless:
            framing = "close"
        if bodiless and framing == "close":
            framing = None
        if exchange.method == "HEAD" and framing is None:
            framing = next((v.decode() for n, v in self.headers if n.lower() == b"content-length"), None)
        self.framing = "close" if framing == "close" and not chunked else framing
        exchange.answer_head(status, headers, framing, lowers)
        if chunked:
            self.framing = "chunked"
        if exchange.method == "HEAD":
            exchange.answer_complete(self, False)  # llhttp would wait for a body the length announces
            raise _Done

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.answer_body(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is None or not self.status or self.status == 101:  # an interim 1xx, a HEAD's end, a tunnel
            return
        if self.framing == "close":
            return  # llhttp ends a close-delimited body at EOF only
        exchange.answer_complete(self, self.parser.should_keep_alive())


class ProxyServer(HttpServer):
    """The HTTP/1.1 server with a handle, for hosts with proxied prefixes."""

    wakeable: ClassVar[bool] = True
    proxying: ClassVar[bool] = True
    tunnel: UpstreamConn | None = None
    current: Exchange | None = None  # the exchange of the request being read
    in_event = False
    made: Exchange | None = None  # the exchange the current event's parse made
    repeat: _Repeat | None = None  # a request sent again, proxied unparsed each further time (see _Repeat)
    parsed: tuple[bytes, Exchange, tuple] | None = None  # the last request parsed, if it could be (bytes, exchange,
    # host): a _Repeat is made of it only when the same bytes come again (varied requests make none)

    def __init__(self, options: WebOptions, proxy: ProxyOptions) -> None:
        super().__init__(options)
        self.proxy = proxy
        self.queue: deque[Exchange | Reply] = deque()
        self.forwarded: tuple[bytes, bytes, bytes] | None = None  # (Host, Via, the fields made of them)

    def forwarding(self, host: bytes, via: bytes, forwarded_for: bytes) -> bytes:
        """X-Forwarded-For, -Proto, -Host, Forwarded and Via: the same for every request of a connection that names
        the same host and brings no X-Forwarded-For of its own, so made once for it."""
        made = self.forwarded
        if not forwarded_for and made is not None and made[0] == host and made[1] == via:
            return made[2]
        client = self.peer_host.encode()
        proto = b"https" if self.secure else b"http"
        node = b'"[' + client + b']"' if b":" in client else client
        fields = b"".join(
            (
                b"X-Forwarded-For: ",
                forwarded_for + b", " + client if forwarded_for else client,
                b"\r\nX-Forwarded-Proto: ",
                proto,
                b"\r\nX-Forwarded-Host: ",
                host,
                b"\r\nForwarded: for=",
                node,
                b";proto=",
                proto,
                b';host="',
                host.replace(b'"', b""),
                b'"\r\nVia: ',
                via,
                b"\r\n",
            )
        )
        if not forwarded_for:
            self.forwarded = (host, via, fields)
        return fields

    # -- the request, from HttpServer -------------------------------------------------------------------------
    def _proxy(self, chunked: bool, waiting: bool) -> bool:
        """At the end of a request's head: True if an upstream answers it (the exchange is queued)."""
        host = self.host_field
        vhost = self.hosts.pick(host.decode("latin-1") if host is not None else None)
        routes = vhost.site.options.proxy
        if routes is None:
            return False
        route = routes.match(self.url)
        if route is None:
            return False
        self.site, self.log = vhost
        exchange = Exchange(self, route, route.order(self.clock()), self.method, chunked)
        early = list(self.out)
        self.out = []
        if waiting:
            early.append(CONTINUE)
            self.continued = True
        if early:
            self.queue.append(Reply(tuple(early)))
        self.queue.append(exchange)
        self.current = exchange
        self.made = exchange
        return True

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self.current is not None:
            self.current.body(body)

    def on_message_complete(self) -> None:
        exchange = self.current
        if exchange is None:
            super().on_message_complete()
            return
        self.current = None
        self.requests += 1
        self.sample = None
        last = not self.keep_alive or self.stopping or self.requests >= self.limits.max_requests
        if self.asked_close:
            self.peer_done = True
        exchange.request_complete(last)
        self.move(LAST_EVENT if last else COMPLETE_EVENT)
        if last and not exchange.upgrade:  # an upgrade's parser stops by itself, saying where the tunnel begins
            raise StopParsing

    def tunnelled_request(self, rest: bytes) -> bool:
        """The client's request was an upgrade: what follows its head is the tunnel's (sent once the 101 is)."""
        exchange = self.queue[-1] if self.queue else None
        if isinstance(exchange, Exchange) and exchange.upgrade and not exchange.finished:
            if rest:
                exchange._send(rest)
            return True
        return False

    def _fail(self, exc: RemoteProtocolError) -> None:
        """A request broken mid-way (a lying length, a chunk size that overflows): its exchange, if it has begun,
        is dropped with its upstream connection, so the error is answered at once."""
        exchange = self.current
        if exchange is not None:
            self.current = None
            exchange.finished = True
            if exchange.conn is not None:
                exchange.conn.exchange = None
                exchange.conn.handle.close(Close.AT_ONCE)
            if exchange in self.queue:
                self.queue.remove(exchange)
        super()._fail(exc)

    def _become_http2(self, data: bytes) -> Reply:
        """The client opened with HTTP/2's preface: its streams are served by :class:`H2ProxyServer`, which sends
        the proxied ones to the upstreams through the same exchanges."""
        from sockhop.web.h2proxy import H2ProxyServer

        self.h2 = H2ProxyServer(self.options, self.peer_host, self.on_result, self)
        self.state = HTTP2_STATE
        return self.h2.data_received(data)

    # -- the engine contract -------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> Reply | bytes:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.handle.send(data)
            return NOTHING
        if self.queue:
            self.memo = {}  # nothing answered out of turn from the memo while an upstream answers
        elif self.state is IDLE_STATE:
            repeat = self.repeat
            if repeat is None or data != repeat.data:
                parsed = self.parsed
                repeat = None
                if parsed is not None and data == parsed[0]:
                    data, exchange, vhost = parsed
                    repeat = self.repeat = _Repeat(data, exchange.route, vhost, exchange.method, exchange.url,
                                                   exchange.version, exchange.headers)  # fmt: skip
            if repeat is not None and not self.stopping and self.requests + 1 < self.limits.max_requests:
                return self._proxy_again(repeat)
        began_idle = self.state is IDLE_STATE and not self.queue
        self.made = None
        self.in_event = True
        try:
            reply = super().data_received(data)
        finally:
            self.in_event = False
            self.memo = self.options.memo
        made = self.made
        if made is not None:
            self.made = None
            if began_idle:
                self._remember(data, made)
        return reply

    def _remember(self, data: bytes, exchange: Exchange) -> None:
        """Keep what parsing ``data`` decided if the same bytes can be proxied again without it: one whole bodiless
        GET or HEAD alone in its read, complete, the connection kept alive."""
        if (
            self.state is IDLE_STATE
            and self.begun == 1
            and not self.failed
            and not self.continued
            and self.body_bytes == 0
            and len(data) <= MEMO_BYTES
            and exchange.complete
            and not exchange.last
            and not exchange.chunked
            and not exchange.upgrade
            and exchange.body_sent == 0
            and exchange.method in ("GET", "HEAD")
            and self.bad_method is None
        ):
            self.parsed = (data, exchange, (self.site, self.log))
        else:
            self.parsed = None

    def _proxy_again(self, repeat: _Repeat) -> Reply:
        """The last request again, byte for byte: proxied as parsing it decided, without the parser."""
        self.now = now = self.clock()
        self.requests += 1
        self.method, self.url, self.version = repeat.method, repeat.url, repeat.version
        self.headers = repeat.headers
        self.keep_alive = True
        self.asked_close = False
        self.site, self.log = repeat.vhost
        route = repeat.route
        exchange = Exchange(self, route, route.order(now), repeat.method, False)
        exchange.heads = repeat.heads
        exchange.complete = True
        self.queue.append(exchange)
        self.in_event = True
        try:
            return self._flush()
        finally:
            self.in_event = False

    def _flush(self) -> Reply:
        reply = super()._flush()
        if not self.queue:
            return reply
        if reply.send or reply.close:
            self.queue.append(Reply(reply.send, reply.close))
        elif reply.alarm is None:
            reply = NOTHING
        pieces, close = self._release()
        if not pieces and not close and reply is NOTHING:
            return NOTHING
        return Reply(pieces, close, None, reply.alarm)

    def _release(self) -> tuple[tuple, bool | Close]:
        """What may go out now: the answers queued before the first exchange still under way, which then starts."""
        pieces: list = []
        close: bool | Close = False
        queue = self.queue
        while queue and isinstance(queue[0], Reply):
            reply = queue.popleft()
            pieces.extend(reply.send)
            close = close or reply.close
        if close:
            for item in queue:
                if isinstance(item, Exchange):
                    item.finished = True
            queue.clear()
        elif queue:
            head = queue[0]
            assert isinstance(head, Exchange)
            if not head.started:
                head.start()
        return tuple(pieces), close

    def finished(self, exchange: Exchange) -> None:
        """An exchange's answer is over: log it, and let what waited behind it go."""
        if self.queue and self.queue[0] is exchange:
            self.queue.popleft()
        self._log(exchange)
        if self.in_event:
            return  # the flush at the end of this event releases the rest
        pieces, close = self._release()
        if (exchange.last or self.stopping) and not self.queue:  # the last answer, or a stop came meanwhile
            close = close or True
        if pieces or close:
            self.handle.carry_out(Reply(pieces, close))

    def gateway_error(self, exchange: Exchange, status: int) -> None:
        """502 or 504 before any of the answer went out: a short page, and the connection ends (the rest of the
        request, if any, is not read)."""
        exchange.status = status
        response = error_response(status, close=True, head=exchange.method == "HEAD")
        self._log(exchange, response.length)
        if self.on_result is not None:
            self.on_result(str(status))
        head = response_head(status, http_date(self.clock()), response.headers, "close")
        for item in self.queue:
            if isinstance(item, Exchange) and item is not exchange:
                item.finished = True
        self.queue.clear()
        self.current = None
        self.state = CLOSING_STATE
        self.handle.carry_out(Reply((head, *response.body), True))

    def abort(self) -> None:
        """The upstream died mid-answer: the client must see a failure, not an end."""
        self.queue.clear()
        self.state = CLOSING_STATE
        self.handle.close(Close.RESET)

    def tunnelled(self, conn: UpstreamConn) -> None:
        self.tunnel = conn
        self.state = CLOSING_STATE
        if self.queue and self.queue[0] is conn.exchange:
            self.queue.popleft()
            self._log(conn.exchange)

    def _log(self, exchange: Exchange | None, size: int | None = None) -> None:
        if exchange is None:
            return
        if self.on_result is not None and exchange.status and size is None:
            self.on_result(str(exchange.status))
        log = self.log
        if log is None:
            return
        referer = agent = None
        for name, value in exchange.headers:
            lower = name.lower()
            if lower == b"referer":
                referer = value.decode("latin-1")
            elif lower == b"user-agent":
                agent = value.decode("latin-1")
        request = f"{exchange.method} {exchange.url.decode('latin-1')} HTTP/{exchange.version}"
        now = self.clock()
        sent = exchange.sent if size is None else size
        log.add(format_entry(self.peer_host, now, request, exchange.status, sent, referer, agent), now)

    def eof_received(self) -> Reply:
        if self.tunnel is not None:
            self.tunnel.handle.close()  # the client's half-close, passed on
            return NOTHING
        if self.queue:
            if self.current is not None:  # the client left in the middle of a request: nothing more to do
                return Reply(close=Close.AT_ONCE)
            self.queue.append(Reply(close=Close.AT_ONCE))  # after the answers it is owed
            return NOTHING
        return super().eof_received()

    def stop_requested(self) -> Reply:
        if self.queue or self.tunnel is not None:
            self.stopping = True
            return NOTHING
        return super().stop_requested()

    def timed_out(self) -> Reply:
        head = self.queue[0] if self.queue else None
        if isinstance(head, Exchange) and head.started and not head.finished:
            head.finished = True
            if head.conn is not None:
                head.conn.handle.close(Close.AT_ONCE)
            if head.answered:
                return Reply(close=Close.RESET)
            response = error_response(HTTPStatus.GATEWAY_TIMEOUT, close=True)
            head.status = HTTPStatus.GATEWAY_TIMEOUT
            self._log(head, response.length)
            return Reply((response_head(504, http_date(self.clock()), response.headers, "close"), *response.body), True)
        if self.tunnel is not None:
            return Reply(close=True)
        return super().timed_out()

    def connection_lost(self) -> None:
        for item in self.queue:
            if isinstance(item, Exchange) and item.conn is not None and not item.finished:
                item.finished = True
                item.conn.exchange = None
                item.conn.handle.close(Close.AT_ONCE)
        self.queue.clear()
        if self.tunnel is not None and not self.tunnel.handle.closed:
            self.tunnel.handle.close(Close.AT_ONCE)
        super().connection_lost()


def make_proxy_factory(options: WebOptions, proxy: ProxyOptions):
    def factory() -> ProxyServer:
        return ProxyServer(options, proxy)

    return factory
