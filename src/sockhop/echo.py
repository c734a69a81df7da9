"""Echo (RFC 862): whatever arrives goes back -- the smallest protocol that exercises every model, on TCP and UDP."""

from __future__ import annotations

from sockhop.engine.protocol import Address, DatagramProtocol, StreamProtocol

DEFAULT_PORT = 7007  # echo's own port, 7, is privileged

#: What a client over --max-connections is told before the close: echo has no words of its own for it (web sends
#: a 503, mail a 421), and without a line the client sees its bytes vanish.
BUSY = b"sockhop: too many connections; try again later\r\n"


class EchoStream(StreamProtocol):
    """Sends every byte back as it arrives; when the client half-closes, closes after the last byte."""

    __slots__ = ()

    def data_received(self, data: bytes) -> bytes:
        return data


class EchoDatagram(DatagramProtocol):
    """Sends every datagram back to its sender, whole."""

    def datagram_received(self, data: bytes, peer: Address) -> list[bytes]:
        return [data]
