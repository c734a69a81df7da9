"""The event stream is the engine's wakeable protocol, so it works under the models a stream can be held open by
(the dashboard itself always runs the event loop): a hub's news reaches an open /api/v1/events at once."""

from __future__ import annotations

import socket
import threading

import pytest

from sockhop.dashboard.api import Api
from sockhop.dashboard.app import Dashboard
from sockhop.dashboard.inbox import Inbox
from sockhop.dashboard.live import Hub, frame
from sockhop.engine import Limits, Listener, make_server
from sockhop.net import open_listeners, parse_endpoint


def test_a_frame_has_a_data_field_per_line():
    assert frame("log", "a\nb") == b"event: log\ndata: a\ndata: b\n\n"


class Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def until(self, marker: bytes) -> bytes:
        """What arrived up to and including ``marker``."""
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, self.buffer
            self.buffer += chunk
        got, _, self.buffer = self.buffer.partition(marker)
        return got + marker


@pytest.mark.parametrize("model", ["eventloop", "thread", "pool"])
def test_news_reaches_an_open_stream_under(model, tmp_path):
    hub = Hub(Inbox(tmp_path), None, {"web": ["tcp 127.0.0.1:8080"]}, model)
    dashboard = Dashboard(Api(hub.inbox), hub)
    socks = open_listeners([parse_endpoint("127.0.0.1:0")])
    server = make_server(model, [Listener(s, dashboard.factory) for s in socks], Limits(grace=1.0, workers=2))
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(socks[0].getsockname()[:2], timeout=5) as sock:
            sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            stream = Reader(sock)
            head = stream.until(b"event: stats\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Type: text/event-stream" in head
            assert b'"name": "web"' in stream.until(b"\n\n")
            for n in range(3):  # from this thread, as the Watch job's would
                hub.publish("log", f"web line {n}")
                assert stream.until(b"\n\n") == f"event: log\ndata: web line {n}\n\n".encode()
    finally:
        server.stop()
        thread.join(5)
    assert not thread.is_alive()
    assert not hub.subscribers  # the stream unsubscribed when it closed


def test_a_request_trickled_byte_by_byte_gets_408(tmp_path):
    """The protocol asks the engine for a deadline when a request begins, and answers 408 when it passes."""
    from sockhop.dashboard.http import REQUEST_TIMEOUT

    hub = Hub(Inbox(tmp_path), None, {}, "eventloop")
    connection = Dashboard(Api(hub.inbox), hub).factory()
    assert connection.data_received(b"GET / HTTP/1.1\r\n").alarm == REQUEST_TIMEOUT
    assert connection.data_received(b"Host: 127.0.0.1\r\n").alarm is None  # the deadline is not pushed back
    assert connection.timed_out().send[0].startswith(b"HTTP/1.1 408 ")
    whole = Dashboard(Api(hub.inbox), hub).factory()
    reply = whole.data_received(b"GET /static/style.css HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert reply.send[0].startswith(b"HTTP/1.1 200 ") and reply.alarm is None  # whole at once: no timer at all
