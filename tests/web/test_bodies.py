"""Request bodies against the real server under every model: curl and wget send them, hostile ones are refused."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.support import read_until_closed, require_tool

pytestmark = pytest.mark.interop

GOOD = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_tool("curl"), "-sS", "--max-time", "20", *args], capture_output=True, timeout=30, check=False
    )


def code(*args: str) -> str:
    result = curl("-o", "/dev/null", "-w", "%{http_code} %{num_connects}", *args)
    return result.stdout.decode()


@pytest.fixture(scope="module")
def bodies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bodies")
    (folder / "small").write_bytes(b"x" * 100_000)
    (folder / "window").write_bytes(b"w" * 30_000)  # within HTTP/2's first window (64 KiB)
    (folder / "large").write_bytes(b"y" * (2 * 1024 * 1024))  # over the default --max-body of 1M
    return folder


def test_a_post_body_is_read_and_dropped_then_405_on_the_same_connection(web, bodies):
    small = f"@{bodies / 'small'}"
    # Two POSTs and a GET on one connection: the bodies were read to their end, the connection went on.
    result = curl(
        "-w",
        "%{http_code}\n",
        "-o",
        "/dev/null",
        "--data-binary",
        small,
        web.url("/hello.txt"),
        "--next",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\n",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        small,
        web.url("/hello.txt"),
        "--next",
        "-w",
        "%{http_code} %{num_connects}\n",
        "-o",
        "/dev/null",
        web.url("/hello.txt"),
    )
    assert result.stdout.decode().split("\n")[:3] == ["405", "405", "200 0"], result.stderr


def test_a_get_with_a_body_is_served(web, bodies):
    result = curl("-X", "GET", "--data-binary", f"@{bodies / 'small'}", web.url("/hello.txt"))
    assert result.stdout == b"hello, world\n"


def test_expect_100_continue_over_the_limit_is_413_at_once(web, bodies):
    # curl sends Expect: 100-continue for a body this large and waits for 100 before sending it.
    assert code("--expect100-timeout", "30", "--data-binary", f"@{bodies / 'large'}", web.url("/hello.txt")) == "413 1"
    assert (
        code("-X", "GET", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{bodies / 'large'}", web.url("/"))
        == "413 1"
    )


def test_expect_100_continue_for_a_post_is_405_at_once(web, bodies):
    assert code("--expect100-timeout", "30", "-H", "Expect: 100-continue", "-d", "a=b", web.url("/")) == "405 1"


def test_http2_get_with_a_body_is_served(web, bodies):
    """Over HTTP/2 too (the 413 is checked frame by frame in test_h2.py: curl 7.88 calls the RST_STREAM(NO_ERROR)
    that tells it to stop sending a refused body a failed transfer). The body fits the first window: curl 7.88,
    answered before it has sent a larger one, at times stops sending with window to spare and waits for its
    --max-time (nginx 1.22 fails the same request outright); a body over the window is read frame by frame in
    test_h2.py."""
    small = ("--http2-prior-knowledge", "-X", "GET", "--data-binary", f"@{bodies / 'window'}", web.url("/hello.txt"))
    assert curl(*small).stdout == b"hello, world\n"


def test_wget_post_is_405(web):
    result = subprocess.run(
        [require_tool("wget"), "-S", "-O", "-", "--tries=1", "--post-data", "a=b", web.url("/hello.txt")],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert b"405 Method Not Allowed" in result.stderr


HOSTILE = {
    "chunk-size-overflow": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
        400,
    ),
    "length-overflow": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
    "length-lies-short": (b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nabcdefghij\r\n\r\n", 400),
    "body-after-get": (b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\nname=value&other=1\r\n\r\n", 400),
    "chunk-longer-than-its-size": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n",
        400,
    ),
    "cl-and-te": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x",
        400,
    ),
    "over-max-body": (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\nabc", 413),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bodies_are_refused(web, case):
    data, status = HOSTILE[case]
    raw = web.exchange(data)
    last = raw[raw.rfind(b"HTTP/1.1 ") :]
    assert int(last.split(b" ", 2)[1]) == status, raw[:300]
    assert b"\r\nConnection: close\r\n" in last
    after = web.exchange(GOOD)
    assert after.startswith(b"HTTP/1.1 200") and after.endswith(b"hello, world\n")


def test_a_length_that_lies_long_ends_with_the_client(web):
    """Fewer bytes than Content-Length, then the client's end: nothing is answered, the connection is closed, the
    server goes on."""
    with socket.create_connection((web.host, web.port), timeout=10) as sock:
        sock.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort")
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock, 10) == b""
    assert web.exchange(GOOD).endswith(b"hello, world\n")
