"""The server side of one HTTP/2 connection (RFC 9113), sans-IO: the ``h2`` library frames and does HPACK, the
request handler shared with HTTP/1.1 (web/handler.py) answers, and this module sits between them.

A connection becomes HTTP/2 when its first bytes are the client's connection preface: after ALPN chose ``h2`` on
TLS, or with prior knowledge (h2c) on a plain listener. ``HttpServer`` (web/protocol.py) spots the preface and
hands the connection over here, so HTTP/1.1 pays nothing for it.

Flow control: a response body is a list of pieces -- the bytes of a small cached file, or a file region read a
window at a time -- so a stream whose window is closed holds a file descriptor and an offset, never a copy. When
every stream with something to send waits on the client's window, an alarm (``header_timeout``) starts: a client
that keeps its window shut (while pinging to stay under the idle timeout) is cut off when it rings.

Defences (each with the answer nginx and the RFC give):

* more concurrent streams than advertised: that stream gets RST_STREAM(REFUSED_STREAM), the others go on;
* rapid reset (CVE-2023-44487), SETTINGS and PING floods: a budget (token bucket) per kind; spending past it ends
  the connection with GOAWAY(ENHANCE_YOUR_CALM);
* CONTINUATION floods and HPACK bombs: a header block, on the wire and decoded, holds no more than the HTTP/1.1
  head limit (``max_head``): GOAWAY(ENHANCE_YOUR_CALM);
* frames on closed streams, bad frame sizes, HPACK errors, flow-control violations: what ``h2`` says (RST_STREAM
  or GOAWAY with the RFC's code).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import hpack
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from sockhop.engine.protocol import WHEN_DRAINED, FileRegion, Reply, StreamProtocol
from sockhop.engine.shared import close_region
from sockhop.web.accesslog import AccessLog, format_entry
from sockhop.web.handler import handle
from sockhop.web.hosts import HOST_VALUE
from sockhop.web.response import BODILESS, SERVER, Response, error_response, http_date

#: The client's first 24 bytes on an HTTP/2 connection (RFC 9113 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: Hop-by-hop headers HTTP/2 forbids (RFC 9113 8.2.2): the shared handler may add them for HTTP/1.1.
_CONNECTION_SPECIFIC = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})

#: How much of a file one read takes at most, whatever window the client grants.
READ_CHUNK = 256 * 1024
#: How many body bytes one event sends at most (every stream together). More waits for the engine to say the burst
#: has gone to the kernel (WHEN_DRAINED): a client granting huge windows and not reading holds one burst, not files.
BURST = 1024 * 1024


@dataclass(frozen=True)
class Budget:
    """A token bucket: ``burst`` events at once, ``rate`` a second after that."""

    burst: float
    rate: float


#: Streams the client may cancel (RST_STREAM) before the server answered them: more than this is rapid reset.
RESETS = Budget(200, 100)
#: SETTINGS and PING frames: each costs an acknowledgement; a client sending them without end is a flood.
CONTROL = Budget(100, 50)


class _Bucket:
    __slots__ = ("budget", "tokens", "at")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.tokens = budget.burst
        self.at: float | None = None

    def spend(self, now: float) -> bool:
        """Take one token; False when the budget is spent."""
        if self.at is not None:
            self.tokens = min(self.budget.burst, self.tokens + (now - self.at) * self.budget.rate)
        self.at = now
        self.tokens -= 1
        return self.tokens >= 0


class _Calm(h2.exceptions.DenialOfServiceError):
    """A defence of ours tripped: the connection ends with GOAWAY(ENHANCE_YOUR_CALM)."""


class _Compression(h2.exceptions.ProtocolError):
    """A header block HPACK cannot decode: COMPRESSION_ERROR (RFC 9113 4.3), where h2 says PROTOCOL_ERROR."""

    error_code = ErrorCodes.COMPRESSION_ERROR


class _Frames(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer, holding no more than ``limit`` bytes of an unfinished header block (CONTINUATION flood:
    h2 alone counts 64 frames, up to a MiB), and calling a SETTINGS acknowledgement with a payload a
    FRAME_SIZE_ERROR (RFC 9113 6.5), where h2 says PROTOCOL_ERROR."""

    limit = 32 * 1024

    def __next__(self):  # type: ignore[no-untyped-def]
        data = self._data
        if len(data) >= 9 and data[3] == 4 and data[4] & 1 and data[:3] != b"\0\0\0":
            raise h2.exceptions.FrameDataMissingError("SETTINGS acknowledgement with a payload")
        return super().__next__()

    def _update_header_buffer(self, f):  # type: ignore[no-untyped-def]
        result = super()._update_header_buffer(f)
        if self._headers_buffer and sum(len(x.data) for x in self._headers_buffer) > self.limit:
            raise _Calm("header block too large")
        return result


