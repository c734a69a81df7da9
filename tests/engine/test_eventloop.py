"""What only the event loop has: its timer heap must not keep closed connections alive."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

from sockhop.echo import EchoStream
from sockhop.engine import Limits, Listener, eventloop
from sockhop.engine.eventloop import EventLoopServer
from sockhop.net.addresses import Endpoint
from sockhop.net.listeners import open_listeners


@contextmanager
def serving(factory=EchoStream):
    """An echo server on an event loop of its own thread, with a long idle timeout: (server, port)."""
    [sock] = open_listeners([Endpoint("127.0.0.1", 0)])
    server = EventLoopServer([Listener(sock, factory, name="echo")], Limits(idle_timeout=60, grace=2))
    loop = threading.Thread(target=server.run)
    loop.start()
    try:
        yield server, sock.getsockname()[1]
    finally:
        server.stop()
        loop.join(30)


def test_closed_connections_do_not_pile_up_in_the_timer_heap(monkeypatch):
    monkeypatch.setattr(eventloop, "COMPACT_SLACK", 16)
    with serving() as (server, port), socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
        for _ in range(300):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(b"x")
                assert client.recv(1) == b"x"
        kept.sendall(b"still here")
        assert kept.recv(10) == b"still here"
        deadline = time.monotonic() + 10
        while len(server.conns) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        # 300 connections came and went within the idle timeout; without compaction all 300 would be held.
        assert len(server.timers) <= 2 * len(server.conns) + 16 + 1


def test_a_closed_connection_in_the_timer_heap_holds_no_protocol():
    """Until the heap is compacted (up to COMPACT_SLACK stale entries) it still holds closed connections: each must
    hold only its own small record, not its protocol (a proxy's protocol holds its buffers and upstream)."""
    import gc
    import weakref

    alive: weakref.WeakSet = weakref.WeakSet()

    class Tracked(EchoStream):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            alive.add(self)

    with serving(Tracked) as (server, port):
        for _ in range(50):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(b"x")
                assert client.recv(1) == b"x"
        deadline = time.monotonic() + 10
        while server.conns and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not server.conns
        assert len(server.timers) >= 50  # the closed connections are still in the heap (no compaction yet) ...
        gc.collect()
        assert len(alive) == 0, len(alive)  # ... but none of their protocols is
