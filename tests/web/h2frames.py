"""Raw HTTP/2 frames for the tests: build what a client (polite or hostile) sends with hyperframe and hpack, and
read back every frame the server answers -- no client library in between to smooth over what the server did."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from sockhop.engine.protocol import WHEN_DRAINED, as_reply
from tests.web.helpers import materialise

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def settings(**values: int) -> bytes:
    frame = SettingsFrame(0)
    for name, value in values.items():
        frame.settings[getattr(SettingsFrame, name.upper())] = value
    return frame.serialize()


def headers_frame(encoder: hpack.Encoder, sid: int, path: str = "/hello.txt", *, method: str = "GET", end=True,
                  extra: tuple = (), end_headers: bool = True) -> bytes:  # fmt: skip
    block = encoder.encode(
        [(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost"), *extra]
    )
    frame = HeadersFrame(sid, block)
    if end:
        frame.flags.add("END_STREAM")
    if end_headers:
        frame.flags.add("END_HEADERS")
    return frame.serialize()


def rst(sid: int, code: int = 8) -> bytes:
    return RstStreamFrame(sid, error_code=code).serialize()


def ping(data: bytes = b"12345678") -> bytes:
    return PingFrame(0, data).serialize()


def window_update(sid: int, increment: int) -> bytes:
    return WindowUpdateFrame(sid, increment).serialize()


def data_frame(sid: int, data: bytes, end: bool = False) -> bytes:
    frame = DataFrame(sid, data)
    if end:
        frame.flags.add("END_STREAM")
    return frame.serialize()


def continuation(sid: int, block: bytes, end_headers: bool = False) -> bytes:
    frame = ContinuationFrame(sid, block)
    if end_headers:
        frame.flags.add("END_HEADERS")
    return frame.serialize()


def raw_frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    """A frame as bytes, whatever its contents: for frames hyperframe would refuse to build."""
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload


@dataclass
class Answers:
    """What the server sent, frame by frame, decoded."""

    frames: list[Frame] = field(default_factory=list)
    decoder: hpack.Decoder = field(default_factory=hpack.Decoder)
    buffer: bytes = b""
    headers: dict[int, dict[str, str]] = field(default_factory=dict)
    bodies: dict[int, bytes] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    closed: bool = False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
            if len(self.buffer) < 9 + length:
                break
            frame.parse_body(memoryview(self.buffer[9 : 9 + length]))
            self.buffer = self.buffer[9 + length :]
            self.frames.append(frame)
            if isinstance(frame, HeadersFrame):
                self.headers[frame.stream_id] = {
                    k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                    for k, v in self.decoder.decode(frame.data)
                }
            elif isinstance(frame, DataFrame):
                self.bodies[frame.stream_id] = self.bodies.get(frame.stream_id, b"") + frame.data
            if "END_STREAM" in frame.flags:
                self.ended.add(frame.stream_id)

    def of(self, kind: type) -> list:
        return [frame for frame in self.frames if isinstance(frame, kind)]

    @property
    def goaway(self) -> GoAwayFrame | None:
        found = self.of(GoAwayFrame)
        return found[-1] if found else None

    def resets(self, code: int | None = None) -> list[int]:
        return [f.stream_id for f in self.of(RstStreamFrame) if code is None or f.error_code == code]


class Feeder:
    """A sans-IO server connection and what it answered."""

    def __init__(self, proto) -> None:
        self.proto = proto
        self.answers = Answers()
        self.encoder = hpack.Encoder()
        self.alarm: float | None = None

    def send(self, data: bytes) -> Answers:
        if not self.answers.closed:
            reply = as_reply(self.proto.data_received(data))
            self._take(reply)
        return self.answers

    def _take(self, reply) -> None:
        """Carry out a reply as the engine would, calling output_drained for the next burst while one is asked."""
        self.bursts = 0
        while True:
            if reply.alarm is not None:
                self.alarm = reply.alarm
            out, close = materialise([reply])
            self.answers.feed(out)
            self.answers.closed = self.answers.closed or close
            self.largest = max(getattr(self, "largest", 0), len(out))
            if close or not reply.send or reply.send[-1] is not WHEN_DRAINED:
                break
            self.bursts += 1
            reply = as_reply(self.proto.output_drained())

    def event(self, name: str) -> Answers:
        self._take(getattr(self.proto, name)())
        return self.answers

    def open(self, **values: int) -> Answers:
        return self.send(PREFACE + settings(**values))


class Wire:
    """The same over a real socket to a running server."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.answers = Answers()
        self.encoder = hpack.Encoder()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, done, timeout: float = 10.0) -> Answers:
        """Read until ``done(answers)`` or the server closes; fail the caller's assertion otherwise."""
        deadline = time.monotonic() + timeout
        while not done(self.answers) and not self.answers.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.answers.closed = True
                break
            self.answers.feed(chunk)
        return self.answers

    def close(self) -> None:
        self.sock.close()
