"""A fixed set of threads taking accepted connections from a queue: threads, but bounded.

Connections beyond the number of threads wait in the queue (they count against the connection limit). For UDP,
every thread reads the same socket and the kernel hands each datagram to one of them.
"""

from __future__ import annotations

import queue
import socket
import threading

from sockhop.engine.base import BlockingServer
from sockhop.engine.drive import serve_datagram
from sockhop.engine.lifecycle import Deadline
from sockhop.engine.listener import Listener
from sockhop.engine.protocol import Address, DatagramProtocol
from sockhop.engine.threaded import join_all


class PooledServer(BlockingServer):
    name = "pool"

    def __init__(self, listeners: list[Listener], limits=None, **options) -> None:
        super().__init__(listeners, limits, **options)
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.conns: dict[threading.Thread, socket.socket] = {}
        self.workers = [
            threading.Thread(target=self._work, name=f"pool-{i}", daemon=True)
            for i in range(self.limits.worker_count())
        ]
        self.datagram_threads: list[threading.Thread] = []
        for worker in self.workers:
            worker.start()

    def process_connection(self, conn: socket.socket, peer: Address, listener: Listener) -> None:
        with self.lock:
            self.active += 1
        self.jobs.put((conn, peer, listener))

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            job = self.jobs.get()
            if job is None:
                return
            conn, peer, listener = job
            with self.lock:
                self.conns[me] = conn
            try:
                self.converse(conn, peer, listener)
            finally:
                with self.lock:
                    self.active -= 1
                    self.conns.pop(me, None)

    def start_datagrams(self, listener: Listener) -> bool:
        for i in range(self.limits.worker_count()):
            protocol = listener.factory()
            assert isinstance(protocol, DatagramProtocol)
            thread = threading.Thread(
                target=serve_datagram,
                args=(listener.sock, protocol, self.stop_flag.fileno()),
                name=f"udp-{i}",
                daemon=True,
            )
            thread.start()
            self.datagram_threads.append(thread)
        return True

    def finish(self) -> None:
        deadline = Deadline(self.limits.grace + 1.0)
        for _ in self.workers:
            self.jobs.put(None)
        for worker in self.workers:
            worker.join(deadline.left())
        join_all(self, deadline)
        for thread in self.datagram_threads:
            thread.join(1.0)