class _Config(h2.config.H2Configuration):
    """h2's configuration with its switches as plain attributes. h2 reads them on every frame, and through the base
    class's validating descriptors each read is a Python call (eight a request); here they are set once, to bools,
    by the constructor."""

    client_side = validate_outbound_headers = normalize_outbound_headers = split_outbound_cookies = False
    validate_inbound_headers = normalize_inbound_headers = True


class _Quiet:
    """h2's logger when nothing is logged: h2 calls ``debug``/``trace`` some ten times a request, and its own
    DummyLogger answers each with a Python call. ``str.format`` of an empty string takes any arguments, ignores
    them and runs in C."""

    debug = trace = staticmethod("".format)


class _Values(list):
    """One setting's value and the values proposed after it, where h2 keeps a deque: a deque costs some 380 bytes
    and a list of one 64, and every connection holds a dozen (the idle-connection memory target is 16 KiB)."""

    __slots__ = ()

    def popleft(self) -> object:
        return self.pop(0)


class _Settings(h2.settings.Settings):
    """h2's settings, kept in :class:`_Values`: the same values and acknowledgement stack, less memory."""

    def __init__(self, client: bool = True, initial_values: dict | None = None) -> None:
        super().__init__(client, initial_values)
        self._settings = {key: _Values(values) for key, values in self._settings.items()}

    def __setitem__(self, key, value) -> None:  # type: ignore[no-untyped-def]
        if key not in self._settings:
            self._settings[key] = _Values([None])
        super().__setitem__(key, value)


class _Replay:
    """Stands in for the HPACK decoder while a remembered request block is replayed: its headers, as h2 checked them."""

    __slots__ = ("headers",)

    def __init__(self, headers: list) -> None:
        self.headers = headers

    def decode(self, data: bytes, raw: bool = False) -> list:
        return self.headers


class _Connection(h2.connection.H2Connection):
    """h2's connection, refusing one stream over the concurrent limit (REFUSED_STREAM, as nginx) instead of ending
    the whole connection, and answering a request header block seen before from what h2 made of it then.

    A client sends the same block for the same request (a browser's reloads, a benchmark): once HPACK has indexed
    its fields it is a handful of index bytes, and decoding it neither reads nor changes more than the dynamic table
    as it stands. So while the table is unchanged -- the same newest entry, the same size -- the same bytes decode
    to the same headers, already normalised and checked, and h2 is handed them as they were."""

    refused = 0

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        self.seen: dict[bytes, tuple[tuple, list]] = {}

    def _table(self) -> tuple:
        table = self.decoder.header_table
        entries = table.dynamic_entries
        return (entries[0] if entries else None, len(entries), table.maxsize)

    def _receive_headers_frame(self, frame):  # type: ignore[no-untyped-def]
        new = frame.stream_id not in self.streams
        if not new:
            return self._receive_checked(frame)
        before = self._table()
        hit = self.seen.get(frame.data)
        if hit is not None and hit[0][0] is before[0] and hit[0][1:] == before[1:]:
            config, decoder = self.config, self.decoder
            self.decoder = _Replay(hit[1])
            config.validate_inbound_headers = config.normalize_inbound_headers = False
            try:
                return self._receive_checked(frame)
            finally:
                self.decoder = decoder
                config.validate_inbound_headers = config.normalize_inbound_headers = True
        frames, events = self._receive_checked(frame)
        after = self._table()
        if after[0] is before[0] and after[1:] == before[1:] and len(frame.data) <= 1024:
            for event in events:
                if type(event) is h2.events.RequestReceived:
                    if len(self.seen) >= 64:
                        self.seen.clear()
                    self.seen[frame.data] = (before, event.headers)
        return frames, events

    def _receive_checked(self, frame):  # type: ignore[no-untyped-def]
        try:
            return super()._receive_headers_frame(frame)
        except h2.exceptions.DenialOfServiceError:
            raise
        except h2.exceptions.ProtocolError as exc:
            if isinstance(exc.__cause__, (hpack.HPACKError, IndexError, UnicodeDecodeError)):
                raise _Compression(str(exc)) from exc
            if not isinstance(exc, h2.exceptions.TooManyStreamsError):
                raise
            sid = frame.stream_id
            if sid % 2 == 0 or sid <= self.highest_inbound_stream_id:
                raise
            # Decode it all the same: the HPACK context must stay in step with the client's (RFC 9113 4.3).
            h2.connection._decode_headers(self.decoder, frame.data)
            self.highest_inbound_stream_id = sid
            self._closed_streams[sid] = h2.connection.StreamClosedBy.SEND_RST_STREAM
            self.refused += 1
            rst = RstStreamFrame(sid)
            rst.error_code = ErrorCodes.REFUSED_STREAM
            return [rst], []


