"""Batched datagrams (engine/mmsg.py) on real loopback UDP sockets: peers read as the socket module reports them,
answers sent to each sender, and the one-by-one way kept for where batches cannot be had."""

from __future__ import annotations

import socket

import pytest

from sockhop.engine.mmsg import SLOTS, batch_for
from sockhop.engine.protocol import DatagramProtocol
from sockhop.engine.shared import answer_datagrams

HOSTS = [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)]


class Recorder(DatagramProtocol):
    def __init__(self) -> None:
        self.peers: list = []

    def datagram_received(self, data: bytes, peer) -> list[bytes]:
        self.peers.append(peer)
        return [data.upper(), b"and again"]


def pair(host: str, family: int) -> tuple[socket.socket, socket.socket]:
    server = socket.socket(family, socket.SOCK_DGRAM)
    server.bind((host, 0))
    server.setblocking(False)
    client = socket.socket(family, socket.SOCK_DGRAM)
    client.bind((host, 0))
    client.settimeout(5)
    client.connect(server.getsockname())
    return server, client


@pytest.mark.parametrize("host, family", HOSTS)
@pytest.mark.parametrize("batched", [True, False])
def test_answers_go_back_to_the_sender_with_its_address_as_recvfrom_gives_it(host, family, batched):
    server, client = pair(host, family)
    with server, client:
        batch = batch_for(server) if batched else None
        if batched:
            assert batch is not None  # Linux with ctypes: the engine batches
        protocol = Recorder()
        count = SLOTS + 5  # more than one batched receive takes
        for i in range(count):
            client.send(b"hello %d" % i)
        answer_datagrams(server, protocol, batch)
        assert len(protocol.peers) == count
        assert set(protocol.peers) == {client.getsockname()}  # the tuple recvfrom would have given
        got = sorted(client.recv(100) for _ in range(2 * count))
        assert got == sorted([b"HELLO %d" % i for i in range(count)] + [b"and again"] * count)


def test_nothing_waiting_is_no_error():
    server, client = pair("127.0.0.1", socket.AF_INET)
    with server, client:
        protocol = Recorder()
        answer_datagrams(server, protocol, batch_for(server))
        assert protocol.peers == []
