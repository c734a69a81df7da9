"""A thread per accepted connection: "a different process/thread for each request"."""

from __future__ import annotations

import socket
import threading

from sockhop.engine.base import BlockingServer
from sockhop.engine.lifecycle import Deadline
from sockhop.engine.listener import Listener
from sockhop.engine.protocol import Address


class ThreadedServer(BlockingServer):
    name = "thread"
    supports_datagrams = False

    def __init__(self, listeners: list[Listener], limits=None, **options) -> None:
        super().__init__(listeners, limits, **options)
        self.conns: dict[threading.Thread, socket.socket] = {}

    def process_connection(self, conn: socket.socket, peer: Address, listener: Listener) -> None:
        thread = threading.Thread(target=self._run, args=(conn, peer, listener), name=f"conn-{peer}", daemon=True)
        with self.lock:
            self.active += 1
            self.conns[thread] = conn
        thread.start()

    def _run(self, conn: socket.socket, peer: Address, listener: Listener) -> None:
        try:
            self.converse(conn, peer, listener)
        finally:
            with self.lock:
                self.active -= 1
                self.conns.pop(threading.current_thread(), None)

    def finish(self) -> None:
        join_all(self, Deadline(self.limits.grace + 1.0))


def join_all(server: BlockingServer, deadline: Deadline) -> None:
    """Wait for connection threads to end; past the deadline (the drivers enforce the grace period themselves, so
    this is for stuck ones) shut their sockets down so blocked calls return, and wait a moment more."""
    with server.lock:
        threads = list(server.conns)  # type: ignore[attr-defined]
    for thread in threads:
        thread.join(deadline.left())
    with server.lock:
        stuck = list(server.conns.items())  # type: ignore[attr-defined]
    for _, conn in stuck:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    for thread, _ in stuck:
        thread.join(1.0)
