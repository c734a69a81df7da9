"""`sockhop get` as a user runs it, against sockhop, Python's http.server, nginx, and scripted servers that frame
bodies every way HTTP/1.1 allows (and some ways it does not)."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import end_process, loopback_dns, require_tool

from .conftest import BIG, start_web

pytestmark = pytest.mark.interop


def sockhop_get(*args: str, cwd: Path | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sockhop", "get", *args], capture_output=True, timeout=timeout, cwd=cwd, check=False
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    text = result.stderr.decode()
    assert "Traceback" not in text and text.count("\n") == 1, text
    return text


@pytest.fixture(scope="module")
def base(site):
    server = start_web(site, "eventloop")
    host, port = server.address("web")
    yield f"http://{host}:{port}"
    server.stop()
    server.proc.stderr.close()


# -- against sockhop ----------------------------------------------------------------------------------------------
def test_get_prints_the_body(base):
    result = sockhop_get(f"{base}/hello.txt")
    assert result.returncode == 0 and result.stdout == b"hello, world\n"


def test_include_and_head(base):
    result = sockhop_get("-i", f"{base}/hello.txt")
    assert result.stdout.startswith(b"HTTP/1.1 200 OK\r\n") and result.stdout.endswith(b"\r\n\r\nhello, world\n")
    head = sockhop_get("-I", f"{base}/big.bin")
    assert head.stdout.startswith(b"HTTP/1.1 200 OK\r\n") and head.stdout.endswith(b"\r\n\r\n")
    assert f"Content-Length: {len(BIG)}".encode() in head.stdout


def test_output_and_remote_name(base, tmp_path):
    assert sockhop_get("-o", str(tmp_path / "out.bin"), f"{base}/big.bin").returncode == 0
    assert (tmp_path / "out.bin").read_bytes() == BIG
    assert sockhop_get("-O", f"{base}/big.bin", f"{base}/hello.txt", cwd=tmp_path).returncode == 0
    assert (tmp_path / "big.bin").read_bytes() == BIG and (tmp_path / "hello.txt").read_text() == "hello, world\n"


def test_follow_redirects(base):
    plain = sockhop_get(f"{base}/docs")
    assert plain.returncode == 0 and b"301 Moved Permanently" in plain.stdout
    followed = sockhop_get("-L", f"{base}/docs")
    assert followed.returncode == 0 and b"readme.md" in followed.stdout


def test_fail_on_error_status(base):
    assert sockhop_get(f"{base}/missing").returncode == 0  # like curl: the 404 page is printed
    result = sockhop_get("-f", f"{base}/missing")
    assert "404 Not Found" in one_line_error(result) and result.stdout == b""


def test_resume(base, tmp_path):
    part = tmp_path / "big.bin"
    part.write_bytes(BIG[:300_000])
    assert sockhop_get("-C", "-o", str(part), f"{base}/big.bin").returncode == 0
    assert part.read_bytes() == BIG
    assert sockhop_get("-C", "-o", str(part), f"{base}/big.bin").returncode == 0  # complete: 416, untouched
    assert part.read_bytes() == BIG


def test_gzip_is_decoded(base, site):
    result = sockhop_get("-i", f"{base}/app.js")
    assert b"Content-Encoding: gzip" in result.stdout
    assert result.stdout.endswith((site / "app.js").read_bytes())


def test_extra_headers(base):
    result = sockhop_get("-H", "Range: bytes=0-4", "-H", "Accept-Encoding:", f"{base}/hello.txt")
    assert result.stdout == b"hello"
    assert "bad header" in one_line_error(sockhop_get("-H", "nonsense", f"{base}/hello.txt"))


# -- errors -------------------------------------------------------------------------------------------------------
def test_connection_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert "connection refused" in one_line_error(sockhop_get(f"http://127.0.0.1:{port}/"))


def test_cannot_resolve(tmp_path):
    command = loopback_dns([sys.executable, "-m", "sockhop", "get", "http://no-such-host.invalid/"], tmp_path)
    line = one_line_error(subprocess.run(command, capture_output=True, timeout=30, check=False))
    assert line.startswith("sockhop: cannot resolve no-such-host.invalid: "), line


def test_timeout():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)  # accepted by the kernel, never answered
        port = sock.getsockname()[1]
        result = sockhop_get("--timeout", "1", f"http://127.0.0.1:{port}/")
    assert "timed out" in one_line_error(result)


def test_bad_urls():
    assert "bad URL" in one_line_error(sockhop_get("https:///nohost"))
    assert "bad URL" in one_line_error(sockhop_get("ftp://127.0.0.1/"))


# -- framing, against a scripted server ---------------------------------------------------------------------------
class Scripted:
    """Answers each request with the next canned reply; counts the connections it accepted."""

    def __init__(self, replies: list[bytes], close_after: bool = False) -> None:
        self.replies = list(replies)
        self.close_after = close_after
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        deadline = time.monotonic() + 20
        while self.replies and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(10)
                buffer = b""
                while self.replies:
                    while b"\r\n\r\n" not in buffer:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        buffer += chunk
                    if b"\r\n\r\n" not in buffer:
                        break
                    buffer = buffer.split(b"\r\n\r\n", 1)[1]
                    conn.sendall(self.replies.pop(0))
                    if self.close_after:
                        break

    def close(self) -> None:
        self.sock.close()
        self.thread.join(10)


@pytest.fixture
def scripted():
    servers: list[Scripted] = []

    def make(replies: list[bytes], **kwargs) -> Scripted:
        server = Scripted(replies, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def test_several_urls_on_one_connection_and_every_framing(scripted):
    server = scripted(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\none\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ntwo\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(gzip.compress(b"three\n")), gzip.compress(b"three\n")),
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nfour, until the close\n",
        ]
    )
    urls = [f"http://127.0.0.1:{server.port}/{n}" for n in range(4)]
    result = sockhop_get(*urls)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"one\ntwo\nthree\nfour, until the close\n"
    assert server.connections == 1


def test_reconnects_when_the_server_closes(scripted):
    server = scripted([b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\na\n"] * 2, close_after=True)
    result = sockhop_get(f"http://127.0.0.1:{server.port}/a", f"http://127.0.0.1:{server.port}/b")
    assert result.stdout == b"a\na\n" and server.connections == 2


def test_truncated_body_is_an_error(scripted):
    server = scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"], close_after=True)
    assert "before the end of the body" in one_line_error(sockhop_get(f"http://127.0.0.1:{server.port}/"))


def test_malformed_response_is_an_error(scripted):
    server = scripted([b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"], close_after=True)
    assert "malformed response" in one_line_error(sockhop_get(f"http://127.0.0.1:{server.port}/"))


def test_relative_redirect_on_another_path(scripted):
    server = scripted(
        [
            b"HTTP/1.1 302 Found\r\nLocation: ../b/c\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
        ]
    )
    result = sockhop_get("-L", f"http://127.0.0.1:{server.port}/a/x")
    assert result.stdout == b"ok\n" and server.connections == 1


def test_redirect_loop_is_cut(scripted):
    server = scripted([b"HTTP/1.1 301 Moved\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n"] * 4)
    result = sockhop_get("-L", "--max-redirects", "3", f"http://127.0.0.1:{server.port}/loop")
    assert "too many redirects" in one_line_error(result)


# -- against real servers -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("server did not start")


def test_against_python_http_server(site, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(site), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        base = f"http://127.0.0.1:{port}"
        assert sockhop_get(f"{base}/hello.txt").stdout == b"hello, world\n"
        assert sockhop_get("-o", str(tmp_path / "big"), f"{base}/big.bin").returncode == 0
        assert (tmp_path / "big").read_bytes() == BIG
        assert b"readme.md" in sockhop_get("-L", f"{base}/docs").stdout
        assert "404" in one_line_error(sockhop_get("-f", f"{base}/missing"))
    finally:
        end_process(proc, 10)


def test_against_nginx(site, tmp_path):
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        nginx = require_tool("nginx")
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""
        daemon off; worker_processes 1; user root root; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;
        events {{ worker_connections 64; }}
        http {{
            access_log off; client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path};
            fastcgi_temp_path {tmp_path}; uwsgi_temp_path {tmp_path}; scgi_temp_path {tmp_path};
            gzip on; gzip_types text/plain; gzip_min_length 1;
            server {{ listen 127.0.0.1:{port}; root {site}; autoindex on; }}
        }}
        """
    )
    proc = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc)
        base = f"http://127.0.0.1:{port}"
        result = sockhop_get("-i", f"{base}/hello.txt")  # gzip on: chunked and compressed, decoded
        assert result.returncode == 0 and result.stdout.endswith(b"\r\n\r\nhello, world\n"), result.stdout
        assert b"Content-Encoding: gzip" in result.stdout
        part = tmp_path / "big.bin"
        part.write_bytes(BIG[:123_456])
        assert sockhop_get("-C", "-o", str(part), f"{base}/big.bin").returncode == 0
        assert part.read_bytes() == BIG
        assert b"readme.md" in sockhop_get("-L", f"{base}/docs").stdout
    finally:
        end_process(proc, 10)


