"""`sockhop up`: every service on loopback with built-in defaults, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import signal
import socket

from tests.engine.clients import echo_once


def test_up_serves_echo_on_tcp_and_udp_and_stops_on_ctrl_c(sockhop_server, tmp_path):
    with socket.socket() as probe:  # `up` uses fixed ports; make sure this machine has them free
        probe.bind(("127.0.0.1", 7007))
    server = sockhop_server(["up", "--data", str(tmp_path / "data")], announce=2)
    assert echo_once(("127.0.0.1", 7007), b"hello\n") == b"hello\n"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        udp.sendto(b"hello udp", ("127.0.0.1", 7007))
        assert udp.recv(100) == b"hello udp"
    assert "try: echo hello | sockhop talk 127.0.0.1 7007" in server.log()
    assert server.stop(signal.SIGINT) == 0
    assert "stopped" in server.log()
