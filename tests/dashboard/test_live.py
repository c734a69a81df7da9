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


def test_every_line_log_reaches_the_activity_feed_and_a_reader_behind_costs_no_wait(tmp_path):
    from sockhop.dns.querylog import open_query_log
    from sockhop.linelog import close_activity_feed, open_activity_feed
    from sockhop.mail.messagelog import open_message_log
    from sockhop.web.accesslog import AccessLog

    feed = open_activity_feed()
    try:
        open_query_log(str(tmp_path / "queries.log"))(("127.0.0.1", 5), "udp", "www.example. A NOERROR")
        open_message_log(str(tmp_path / "messages.log"))(("127.0.0.1", 6), "a@x.test", ["b@y.test"], 10, "Q1")
        access = AccessLog(str(tmp_path / "access.log"))
        access.add('127.0.0.1 - - [06/Dec/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "t"\n', 1.0)
        access.close()
        got = [feed.recv(65536).decode() for _ in range(3)]
        assert got[0].startswith("dns ") and got[0].endswith("127.0.0.1:5 udp www.example. A NOERROR")
        assert got[1].startswith("mail ") and "from=<a@x.test> to=<b@y.test> size=10 id=Q1" in got[1]
        assert got[2] == 'web 127.0.0.1 - - [06/Dec/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "t"\n'
        assert "www.example. A NOERROR" in (tmp_path / "queries.log").read_text()  # the files have them too
        log = open_query_log(str(tmp_path / "more.log"))
        for n in range(20_000):  # nobody reads: the socket fills and lines are dropped, never waited for
            log(("127.0.0.1", 5), "udp", f"query {n}")
        assert (tmp_path / "more.log").read_text().count("\n") == 20_000
    finally:
        close_activity_feed()
        feed.close()
        import logging

        for name in ("sockhop.dns.queries", "sockhop.mail.messages"):
            for handler in logging.getLogger(name).handlers:
                handler.close()
            logging.getLogger(name).handlers.clear()