def test_progress_is_silent_without_a_terminal(base, tmp_path):
    result = sockhop_get("-o", str(tmp_path / "x"), f"{base}/big.bin")
    assert result.stderr == b"" and os.path.getsize(tmp_path / "x") == len(BIG)


def test_progress_bar_on_a_terminal(capsys):
    from sockhop.web.get import Progress

    progress = Progress("big.bin", enabled=True)
    progress.start(1000)
    for _ in range(10):
        progress.advance(100)
    progress.finish()
    err = capsys.readouterr().err
    assert "\rbig.bin [" in err and "100% 1000 bytes" in err and err.endswith("\n")


def test_server_command_mistakes_are_one_line(tmp_path):
    for args in (
        ["serve", "web", str(tmp_path / "missing")],
        ["serve", "web", str(tmp_path), "--access-log", str(tmp_path / "no" / "log"), "--listen", "127.0.0.1:0"],
    ):
        result = subprocess.run([sys.executable, "-m", "sockhop", *args], capture_output=True, timeout=30, check=False)
        assert result.returncode == 1
        text = result.stderr.decode()
        assert "Traceback" not in text and text.count("\n") == 1 and text.startswith("sockhop: "), text


def test_broken_pipe_is_quiet(base):
    proc = subprocess.run(
        f"{sys.executable} -m sockhop get {base}/big.bin | head -c 10 > /dev/null",
        shell=True,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.stderr == b""


def test_ipv6(site):
    server = start_web(site, "eventloop", "--listen", "[::1]:0")
    try:
        host, port = server.address("web")
        result = sockhop_get(f"http://[{host}]:{port}/hello.txt")
        assert result.returncode == 0 and result.stdout == b"hello, world\n"
    finally:
        server.stop()
        server.proc.stderr.close()