#: The name under which a ready-made header block passes through h2 to :class:`_Encoder` (a pseudo-header no peer
#: ever sees: h2 checks only that a response's pseudo-headers come first).
_BLOCK = b":sockhop-block"

#: Encodes response heads without the dynamic table, as nginx does: every field is a literal "never indexed" or a
#: static-table entry, so a block depends on no connection's HPACK state and can be kept and sent on any connection.
_STATELESS = hpack.Encoder()
_BLOCKS: dict[tuple, bytes] = {}
BLOCKS_KEPT = 1024


def head_block(status: int, date: str, headers: list[tuple[str, str]]) -> bytes:
    """The HPACK block of a response head: ``:status``, server, date, then ``headers`` (lower-cased, without the
    hop-by-hop fields HTTP/2 forbids). A head seen before in the same second -- a file served again -- is answered
    from the encoded bytes: what HPACK costs per response is paid once a second per file, not per request."""
    key = (status, date, *headers)
    block = _BLOCKS.get(key)
    if block is None:
        fields = [
            hpack.NeverIndexedHeaderTuple(b":status", str(status).encode()),
            hpack.NeverIndexedHeaderTuple(b"server", SERVER.encode()),
            hpack.NeverIndexedHeaderTuple(b"date", date.encode()),
        ]
        for name, value in headers:
            lower = name.lower()
            if lower not in _CONNECTION_SPECIFIC:
                fields.append(hpack.NeverIndexedHeaderTuple(lower.encode("latin-1"), value.encode("latin-1")))
        block = _STATELESS.encode(fields)
        if len(_BLOCKS) >= BLOCKS_KEPT:
            _BLOCKS.clear()
        _BLOCKS[key] = block
    return block


class _Encoder:
    """h2's HPACK encoder, passing a ready-made block (``[(_BLOCK, block)]``) through as it is."""

    __slots__ = ("inner",)

    def __init__(self, inner: hpack.Encoder) -> None:
        self.inner = inner

    def encode(self, headers, huffman: bool = True) -> bytes:  # type: ignore[no-untyped-def]
        if len(headers) == 1 and headers[0][0] is _BLOCK:
            inner = self.inner
            if inner.header_table.resized:  # the client resized our table: the block says so first (RFC 7541 4.2)
                inner.header_table.resized = False
                return inner._encode_table_size_change() + headers[0][1]
            return headers[0][1]
        return self.inner.encode(headers, huffman)

    @property
    def header_table_size(self) -> int:
        return self.inner.header_table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self.inner.header_table_size = value


class _Stream:
    """A response on its way: what is left of its body."""

    __slots__ = ("pieces", "status")
    #: True for an answer still arriving from an upstream (web/h2proxy.py): its body grows while it is sent.
    piped = False

    def __init__(self, pieces: list[bytes | FileRegion], status: int) -> None:
        self.pieces = pieces
        self.status = status

    def release(self) -> None:
        for piece in self.pieces:
            if isinstance(piece, FileRegion):
                close_region(piece)
        self.pieces = []


