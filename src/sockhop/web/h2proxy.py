"""The reverse proxy over HTTP/2: a stream whose path is under a ``--proxy`` prefix is one :class:`H2Exchange`, the
HTTP/1.1 proxy's exchange (web/proxy.py: the same upstreams in turn, pool, forwarding headers, retries, 502/504)
with its ends made of an HTTP/2 stream instead of an HTTP/1.1 connection.

Both directions keep HTTP/2's flow control and bound what is held:

* the answer: the upstream's head becomes a HEADERS frame (connection-specific fields dropped), its body DATA
  frames sent as the stream's and the connection's windows allow (web/h2server.py's pump); past ``HIGH`` bytes
  waiting for the client's window the upstream connection is no longer read, and is again below ``LOW``;
* the request body: DATA frames go to the upstream as they come, and their bytes are given back to the client's
  windows only once the upstream connection has handed them to the kernel (``WHEN_DRAINED`` on the outbound
  connection), so a slow upstream holds the client back by its window, never by memory here.

An upstream that dies once the head has gone resets the stream (RST_STREAM(INTERNAL_ERROR)) -- never an END_STREAM
that makes a cut answer look whole; a client's RST_STREAM closes the upstream connection of that stream only. The
other streams of the connection carry on either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h2.events
import h2.exceptions
from h2.errors import ErrorCodes

from sockhop.engine.protocol import WHEN_DRAINED, Close, Reply
from sockhop.web.accesslog import AccessLog, format_entry
from sockhop.web.h2server import Http2Server, _Stream
from sockhop.web.proxy import _RESPONSE_DROPPED, Exchange, UpstreamConn, _names_in
from sockhop.web.response import error_response

if TYPE_CHECKING:
    from sockhop.web.proxy import ProxyServer
    from sockhop.web.upstream import Route, Upstream

#: Bytes of an answer held for a stream whose window is shut before its upstream is no longer read ...
HIGH = 256 * 1024
#: ... and below which it is read again.
LOW = 64 * 1024


class _Piped(_Stream):
    """An answer arriving from an upstream: its pieces grow while the pump sends them."""

    __slots__ = ("exchange", "sid", "open", "size", "paused", "ended", "trailers")
    piped = True

    def __init__(self, exchange: H2Exchange, sid: int) -> None:
        super().__init__([], 0)
        self.exchange = exchange
        self.sid = sid
        self.open = True  # more may come from the upstream
        self.size = 0  # bytes held in ``pieces``
        self.paused = False  # the upstream connection is not read: too much is held
        self.ended = False  # END_STREAM has gone (with the head: HEAD, 204, 304)
        self.trailers: list[tuple[bytes, bytes]] = []

    def add(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self.size += len(piece)
        if self.size > HIGH and not self.paused:
            conn = self.exchange.conn
            if conn is not None:
                self.paused = conn.held_back = True
                conn.handle.pause_reading()

    def sent(self, count: int) -> None:
        self.size -= count
        if self.paused and self.size <= LOW:
            self.resume()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            conn = self.exchange.conn
            if conn is not None and not conn.handle.closed:
                conn.held_back = False
                conn.last_read = conn.clock()
                conn.handle.resume_reading()

    def over(self) -> bool:
        """The upstream's answer is whole and nothing but what is held remains: the last DATA frame ends the stream
        (without trailers to follow)."""
        if self.open or self.trailers or self.ended:
            return False
        self.ended = True
        return True

    def end(self, conn: h2.connection.H2Connection) -> bool:
        """Called when everything held has been sent: True once the stream is over (END_STREAM sent now)."""
        if self.open:
            return False
        if not self.ended:
            self.ended = True
            if self.trailers:
                conn.send_headers(self.sid, self.trailers, end_stream=True)
            else:
                conn.end_stream(self.sid)
        return True

    def release(self) -> None:
        """The stream is gone (the client reset it, the connection closed): so is its upstream exchange."""
        self.pieces = []
        self.exchange.cancel()


class H2Exchange(Exchange):
    """One proxied HTTP/2 stream: :class:`Exchange`'s upstream side, with a stream for its client side."""

    def __init__(
        self,
        server: H2ProxyServer,
        sid: int,
        route: Route,
        upstreams: list[Upstream],
        method: str,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        chunked: bool,
        log: AccessLog | None,
    ) -> None:
        self.server = server  # type: ignore[assignment]
        self.sid = sid
        self.route = route
        self.tries = upstreams
        self.method = method
        self.url = path
        self.version = "2.0"
        self.chunked = chunked
        self.upgrade = False  # HTTP/2 has no Upgrade (RFC 9113 8.6)
        self.headers = headers
        self.client_keep_alive = True
        self.buffered: list[bytes] = []
        self.kept: list[bytes] | None = []
        self.kept_size = 0
        self.body_sent = 0
        self.received = 0  # request body bytes from the client
        self.held = 0  # of those, what the client's windows have not been given back yet
        self.complete = False
        self.last = False
        self.started = False
        self.answered = False
        self.finished = False
        self.conn: UpstreamConn | None = None
        self.status = 0
        self.sent = 0
        self.outgoing: list[bytes] = []
        self.head_count = 0
        self.log = log
        self.stream = _Piped(self, sid)

    # -- the request ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        super().start()
        if self.held and self.conn is not None:
            self.conn.handle.send(WHEN_DRAINED)  # what was buffered: the window comes back once it has gone

    def link(self, conn: UpstreamConn) -> None:
        """Nothing: one client connection carries many streams; each is held back by its own window instead."""

    def take(self, data: bytes, flow: int) -> None:
        """A DATA frame's bytes (``flow``: what they cost the windows, padding included) go on to the upstream."""
        self.received += len(data)
        self.held += flow
        if data:
            self.body(data)
        if self.started and self.conn is not None:
            self.conn.handle.send(WHEN_DRAINED)
        elif not data:
            self.give_back()

    def upstream_drained(self) -> None:
        self.give_back()

    def give_back(self) -> None:
        """The client may send as much again as the upstream has taken."""
        held = self.held
        if held:
            self.held = 0
            self.server.conn.acknowledge_received_data(held, self.sid)
            self.server.kick()

    def via_received(self) -> bytes:
        _, _, name = self.server.proxy.via.encode().partition(b" ")
        return b"2.0 " + name

    # -- the answer ----------------------------------------------------------------------------------------------
    def answer_head(
        self, status: int, headers: list[tuple[bytes, bytes]], framing: str | None, lowers: list[bytes] | None = None
    ) -> None:
        self.status = status
        self.answered = True
        self.head_count = len(headers)
        fields = [(b":status", str(status).encode())]
        named: set[bytes] = set()
        kept = []
        for name, value in headers:
            lower = name.lower()
            if lower not in _RESPONSE_DROPPED:
                kept.append((lower, value.strip()))
            elif lower == b"connection":
                named |= _names_in(value)
        fields += [(lower, value) for lower, value in kept if lower not in named]
        if framing is not None and framing.isdigit():
            fields.append((b"content-length", framing.encode()))
        fields.append((b"via", self.server.proxy.via.encode()))
        bodiless = self.method == "HEAD" or status in (204, 304)
        server = self.server
        if self.sid not in server.streams:
            return
        server.conn.send_headers(self.sid, fields, end_stream=bodiless)
        if bodiless:
            self.stream.ended = True
        if server.on_result is not None:
            server.on_result(str(status))

    def answer_body(self, piece: bytes) -> None:
        self.sent += len(piece)
        self.stream.add(piece)

    def pass_on(self) -> None:
        self.server.kick()

    def answer_complete(self, conn: UpstreamConn, reusable: bool) -> None:
        if self.finished:
            return
        self.finished = True
        stream = self.stream
        trailers = conn.headers[self.head_count :]
        if trailers and not stream.ended:
            stream.trailers = [(n.lower(), v.strip()) for n, v in trailers if n.lower() not in _RESPONSE_DROPPED]
        stream.open = False
        stream.resume()  # a connection going back to the pool is read again
        bodiless = self.body_sent == 0 or self.method not in ("GET", "HEAD")
        conn.end(reusable and self.complete and bodiless)
        self.conn = None
        self.server.finished(self)

    def abort(self) -> None:
        """The upstream died mid-answer: the stream is reset, not ended as if whole."""
        self.stream.pieces = []
        self.server.reset(self.sid, ErrorCodes.INTERNAL_ERROR)
        self.server.finished(self)

    def gateway_error(self, status: int) -> None:
        self.status = status
        self.stream.open = False
        self.server.gateway_error(self, status)

    def cancel(self) -> None:
        """The client is gone (RST_STREAM, the connection closed): so is the upstream connection."""
        self.stream.open = False
        self.stream.ended = True
        if not self.finished:
            self.finished = True
            conn = self.conn
            if conn is not None:
                conn.exchange = None
                conn.handle.close(Close.AT_ONCE)
        self.server.piped.pop(self.sid, None)
        held = self.held
        if held:  # the connection's window is shared: what this stream took of it comes back
            self.held = 0
            self.server.conn.acknowledge_received_data(held, self.sid)


