"""systemd socket activation as a user tries it: systemd-socket-activate binds, sockhop takes the sockets from
LISTEN_FDS (fd 3 on) instead of binding, and serves them under every model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from sockhop.errors import AddressError
from sockhop.net.addresses import Endpoint
from sockhop.process.activation import InheritedSockets
from tests.dns.zones import write_zone
from tests.prod.helpers import fetch, site_saying
from tests.support import ROOT, end_process, free_port, require_tool

MODELS = ["iterative", "fork", "thread", "pool", "eventloop", "prefork"]


def activate(args: list[str], ports: list[int], tmp_path) -> subprocess.Popen:
    tool = require_tool("systemd-socket-activate")
    listen = [f"--listen=127.0.0.1:{port}" for port in ports]
    err = open(tmp_path / "stderr", "w")  # noqa: SIM115  (closed with the process)
    proc = subprocess.Popen([tool, *listen, sys.executable, "-m", "sockhop", *args], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    err.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # systemd-socket-activate listens at once; sockhop starts on a connection
        try:
            socket.create_connection(("127.0.0.1", ports[0]), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc


@pytest.mark.interop
@pytest.mark.parametrize("model", MODELS)
def test_web_serves_the_sockets_systemd_passes(tmp_path, model):
    ports = [free_port(), free_port()]
    root = site_saying(tmp_path / "site", "activated")
    args = ["serve", "web", str(root), "--no-access-log", "--model", model, "--workers", "2",
            "--listen", f"127.0.0.1:{ports[0]}", "--listen", f"127.0.0.1:{ports[1]}"]  # fmt: skip
    proc = activate(args, ports, tmp_path)
    try:
        for port in ports:
            assert fetch("127.0.0.1", port) == (200, b"activated")
        log = (tmp_path / "stderr").read_text()
        for port in ports:
            assert f"sockhop: web tcp 127.0.0.1:{port} (model {model}" in log
        assert proc.poll() is None
    finally:
        end_process(proc, 15)


@pytest.mark.interop
def test_listen_that_matches_no_passed_socket_is_one_line(tmp_path):
    port = free_port()
    proc = activate(["serve", "echo", "--listen", "127.0.0.1:1"], [port], tmp_path)
    try:
        assert proc.wait(15) == 1
    finally:
        end_process(proc, 15)
    log = (tmp_path / "stderr").read_text()
    assert "socket activation (LISTEN_FDS) passed no tcp socket for 127.0.0.1:1" in log
    assert "Traceback" not in log


def test_inherited_sockets_are_claimed_by_port_and_kind():
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp = socket.socket(type=socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", tcp.getsockname()[1]))
    fds = [os.dup(tcp.fileno()), os.dup(udp.fileno())]
    tcp.close()
    udp.close()
    env = {"SOCKHOP_FDS": ",".join(map(str, fds)), "OTHER": "kept"}
    given = InheritedSockets.from_environment(env)
    assert env == {"OTHER": "kept"}  # removed, so children do not take them too
    port = given.socks[0].getsockname()[1]
    (u,) = given.claim(Endpoint("127.0.0.1", port), socket.SOCK_DGRAM)
    assert u.type == socket.SOCK_DGRAM
    (t,) = given.claim(Endpoint("", 0), socket.SOCK_STREAM)
    assert t.type == socket.SOCK_STREAM
    with pytest.raises(AddressError, match="passed no tcp socket"):
        given.claim(Endpoint("127.0.0.1", port), socket.SOCK_STREAM)
    u.close()
    t.close()


def test_listen_pid_of_another_process_is_ignored():
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "2"}
    assert not InheritedSockets.from_environment(env)


@pytest.mark.interop
@pytest.mark.parametrize("model", ["eventloop", "prefork", "pool", "iterative"])
def test_dns_serves_the_udp_and_tcp_pair_a_unit_passes(sockhop_server, tmp_path, model):
    """What contrib/systemd/sockhop-dns.socket makes systemd do (ListenDatagram= and ListenStream= on one port),
    done by tests/prod/activate_pair.py since systemd-socket-activate passes streams only. ``--listen :PORT`` as in
    sockhop-dns.service: it claims the sockets the unit bound, whatever their address."""
    dig = require_tool("dig")
    zone = write_zone(tmp_path)
    server = sockhop_server(["127.0.0.1", "serve", "dns", str(zone), "--listen", ":{port}", "--model", model,
                             "--workers", "2"], module="tests.prod.activate_pair", announce=2)  # fmt: skip
    udp, tcp = server.address("dns", "udp"), server.address("dns", "tcp")
    assert udp == tcp
    host, port = udp
    sockets = {os.readlink(f"/proc/{server.pid}/fd/{fd}") for fd in (3, 4)}
    # Still the two it was given, and serving: binding its own instead would have failed (these hold the port).
    assert all(link.startswith("socket:") for link in sockets) and len(sockets) == 2
    for transport in ("+notcp", "+tcp"):
        done = subprocess.run([dig, f"@{host}", "-p", str(port), "+tries=1", "+time=5", transport,
                               "www.example.com", "A"], capture_output=True, text=True, timeout=30)  # fmt: skip
        assert "status: NOERROR" in done.stdout and "192.0.2.2" in done.stdout, done.stdout
    assert server.proc.poll() is None