class Http2Server(StreamProtocol):
    """One HTTP/2 connection; ``options`` is the web server's :class:`WebOptions`."""

    def __init__(self, options, peer_host: str = "-", on_result: Callable[..., None] | None = None) -> None:
        self.options = options
        self.site = options.site
        self.limits = limits = options.limits
        self.peer_host = peer_host
        self.on_result = on_result
        # Our own heads are checked where they are made (head_block): h2 need not check them again.
        config = _Config(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            logger=_Quiet(),  # type: ignore[arg-type]
        )
        conn = self.conn = _Connection(config)
        conn.encoder = _Encoder(conn.encoder)
        conn.remote_settings = _Settings(client=True)
        conn.local_settings = _Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_head,
            },
        )
        conn.decoder.max_header_list_size = limits.max_head  # before the client acknowledges, too
        frames = conn.incoming_buffer = _Frames(server=True)
        frames.limit = limits.max_head
        self.streams: dict[int, _Stream] = {}
        self.uploads: dict[int, int] = {}  # body bytes received so far, per stream still sending one
        self.resets = _Bucket(RESETS)
        self.control = _Bucket(CONTROL)
        self.log_lines: list[str] = []
        self.started = False
        self.stopping = False  # GOAWAY sent: finish the open streams, refuse new ones, then close
        self.last_stream = 0
        self.stalled = False  # every stream with something to send waits on the window: the alarm runs
        self.ending = False
        self.peer_gone = False
        self.answered = 0
        self.goaway_pending = False  # max_requests reached: GOAWAY goes out with the next output

    # -- the engine contract -------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> Reply:
        if self.ending:
            return Reply()
        conn = self.conn
        if not self.started:
            self.started = True
            conn.initiate_connection()
        now = self.options.clock()
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:  # h2 queued GOAWAY with the RFC's code (ours: ENHANCE_YOUR_CALM)
            return self._end()
        try:
            self._handle(events, now)
        except _Calm:
            return self._end(ErrorCodes.ENHANCE_YOUR_CALM)
        if self.peer_gone:
            return self._end()
        return self._output(now)

    def eof_received(self) -> Reply:
        return self._end(send=False)

    def stop_requested(self) -> Reply:
        """GOAWAY now, naming the last stream that will be answered; open streams finish within the grace."""
        if self.stopping or self.ending:
            return Reply()
        self.stopping = True
        self.last_stream = self.conn.highest_inbound_stream_id
        if not self.started:
            return Reply(close=True)
        goaway = GoAwayFrame(0)
        goaway.last_stream_id = self.last_stream
        goaway.error_code = ErrorCodes.NO_ERROR
        pending = self.conn.data_to_send()
        if not self.streams:
            self.ending = True
            return Reply((pending + goaway.serialize(),), True)
        return Reply((pending + goaway.serialize(),))

    def timed_out(self) -> Reply:
        """Idle, or the window has stayed shut past the alarm: GOAWAY and close."""
        if self.ending or not self.started:
            return Reply(close=True)
        return self._end(ErrorCodes.NO_ERROR)

    def connection_lost(self) -> None:
        for stream in self.streams.values():
            stream.release()
        self.streams.clear()
        for log in self.options.hosts.all_logs:
            log.flush()

    # -- requests ------------------------------------------------------------------------------------------------
    def _handle(self, events: list, now: float) -> None:
        conn = self.conn
        reset = {event.stream_id for event in events if isinstance(event, h2.events.StreamReset)}
        for event in events:
            kind = type(event)
            if kind is h2.events.RequestReceived:
                sid = event.stream_id
                if sid in reset:
                    continue  # cancelled in the same breath: no work for it (the budget below counts it)
                if self.stopping and sid > self.last_stream:
                    conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
                    continue
                self._request(sid, event.headers, now, event.stream_ended is not None)
                self.answered += 1
                if self.answered >= self.limits.max_requests and not self.stopping:
                    # As HTTP/1.1 closes after max_requests, and nginx's keepalive_requests: GOAWAY, the client
                    # opens a new connection for more.
                    self.stopping = True
                    self.last_stream = sid
                    self.goaway_pending = True
            elif kind is h2.events.StreamReset:
                self.uploads.pop(event.stream_id, None)
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None or event.stream_id in reset:
                    if stream is not None:
                        stream.release()
                    if event.remote_reset and not self.resets.spend(now):
                        raise _Calm("too many streams reset (rapid reset)")
            elif kind is h2.events.DataReceived:
                if self.proxying and self._piped_data(event):
                    continue
                # A body is read and dropped (nothing here consumes one yet); its bytes are given back to the
                # window at once. Past max_body, RST_STREAM(NO_ERROR) tells the client to stop (RFC 9113 8.1) --
                # within it the client may finish, as some clients (curl 7.88) call that reset a failed transfer.
                sid = event.stream_id
                if event.flow_controlled_length:
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                if event.stream_ended is not None:
                    self.uploads.pop(sid, None)
                    continue
                received = self.uploads[sid] = self.uploads.get(sid, 0) + len(event.data)
                if received > self.limits.max_body and sid not in self.streams and sid in conn.streams:
                    self.uploads.pop(sid, None)
                    conn.reset_stream(sid, ErrorCodes.NO_ERROR)
            elif kind is h2.events.PingReceived or kind is h2.events.RemoteSettingsChanged:
                if not self.control.spend(now):
                    raise _Calm("too many SETTINGS or PING frames")
            elif kind is h2.events.StreamEnded and self.proxying:
                self._piped_end(event.stream_id)
            elif kind is h2.events.ConnectionTerminated:
                self.peer_gone = True  # the client said GOAWAY: h2 sends nothing more, so neither do we

    def _request(self, sid: int, headers: list[tuple[bytes, bytes]], now: float, ended: bool = True) -> None:
        method = path = b""
        fields: dict[str, str] = {}
        for name, value in headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    fields.setdefault("host", value.decode("latin-1"))
                continue
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            if key in fields:
                text = f"{fields[key]}{'; ' if key == 'cookie' else ', '}{text}"
            fields[key] = text
        verb = method.decode("latin-1")
        site, log = self.options.hosts.pick(fields.get("host"))
        declared = fields.get("content-length", "")
        authority = fields.get("host")
        if authority is not None and HOST_VALUE.fullmatch(authority) is None:  # as HTTP/1.1's Host: 400
            response = error_response(HTTPStatus.BAD_REQUEST, "invalid :authority", head=verb == "HEAD")
        elif declared.isdigit() and int(declared) > self.limits.max_body:  # as HTTP/1.1: refused before it is sent
            response = error_response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, head=verb == "HEAD")
            self.uploads[sid] = self.limits.max_body  # its first DATA frame stops it
        else:
            if self.proxying and self._proxy(sid, verb, path, headers, site, log, ended, now):
                return
            response = handle(site, verb, path, fields, now)
        self._respond(sid, verb, path, fields, response, now, log)

    def _respond(
        self,
        sid: int,
        method: str,
        path: bytes,
        fields: dict[str, str],
        response: Response,
        now: float,
        log: AccessLog | None = None,
    ) -> None:
        status = int(response.status)
        block = head_block(status, http_date(now), response.headers)
        body = [piece for piece in response.body if (piece.count if isinstance(piece, FileRegion) else piece)]
        if method == "HEAD" or status in BODILESS:
            response.release()
            body = []
        self.conn.send_headers(sid, [(_BLOCK, block)], end_stream=not body)
        if body:
            self.streams[sid] = _Stream(body, status)
        if self.on_result is not None:
            self.on_result(str(status))
        if log is not None:
            line = f"{method} {path.decode('latin-1')} HTTP/2.0"
            entry = format_entry(
                self.peer_host, now, line, status, response.length, fields.get("referer"), fields.get("user-agent")
            )
            if log is self.options.access_log:
                self.log_lines.append(entry)
            else:  # another virtual host's log
                log.add(entry, now)

    # -- the reverse proxy's hooks (web/h2proxy.py) ------------------------------------------------------------
    proxying = False

    def _proxy(self, sid: int, method: str, path: bytes, headers: list, site, log, ended: bool, now: float) -> bool:
        """True if an upstream answers this request."""
        return False

    def _piped_data(self, event: h2.events.DataReceived) -> bool:
        """True if this body goes to an upstream."""
        return False

    def _piped_end(self, sid: int) -> None:
        """The client's request on ``sid`` is whole."""

    # -- output --------------------------------------------------------------------------------------------------
    def _pump(self) -> tuple[bool, bool]:
        """Send what the windows allow, up to a burst: (some stream has something to send but no window, the burst
        ran out before the windows did)."""
        conn = self.conn
        waiting = False
        budget = BURST
        for sid in list(self.streams):
            stream = self.streams[sid]
            pieces = stream.pieces
            while pieces:
                if budget <= 0:
                    self.streams[sid] = self.streams.pop(sid)  # its turn is over: the others go first next time
                    return waiting, True
                window = min(conn.local_flow_control_window(sid), READ_CHUNK, budget)
                if window <= 0:
                    waiting = True
                    break
                piece = pieces[0]
                if isinstance(piece, FileRegion):
                    count = min(window, piece.count)
                    data = os.pread(piece.fd, count, piece.offset)
                    if len(data) < count:  # the file shrank under us: end the stream, not the connection
                        stream.release()
                        conn.reset_stream(sid, ErrorCodes.INTERNAL_ERROR)
                        del self.streams[sid]
                        break
                    if count == piece.count:
                        pieces.pop(0)
                        close_region(piece)
                    else:
                        pieces[0] = FileRegion(piece.fd, piece.offset + count, piece.count - count, piece.close)
                else:
                    data = piece[:window]
                    if len(piece) > window:
                        pieces[0] = piece[window:]
                    else:
                        pieces.pop(0)
                budget -= len(data)
                size = conn.max_outbound_frame_size
                if stream.piped:  # its end is known only once the upstream has said so
                    stream.sent(len(data))
                    last = not pieces and stream.over()
                    for start in range(0, len(data), size):
                        conn.send_data(sid, data[start : start + size], end_stream=last and start + size >= len(data))
                    continue
                for start in range(0, len(data), size):
                    end_stream = not pieces and start + size >= len(data)
                    conn.send_data(sid, data[start : start + size], end_stream=end_stream)
            else:
                if stream.piped and not stream.end(conn):
                    continue  # more is on its way from the upstream
                del self.streams[sid]
        return waiting, False

    def output_drained(self) -> Reply:
        """The last burst has gone to the kernel: the next one."""
        if self.ending:
            return Reply()
        return self._output(self.options.clock())

    def _output(self, now: float) -> Reply:
        waiting, more = self._pump()
        if self.log_lines:
            assert self.options.access_log is not None
            self.options.access_log.write(self.log_lines, now)
            self.log_lines = []
        if self.stopping and not self.streams:
            goaway = GoAwayFrame(0)
            goaway.last_stream_id = self.last_stream
            self.ending = True
            return Reply((self.conn.data_to_send() + goaway.serialize(),), True)
        data = self.conn.data_to_send()
        if self.goaway_pending:
            self.goaway_pending = False
            goaway = GoAwayFrame(0)
            goaway.last_stream_id = self.last_stream
            data += goaway.serialize()
        alarm = None
        if waiting != self.stalled and not more:
            self.stalled = waiting
            alarm = self.limits.header_timeout if waiting else 0.0
        send: tuple = (data,) if data else ()
        if more:
            send += (WHEN_DRAINED,)
        return Reply(send, False, None, alarm)

    def _end(self, code: ErrorCodes | None = None, *, send: bool = True) -> Reply:
        """Close the connection: GOAWAY first if ``code`` is given (h2 has queued one already after an error)."""
        self.ending = True
        if code is not None:
            try:
                self.conn.close_connection(code)
            except h2.exceptions.ProtocolError:
                pass
        data = self.conn.data_to_send() if send else b""
        return Reply((data,) if data else (), True)
