"""Bad and hostile input against the real server: every kind gets its status, and the next client is served."""

from __future__ import annotations

import select
import socket
import time
import urllib.request

import pytest

from .conftest import read_until_closed, start_web

pytestmark = pytest.mark.interop

GOOD = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

HOSTILE = {
    "traversal": (b"GET /../../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "encoded-traversal": (b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "backslash": (b"GET /%5c..%5c..%5cetc%5cpasswd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "nul": (b"GET /hello.txt%00.png HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "overlong-utf8": (b"GET /%c0%ae%c0%ae/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "dotfile": (b"GET /.env HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "malformed": (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", 400),
    "garbage": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100), 400),
    "long-target": (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "large-header": (b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 10000 + b"\r\n\r\n", 431),
    "version": (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    "cl-and-te": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "two-cl": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    "unknown-te": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", 400),
    "undecodable-te": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    "invalid-host": (b"GET /hello.txt HTTP/1.1\r\nHost: a b/c\r\n\r\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", 400),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    "unknown-method": (b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    "known-method": (b"DELETE /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
}


PATH_CASES = {"traversal", "encoded-traversal", "backslash", "nul", "overlong-utf8", "dotfile"}


@pytest.fixture(scope="module", params=["eventloop", "thread", "prefork"])
def hostile_web(request, site):
    from .conftest import WebServer

    server = start_web(site, request.param, "--idle-timeout", "1", "--grace", "2")
    try:
        yield WebServer(server, request.param)
    finally:
        server.stop()
        if server.proc.stderr:
            server.proc.stderr.close()


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1."), raw[:100]
    return int(raw.split(b" ", 2)[1])


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input(hostile_web, case):
    data, status = HOSTILE[case]
    raw = hostile_web.exchange(data)
    assert status_of(raw) == status
    if case not in PATH_CASES:  # a bad path is a well-framed request: the connection could go on
        assert b"\r\nConnection: close\r\n\r\n" in raw
    after = hostile_web.exchange(GOOD)
    assert status_of(after) == 200 and after.endswith(b"hello, world\n")


def test_slow_headers_get_408(hostile_web):
    """Slowloris: headers that stop coming are answered 408 at the idle timeout (1 s here), the socket closed."""
    with socket.create_connection((hostile_web.host, hostile_web.port), timeout=10) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        raw = read_until_closed(sock, 10)
        assert time.monotonic() - started < 8
    assert status_of(raw) == 408
    assert status_of(hostile_web.exchange(GOOD)) == 200


@pytest.mark.parametrize("model", ["iterative", "thread", "pool", "eventloop", "prefork"])
def test_trickled_headers_hit_the_header_deadline(site, model):
    """Slowloris proper: a header byte every 0.2 s keeps a 30 s idle timeout at bay but not the 1 s header
    deadline -- 408 and the connection dropped, while another client is served meanwhile (after, under iterative,
    which serves one connection at a time)."""
    server = start_web(site, model, "--header-timeout", "1", "--idle-timeout", "30", "--grace", "2")
    try:
        host, port = server.address("web")
        head = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"z" * 200
        raw = b""
        served_meanwhile = False
        with socket.create_connection((host, port), timeout=10) as sock:
            started = time.monotonic()
            for i, byte in enumerate(head):  # bounded: 200+ bytes at 0.2 s, far past the deadline
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                if i == 2 and model != "iterative":
                    served_meanwhile = fetch(host, port) == b"hello, world\n"
                ready, _, _ = select.select([sock], [], [], 0.2)
                if ready:
                    break
            raw = read_until_closed(sock, 10)
            elapsed = time.monotonic() - started
        assert status_of(raw) == 408 and b"\r\nConnection: close\r\n" in raw
        assert elapsed < 15  # the 1 s deadline, not the 30 s idle timeout
        if model == "iterative":
            served_meanwhile = fetch(host, port) == b"hello, world\n"
        assert served_meanwhile
    finally:
        server.stop()
        if server.proc.stderr:
            server.proc.stderr.close()


def fetch(host: str, port: int) -> bytes:
    with urllib.request.urlopen(f"http://{host}:{port}/hello.txt", timeout=10) as response:
        return response.read()


def test_idle_keep_alive_connection_is_closed_silently(hostile_web):
    """The answer, then nothing more: the server closes the connection at the idle timeout (1 s here); read_until_closed
    fails the test if the connection is still open after 5 s."""
    with socket.create_connection((hostile_web.host, hostile_web.port), timeout=10) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = read_until_closed(sock, 5)
    assert status_of(raw) == 200 and raw.endswith(b"hello, world\n") and raw.count(b"HTTP/1.1") == 1


@pytest.mark.parametrize("model", ["eventloop", "thread", "fork"])
def test_stop_closes_idle_keep_alive_connections_at_once(site, model):
    server = start_web(site, model, "--idle-timeout", "30", "--grace", "20")
    try:
        host, port = server.address("web")
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            first = sock.recv(65536)
            assert status_of(first) == 200
            started = time.monotonic()
            server.proc.terminate()
            rest = read_until_closed(sock, 15)
            assert rest == b"" and time.monotonic() - started < 10  # long before the 20 s grace period
        assert server.proc.wait(15) == 0
    finally:
        server.stop()
        if server.proc.stderr:
            server.proc.stderr.close()
