"""One client at a time: accept, serve to the end, accept the next -- the lecture's "one request at a time".

Everyone else waits in the listen backlog while a conversation runs; the engine tests show exactly that.
"""

from __future__ import annotations

import socket

from sockhop.engine.base import BlockingServer
from sockhop.engine.listener import Listener
from sockhop.engine.mmsg import DatagramBatch, batch_for
from sockhop.engine.protocol import Address, DatagramProtocol
from sockhop.engine.shared import answer_datagrams


class IterativeServer(BlockingServer):
    name = "iterative"

    def __init__(self, listeners: list[Listener], limits=None, **options) -> None:
        super().__init__(listeners, limits, **options)
        self.datagram_protocols: dict[int, tuple[DatagramProtocol, DatagramBatch | None]] = {}

    def accept_batch(self) -> int:
        return 1  # serve it, then look again (a stop request may have come meanwhile)

    def process_connection(self, conn: socket.socket, peer: Address, listener: Listener) -> None:
        self.active = 1
        try:
            self.converse(conn, peer, listener)
        finally:
            self.active = 0

    def answer_inline(self, listener: Listener) -> None:
        fd = listener.sock.fileno()
        served = self.datagram_protocols.get(fd)
        if served is None:
            served = self.datagram_protocols[fd] = (listener.factory(), batch_for(listener.sock))  # type: ignore[assignment]
        answer_datagrams(listener.sock, *served)
