"""`sockhop up`: every service on loopback with built-in defaults, TLS twins from a local CA, stopped by Ctrl-C."""

from __future__ import annotations

import random
import signal
import socket
import ssl
import stat
import subprocess
import time

from sockhop.up import command_name
from tests.engine.clients import echo_once
from tests.support import ROOT, require_tool


def loopback_host() -> str:
    """A random 127.x.y.z: `up` uses fixed ports, and other suites may be running `up` on this machine too. From the
    system's randomness: the random module may be seeded alike in every test process (hypothesis seeds it)."""
    pick = random.SystemRandom()
    return f"127.{pick.randint(1, 254)}.{pick.randint(1, 254)}.{pick.randint(2, 254)}"


def test_up_serves_echo_on_tcp_and_udp_and_stops_on_ctrl_c(sockhop_server, tmp_path):
    host = loopback_host()
    server = sockhop_server(["up", "--host", host, "--data", str(tmp_path / "data"), "--no-tls"], announce=2)
    assert echo_once((host, 7007), b"hello\n") == b"hello\n"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        udp.sendto(b"hello udp", (host, 7007))
        assert udp.recv(100) == b"hello udp"
    assert f"try: echo hello | {command_name()} talk {host} 7007" in server.log()
    assert not (tmp_path / "data" / "tls").exists()
    pid_file = tmp_path / "data" / "sockhop.pid"  # how the master is found after a SIGUSR2 restart
    assert pid_file.read_text() == f"{server.pid}\n"
    assert server.stop(signal.SIGINT) == 0
    assert "stopped" in server.log()
    assert not pid_file.exists()


def test_up_serves_tls_twins_with_a_local_ca(sockhop_server, tmp_path):
    host = loopback_host()
    data = tmp_path / "data"
    server = sockhop_server(["up", "--host", host, "--data", str(data)], announce=11)
    ca = data / "tls" / "ca.pem"
    assert stat.S_IMODE((data / "tls" / "server.key").stat().st_mode) == 0o600
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # the certificate is for 127.0.0.1, not this random loopback address
    with socket.create_connection((host, 7443)) as raw, context.wrap_socket(raw) as tls:
        tls.sendall(b"over tls")
        assert tls.recv(8) == b"over tls"
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["http/1.1"])
    with socket.create_connection((host, 8443)) as raw, context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert tls.recv(12) == b"HTTP/1.1 200"
    assert f"curl --cacert {ca}" in server.log()
    assert server.stop(signal.SIGINT) == 0
    # A second start reuses the same CA (clients keep trusting it).
    before = ca.read_bytes()
    again = sockhop_server(["up", "--host", host, "--data", str(data)], announce=11)
    assert ca.read_bytes() == before
    assert again.stop(signal.SIGINT) == 0


def test_every_line_up_prints_runs_as_printed(sockhop_server, tmp_path):
    """What `sockhop up` tells a newcomer to try works when pasted into a shell: every `try:` line, as printed."""
    for tool in ("dig", "kdig", "swaks", "curl", "openssl"):
        require_tool(tool)
    host = loopback_host()
    data = tmp_path / "data"
    server = sockhop_server(["up", "--host", host, "--data", str(data)], announce=12)
    deadline = time.monotonic() + 10  # the last listener's try line and the footer follow its announcement
    while not any(line.startswith("sockhop up: the serving master") for line in server.lines):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    lines = [line.split("try: ", 1)[1] for line in server.lines if line.startswith("    try: ")]
    assert len(lines) == 12, server.log()
    expected = {  # what each line prints when it works
        "talk --udp": "hello", "talk": "hello", "s_client": "hello", " get ": "The six models", "api/v1": '"total"',
        "curl": "The six models", "dig": "10 mail.sockhop.test.", "resolve": "www.sockhop.test.",
        "kdig": "10 mail.sockhop.test.", "send": "delivered via", "swaks": "250 2.0.0 Ok: queued",
    }  # fmt: skip
    for line in lines:
        what = next(key for key in expected if key in line)
        shell = f"timeout 3 {line}" if what == "s_client" else line  # s_client waits for the server to close
        stdin = "hello\n" if what == "s_client" else ""
        done = subprocess.run(["bash", "-c", shell], input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode in ((0, 124) if what == "s_client" else (0,)), f"{line}\n{done.stderr}"
        assert expected[what] in done.stdout, f"{line}\n{done.stdout}\n{done.stderr}"
    assert server.stop(signal.SIGINT) == 0
    assert server.lines[-1] == "sockhop up: stopped"
