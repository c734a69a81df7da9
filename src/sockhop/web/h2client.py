"""The client side of HTTP/2 on one socket: the ``h2`` library frames and does HPACK, this module sends requests as
streams and reads their answers, several at once.

A request may be started ahead of its turn (``start``), so several URLs on one host go out together as concurrent
streams; what arrives for a stream nobody waits on yet is kept -- its head, and its body in a spooled file (memory
up to a MiB, then disk) -- until ``wait`` asks for it, so answers still come out in the order they were asked for.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import BinaryIO

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from sockhop.errors import RemoteProtocolError

#: The window the client grants each stream and the connection: large enough that a fast server is never kept
#: waiting on one round trip, as curl's 32 MiB (per stream) and nghttp's 1 GiB.
WINDOW = 16 * 1024 * 1024
SPOOL = 1024 * 1024
CHUNK = 64 * 1024
UNSETTLED = 10


class StreamError(RemoteProtocolError):
    """The server reset a stream or broke HTTP/2."""


class Refused(Exception):
    """The server refused the stream before working on it (GOAWAY past it, REFUSED_STREAM): safe to send again."""


class _Stream:
    __slots__ = ("status", "headers", "spool", "ended", "error", "claimed")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] | None = None
        self.spool: BinaryIO | None = None
        self.ended = False
        self.error: Exception | None = None
        self.claimed = False


class H2Session:
    """One HTTP/2 connection, client side. ``send(data)`` and ``recv() -> bytes`` are the socket's (with the
    caller's timeouts and errors); ``b""`` from recv is the server closing."""

    def __init__(self, send: Callable[[bytes], None], recv: Callable[[], bytes]) -> None:
        self.send_bytes = send
        self.recv_bytes = recv
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100,
            },
        )
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(WINDOW - 65535)
        self.streams: dict[int, _Stream] = {}
        self.sinks: dict[int, tuple[Callable | None, Callable[[bytes], None], bool]] = {}
        self.gone_after: int | None = None  # the server's GOAWAY: streams above this one were not processed
        self.closed = False
        self.heard = False  # anything from the server yet
        self.settled = False  # the server's SETTINGS have arrived
        self._flush()

    @property
    def usable(self) -> bool:
        return not self.closed and self.gone_after is None

    @property
    def room(self) -> bool:
        """A new stream stays within the server's SETTINGS_MAX_CONCURRENT_STREAMS (10 until its SETTINGS arrive:
        requests sent ahead do not gamble on a limit not yet known)."""
        limit = self.conn.remote_settings.max_concurrent_streams if self.settled else UNSETTLED
        return self.conn.open_outbound_streams < limit

    def cancel(self, sid: int) -> None:
        """Give up a stream sent ahead that nobody will read (RST_STREAM CANCEL)."""
        stream = self.streams.pop(sid, None)
        if stream is not None and stream.spool is not None:
            stream.spool.close()
        try:
            self.conn.reset_stream(sid, ErrorCodes.CANCEL)
            self._flush()
        except h2.exceptions.H2Error:
            pass

    def start(self, method: str, scheme: str, authority: str, path: str, headers: list[tuple[str, str]],
              body: bytes | None = None) -> int:  # fmt: skip
        """Send a request as a new stream; its id."""
        conn = self.conn
        sid = conn.get_next_available_stream_id()
        fields = [(b":method", method.encode()), (b":scheme", scheme.encode()), (b":authority", authority.encode()),
                  (b":path", path.encode("latin-1"))]  # fmt: skip
        for name, value in headers:
            lower = name.lower()
            if lower not in ("host", "connection", "keep-alive", "transfer-encoding", "upgrade"):
                fields.append((lower.encode("latin-1"), value.encode("latin-1")))
        if body is not None:
            fields.append((b"content-length", str(len(body)).encode()))
        try:
            conn.send_headers(sid, fields, end_stream=not body)
        except h2.exceptions.H2Error as exc:
            raise StreamError(f"cannot send the request: {exc}") from None
        self.streams[sid] = _Stream()
        self._flush()
        if body:
            self._send_body(sid, body)
        return sid

    def wait(self, sid: int, on_head: Callable[[int, list[tuple[str, str]]], None], on_body: Callable[[bytes], None],
             head_only: bool = False) -> tuple[int, list[tuple[str, str]]]:  # fmt: skip
        """Read until stream ``sid`` has ended, its head going to ``on_head`` and its body to ``on_body`` as they
        arrive (after what was kept for it); its status and headers."""
        stream = self.streams[sid]
        stream.claimed = True
        if stream.headers is not None:
            on_head(stream.status, stream.headers)
            if stream.spool is not None:
                stream.spool.seek(0)
                while piece := stream.spool.read(CHUNK):
                    on_body(piece)
                stream.spool.close()
                stream.spool = None
        self.sinks[sid] = (None if stream.headers is not None else on_head, on_body, head_only)
        while not stream.ended and stream.error is None:
            if self.gone_after is not None and sid > self.gone_after:
                raise Refused
            if self.closed:
                raise StreamError("the server closed the connection before the end of the answer")
            data = self.recv_bytes()
            if not data:
                self.closed = True
                continue
            self._receive(data)
        self.sinks.pop(sid, None)
        del self.streams[sid]
        if stream.error is not None:
            raise stream.error
        assert stream.headers is not None
        return stream.status, stream.headers

    def close(self) -> None:
        if not self.closed:
            try:
                self.conn.close_connection()
                self.send_bytes(self.conn.data_to_send())
            except (OSError, h2.exceptions.ProtocolError, RemoteProtocolError):
                pass
        self.closed = True
        for stream in self.streams.values():
            if stream.spool is not None:
                stream.spool.close()

    # -- inside ----------------------------------------------------------------------------------------------------
    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.send_bytes(data)

    def _send_body(self, sid: int, body: bytes) -> None:
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                data = self.recv_bytes()
                if not data:
                    raise StreamError("the server closed the connection while the request body was sent")
                self._receive(data)
                continue
            piece, view = view[:window], view[window:]
            self.conn.send_data(sid, piece.tobytes(), end_stream=not view)
            self._flush()

    def _receive(self, data: bytes) -> None:
        if not self.heard:
            self.heard = True
            if data[:5] == b"HTTP/":
                self.closed = True
                raise StreamError("the server answered in HTTP/1: it does not speak HTTP/2 (h2c) on this port")
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._flush()
            self.closed = True
            raise StreamError(f"the server broke HTTP/2: {exc}") from None
        for event in events:
            sid = getattr(event, "stream_id", 0)
            stream = self.streams.get(sid)
            if isinstance(event, h2.events.ResponseReceived) and stream is not None:
                headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers]
                status = next((v for n, v in headers if n == ":status"), "")
                if not status.isdigit():
                    stream.error = StreamError("an answer without a valid :status")
                    continue
                stream.status = int(status)
                stream.headers = [(n, v) for n, v in headers if not n.startswith(":")]
                sink = self.sinks.get(sid)
                if sink is not None and sink[0] is not None:
                    sink[0](stream.status, stream.headers)
            elif isinstance(event, h2.events.DataReceived):
                if stream is not None:
                    sink = self.sinks.get(sid)
                    if sink is not None:
                        if not sink[2]:
                            sink[1](event.data)
                    else:
                        if stream.spool is None:
                            stream.spool = tempfile.SpooledTemporaryFile(max_size=SPOOL)  # noqa: SIM115
                        stream.spool.write(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.StreamEnded) and stream is not None:
                stream.ended = True
            elif isinstance(event, h2.events.StreamReset) and stream is not None:
                if event.error_code == ErrorCodes.REFUSED_STREAM:
                    stream.error = Refused()
                else:
                    stream.error = StreamError(f"the server reset the stream ({_code(event.error_code)})")
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self.settled = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.gone_after = event.last_stream_id
                if event.error_code:
                    for other_sid, other in self.streams.items():
                        if other_sid <= event.last_stream_id and not other.ended:
                            other.error = StreamError(f"the server ended the connection ({_code(event.error_code)})")
        self._flush()


def _code(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"error {code}"
