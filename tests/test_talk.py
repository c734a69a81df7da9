"""sockhop talk as the lecture's client: where it connects, and what it says when a server turns it away."""

from __future__ import annotations

import socket

import pytest

from sockhop.echo import BUSY
from sockhop.errors import AddressError
from sockhop.net.addresses import Endpoint
from sockhop.talk import endpoint_for
from tests.support import start_server
from tests.test_cli import one_line_error, sockhop


@pytest.mark.parametrize(
    "host, port, expected",
    [("[::1]", "7", Endpoint("::1", 7)), ("::1", "echo", Endpoint("::1", 7)),
     ("127.0.0.1", "80", Endpoint("127.0.0.1", 80)), ("localhost", "7007", Endpoint("localhost", 7007))],
)  # fmt: skip
def test_endpoint_for_strips_brackets(host, port, expected):
    assert endpoint_for(host, port) == expected


@pytest.mark.parametrize("host", ["[::1", "[nothost]", "", "a..b", "a" * 64, "xn--zz"])
def test_endpoint_for_refuses_malformed_hosts_in_one_line(host):
    with pytest.raises(AddressError) as info:
        endpoint_for(host, "7")
    assert "\n" not in str(info.value)


@pytest.fixture
def busy_server():
    """Echo at --max-connections 1 with its busy line, and one connection holding the only place."""
    server = start_server(["serve", "echo", "--listen", "127.0.0.1:0", "--max-connections", "1"])
    holder = None
    try:
        host, port = server.address("echo")
        holder = socket.create_connection((host, port), timeout=5)
        holder.sendall(b"ping\n")
        assert holder.recv(100) == b"ping\n"  # served: the one place is taken
        yield host, port
    finally:
        if holder is not None:
            holder.close()
        server.stop()
        if server.proc.stderr:
            server.proc.stderr.close()


def test_talk_refused_at_the_connection_limit_prints_why_and_fails(busy_server):
    host, port = busy_server
    for _ in range(5):  # the refusal races our input in several ways; every one must end the same
        result = sockhop("talk", host, str(port), input=b"hello\n")
        assert result.stdout == BUSY
        assert "the server closed the connection without reading our input" in one_line_error(result)


def test_talk_refused_with_large_input(busy_server):
    host, port = busy_server
    result = sockhop("talk", host, str(port), input=b"x" * (4 * 1024 * 1024))
    assert result.stdout == BUSY
    assert "without reading our input" in one_line_error(result)
