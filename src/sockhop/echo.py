"""Echo (RFC 862): whatever arrives goes back -- the smallest protocol that exercises every model, on TCP and UDP."""

from __future__ import annotations

from sockhop.engine.protocol import Address, DatagramProtocol, StreamProtocol

DEFAULT_PORT = 7007  # echo's own port, 7, is privileged


class EchoStream(StreamProtocol):
    """Sends every byte back as it arrives; when the client half-closes, closes after the last byte."""

    __slots__ = ()

    def data_received(self, data: bytes) -> bytes:
        return data


class EchoDatagram(DatagramProtocol):
    """Sends every datagram back to its sender, whole."""

    def datagram_received(self, data: bytes, peer: Address) -> list[bytes]:
        return [data]
