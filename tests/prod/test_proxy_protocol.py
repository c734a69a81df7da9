"""--proxy-protocol as a user tries it: the web access log and the mail Received: header show the client the PROXY
header names, a forged header from an address not allowed is refused, and HAProxy's send-proxy / send-proxy-v2 in
front of sockhop for real."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine.clients import read_until_eof
from tests.mail.support import DOMAIN, delivered, serve_mail
from tests.prod.haproxy import haproxy
from tests.prod.helpers import fetch, site_saying
from tests.proxy_headers import V1, V2
from tests.support import require_tool

MODELS = ["eventloop", "thread", "prefork"]


def exchange(host: str, port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return read_until_eof(sock, timeout)


def wait_for_lines(path: Path, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{path} has {lines!r}, wanted {count} lines")


def serve_web(sockhop_server, tmp_path: Path, model: str, *extra: str):
    log = tmp_path / "access.log"
    server = sockhop_server(["serve", "web", str(site_saying(tmp_path / "site", "me")), "--listen", "127.0.0.1:0",
                             "--access-log", str(log), "--model", model, "--workers", "2", *extra])  # fmt: skip
    return server, log


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
def test_access_log_shows_the_client_the_header_names(sockhop_server, tmp_path, model, header):
    server, log = serve_web(sockhop_server, tmp_path, model, "--proxy-protocol", "127.0.0.0/8")
    host, port = server.address("web")
    answer = exchange(host, port, header + b"GET /who.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"me")
    assert wait_for_lines(log, 1)[0].startswith("203.0.113.7 - - [")


@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
def test_forged_header_from_an_address_not_allowed_is_refused(sockhop_server, tmp_path, header):
    server, log = serve_web(sockhop_server, tmp_path, "eventloop", "--proxy-protocol", "10.0.0.0/8")
    host, port = server.address("web")
    answer = exchange(host, port, header + b"GET /who.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer == b""
    # the same client without a header is served, and logged as itself
    assert fetch(host, port) == (200, b"me")
    lines = wait_for_lines(log, 1)
    assert len(lines) == 1 and lines[0].startswith("127.0.0.1 - - [")
    assert "203.0.113.7" not in log.read_text()


def test_balancer_without_a_header_is_cut_off(sockhop_server, tmp_path):
    server, _ = serve_web(sockhop_server, tmp_path, "eventloop", "--proxy-protocol", "127.0.0.1")
    host, port = server.address("web")
    assert exchange(host, port, b"GET /who.txt HTTP/1.1\r\nHost: x\r\n\r\n") == b""


def test_bad_proxy_protocol_address_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sockhop", "serve", "web", str(tmp_path), "--listen", "127.0.0.1:0",
                           "--proxy-protocol", "lb.example"], capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().startswith("sockhop: --proxy-protocol wants an address")


@pytest.mark.parametrize("model", ["eventloop", "fork"])
def test_mail_received_header_shows_the_client_the_header_names(sockhop_server, tmp_path, model):
    maildir = tmp_path / "mail"
    server = serve_mail(sockhop_server, maildir, model, "--catch-all", "--proxy-protocol", "127.0.0.1")
    host, port = server.address("mail")
    lines = [b"EHLO client.example", f"MAIL FROM:<a@{DOMAIN}>".encode(), f"RCPT TO:<b@{DOMAIN}>".encode(), b"DATA",
             b"Subject: hi\r\n\r\nhello\r\n.", b"QUIT"]  # fmt: skip
    answer = exchange(host, port, V2 + b"".join(line + b"\r\n" for line in lines))
    assert b"\r\n221" in answer, answer
    (message,) = delivered(maildir)
    assert "([203.0.113.7])" in message["Received"]


# -- HAProxy for real -------------------------------------------------------------------------------------------------
CLIENT_IP = "127.0.0.3"  # the client binds here; HAProxy connects to sockhop from 127.0.0.2


@pytest.mark.interop
@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_haproxy_in_front_of_web_and_mail(sockhop_server, tmp_path, send_proxy):
    require_tool("haproxy")
    web, log = serve_web(sockhop_server, tmp_path, "eventloop", "--proxy-protocol", "127.0.0.2")
    maildir = tmp_path / "mail"
    mail = serve_mail(sockhop_server, maildir, "eventloop", "--catch-all", "--proxy-protocol", "127.0.0.2")
    backends = {"web": [web.address("web")], "mail": [mail.address("mail")]}
    with haproxy(tmp_path, backends, server_options=f"{send_proxy} source 127.0.0.2") as fronts:
        curl = require_tool("curl")
        host, port = fronts["web"]
        done = subprocess.run([curl, "-sS", "--interface", CLIENT_IP, f"http://{host}:{port}/who.txt"],
                              capture_output=True, timeout=30)  # fmt: skip
        assert done.stdout == b"me", done.stderr
        assert wait_for_lines(log, 1)[0].startswith(f"{CLIENT_IP} - - [")
        host, port = fronts["mail"]
        with smtplib.SMTP(host, port, timeout=10, source_address=(CLIENT_IP, 0)) as smtp:
            smtp.sendmail(f"a@{DOMAIN}", [f"b@{DOMAIN}"], b"Subject: via haproxy\r\n\r\nhello\r\n")
        (message,) = delivered(maildir)
        assert f"([{CLIENT_IP}])" in message["Received"]
