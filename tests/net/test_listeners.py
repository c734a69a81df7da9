"""Listening sockets: what every accepted connection inherits from them."""

from __future__ import annotations

import socket

from sockhop.net.addresses import Endpoint
from sockhop.net.listeners import open_listeners


def test_accepted_connections_send_without_nagle():
    """A reply's last short segment must not wait for the client's acknowledgement of the rest (a 1 MiB file
    waited a round trip for its tail): accepted TCP connections come with TCP_NODELAY, set once on the listener."""
    [listener] = open_listeners([Endpoint("127.0.0.1", 0)])
    with listener, socket.create_connection(listener.getsockname()[:2], timeout=5):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