class H2ProxyServer(Http2Server):
    """An HTTP/2 connection of a server with proxied prefixes (made by web/proxy.py's ProxyServer, whose handle it
    uses): streams under a prefix are answered by an upstream, the others as ever."""

    proxying = True

    def __init__(self, options, peer_host: str, on_result, outer: ProxyServer) -> None:  # type: ignore[no-untyped-def]
        super().__init__(options, peer_host, on_result)
        self.outer = outer
        self.handle = outer.handle
        self.proxy = outer.proxy
        self.clock = options.clock
        self.piped: dict[int, H2Exchange] = {}
        self.in_event = False  # inside an event whose Reply carries the output: kicks wait for it
        self.bursting = False  # a burst is on its way (WHEN_DRAINED): output_drained sends the rest

    @property
    def secure(self) -> bool:  # type: ignore[override]
        return self.outer.secure

    def forwarding(self, host: bytes, via: bytes, forwarded_for: bytes) -> bytes:
        return self.outer.forwarding(host, via, forwarded_for)

    # -- requests ------------------------------------------------------------------------------------------------
    def _proxy(self, sid: int, method: str, path: bytes, headers: list, site, log, ended: bool, now: float) -> bool:
        routes = site.options.proxy
        if routes is None:
            return False
        route = routes.match(path)
        if route is None:
            return False
        fields: list[tuple[bytes, bytes]] = []
        authority = None
        cookies = []
        length = False
        for name, value in headers:
            if name[:1] == b":":
                if name == b":authority":
                    authority = value
            elif name == b"cookie":
                cookies.append(value)  # one field again for HTTP/1.1 (RFC 9113 8.2.3)
            elif name == b"host" and authority is not None:
                continue
            else:
                length = length or name == b"content-length"
                fields.append((name, value))
        if authority is not None:
            fields.insert(0, (b"host", authority))
        if cookies:
            fields.append((b"cookie", b"; ".join(cookies)))
        exchange = H2Exchange(self, sid, route, route.order(now), method, path, fields, not ended and not length, log)
        self.piped[sid] = exchange
        self.streams[sid] = exchange.stream
        if ended:
            exchange.request_complete(False)
        exchange.start()
        return True

    def _piped_data(self, event: h2.events.DataReceived) -> bool:
        sid = event.stream_id
        exchange = self.piped.get(sid)
        if exchange is None:
            return False
        flow = event.flow_controlled_length or 0
        if exchange.received + len(event.data) > self.limits.max_body:  # as HTTP/1.1: --max-body bounds it
            answered = exchange.answered
            exchange.cancel()
            self.streams.pop(sid, None)
            self.conn.acknowledge_received_data(flow, sid)
            if answered:
                self.reset(sid, ErrorCodes.CANCEL)
            else:
                self._respond(sid, exchange.method, exchange.url, {}, error_response(413), self.clock(), exchange.log)
                self.uploads[sid] = self.limits.max_body  # its next DATA frame stops it
            return True
        exchange.take(event.data, flow)
        return True

    def _piped_end(self, sid: int) -> None:
        exchange = self.piped.get(sid)
        if exchange is not None and not exchange.complete:
            exchange.request_complete(False)

    # -- what exchanges tell ---------------------------------------------------------------------------------------
    def kick(self) -> None:
        """Send what is ready, unless an event under way will (or a burst in flight will call for it)."""
        if self.in_event or self.bursting or self.ending or self.handle.closed:
            return
        self.in_event = True
        try:
            reply = self._output(self.clock())
        finally:
            self.in_event = False
        self.handle.carry_out(reply)

    def finished(self, exchange: H2Exchange) -> None:
        """An exchange is over (whole, reset or failed): log it."""
        self.piped.pop(exchange.sid, None)
        exchange.give_back()
        log = exchange.log
        if log is not None and exchange.status:
            referer = agent = None
            for name, value in exchange.headers:
                if name == b"referer":
                    referer = value.decode("latin-1")
                elif name == b"user-agent":
                    agent = value.decode("latin-1")
            now = self.clock()
            line = f"{exchange.method} {exchange.url.decode('latin-1')} HTTP/2.0"
            entry = format_entry(self.peer_host, now, line, exchange.status, exchange.sent, referer, agent)
            if log is self.options.access_log:
                self.log_lines.append(entry)
            else:
                log.add(entry, now)
        self.kick()

    def gateway_error(self, exchange: H2Exchange, status: int) -> None:
        """No upstream answered: a short page on that stream (``_respond`` logs it)."""
        sid = exchange.sid
        self.piped.pop(sid, None)
        exchange.give_back()
        if self.streams.pop(sid, None) is None:
            return
        response = error_response(status, head=exchange.method == "HEAD")
        now = self.clock()
        wanted = (b"referer", b"user-agent")
        fields = {k.decode("latin-1"): v.decode("latin-1") for k, v in exchange.headers if k in wanted}
        self._respond(sid, exchange.method, exchange.url, fields, response, now, exchange.log)
        self.kick()

    def reset(self, sid: int, code: ErrorCodes) -> None:
        stream = self.streams.pop(sid, None)
        if stream is not None:
            stream.pieces = []
        try:
            self.conn.reset_stream(sid, code)
        except h2.exceptions.H2Error:  # closed meanwhile
            pass
        self.kick()

    # -- the engine contract -------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> Reply:
        self.in_event = True
        try:
            return super().data_received(data)
        finally:
            self.in_event = False

    def output_drained(self) -> Reply:
        self.in_event = True
        try:
            return super().output_drained()
        finally:
            self.in_event = False

    def _output(self, now: float) -> Reply:
        reply = super()._output(now)
        self.bursting = bool(reply.send) and reply.send[-1] is WHEN_DRAINED
        return reply

    def timed_out(self) -> Reply:
        """The connection's idle time ran out while upstreams kept it waiting: as HTTP/1.1 answers, a stream still
        without its head gets 504 and one cut short a reset, then GOAWAY and the close."""
        if self.ending or not self.piped:
            return super().timed_out()
        self.in_event = True
        try:
            for exchange in list(self.piped.values()):
                answered = exchange.answered
                exchange.cancel()
                if answered:
                    self.reset(exchange.sid, ErrorCodes.INTERNAL_ERROR)
                else:
                    exchange.status = 504
                    self.gateway_error(exchange, 504)
            self._pump()
        finally:
            self.in_event = False
        return self._end(ErrorCodes.NO_ERROR)
