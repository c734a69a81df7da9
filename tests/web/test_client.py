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

from tests.support import end_process, free_port, loopback_dns, require_tool, wait_for_port

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
    result = subprocess.run(command, capture_output=True, timeout=30, check=False)
    line = one_line_error(result)
    assert line.startswith("sockhop: cannot resolve no-such-host.invalid: "), line
    assert result.returncode == 6  # curl's "could not resolve host"


def test_a_malformed_host_name_is_refused_before_any_resolver_is_asked():
    result = sockhop_get("http://bad..name/")
    assert "cannot resolve" in one_line_error(result) and result.returncode == 6


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


# -- curl's options (issue 14) ------------------------------------------------------------------------------------
CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    assert CURL is not None
    return subprocess.run([CURL, *args], capture_output=True, timeout=timeout, check=False)


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Echo:
    """A small http.server on loopback answering every method with what it received (method, path, body,
    Content-Type, Authorization, User-Agent, Range); /r301, /r302, /r303, /r307 redirect to /echo (/away: to the
    same server under the name localhost); /flaky answers 503 (Retry-After: 0) until its count runs out."""

    def __init__(self, flaky: int = 0) -> None:
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        echo = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                echo.seen.append((self.command, self.path, body, dict(self.headers)))
                if self.path.startswith("/r3"):
                    status, location = int(self.path[2:5]), "/echo"
                elif self.path == "/away":
                    status, location = 302, f"http://localhost:{echo.port}/echo"
                else:
                    status, location = 200, None
                if self.path == "/flaky" and echo.flaky > 0:
                    echo.flaky -= 1
                    status = 503
                text = json.dumps(
                    {
                        "method": self.command,
                        "path": self.path,
                        "body": body.decode("latin-1"),
                        "type": self.headers.get("Content-Type"),
                        "auth": self.headers.get("Authorization"),
                        "agent": self.headers.get("User-Agent"),
                        "range": self.headers.get("Range"),
                    },
                    sort_keys=True,
                ).encode()
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(text)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = answer

        self.flaky = flaky
        self.seen: list[tuple[str, str, bytes, dict]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def echo():
    servers: list[Echo] = []

    def make(**kwargs) -> Echo:
        servers.append(Echo(**kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def echoed(result: subprocess.CompletedProcess) -> dict:
    import json

    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_data_posts_a_form(echo, tmp_path):
    server = echo()
    form = echoed(sockhop_get("-d", "a=1", "-d", "b=2", f"{server.url}/echo"))
    assert form["method"] == "POST" and form["body"] == "a=1&b=2"
    assert form["type"] == "application/x-www-form-urlencoded"
    (tmp_path / "data").write_bytes(b"x=1\r\ny=2\n")
    assert echoed(sockhop_get("-d", f"@{tmp_path / 'data'}", f"{server.url}/echo"))["body"] == "x=1y=2"
    binary = echoed(sockhop_get("--data-binary", f"@{tmp_path / 'data'}", f"{server.url}/echo"))
    assert binary["body"] == "x=1\r\ny=2\n"
    assert echoed(sockhop_get("--data-raw", "@kept", f"{server.url}/echo"))["body"] == "@kept"
    typed = echoed(sockhop_get("-d", "{}", "-H", "Content-Type: application/json", f"{server.url}/echo"))
    assert typed["type"] == "application/json"
    missing = sockhop_get("-d", f"@{tmp_path / 'missing'}", f"{server.url}/echo")
    assert "cannot read" in one_line_error(missing) and missing.returncode == 26


def test_request_method_and_user(echo):
    server = echo()
    put = echoed(sockhop_get("-X", "PUT", "-d", "v", f"{server.url}/echo"))
    assert (put["method"], put["body"]) == ("PUT", "v")
    assert echoed(sockhop_get("-X", "DELETE", f"{server.url}/echo"))["method"] == "DELETE"
    auth = echoed(sockhop_get("-u", "alice:s3cr:et", f"{server.url}/echo"))["auth"]
    assert auth == "Basic YWxpY2U6czNjcjpldA=="  # alice:s3cr:et
    assert echoed(sockhop_get("-A", "probe/1", f"{server.url}/echo"))["agent"] == "probe/1"
    no_password = sockhop_get("-u", "alice", f"{server.url}/echo")  # no terminal to ask on
    assert "USER:PASSWORD" in one_line_error(no_password) and no_password.returncode == 2


@needs_curl
def test_data_method_and_user_as_curl_sends_them(echo):
    server = echo()
    for args in (
        ["-d", "a=1", "-d", "b=2"],
        ["--data-binary", "x y"],
        ["-X", "PATCH", "-d", "p"],
        ["-X", "DELETE"],
        ["-u", "bob:pw"],
        ["-L", "-d", "k=v", "/r302"],  # POST becomes GET on 302 and 303, stays POST on 307
        ["-L", "-d", "k=v", "/r303"],
        ["-L", "-d", "k=v", "/r307"],
    ):
        path = args.pop() if args[-1].startswith("/") else "/echo"
        ours, theirs = echoed(sockhop_get(*args, server.url + path)), echoed(curl("-s", *args, server.url + path))
        for mine in (ours, theirs):
            mine.pop("agent")
        assert ours == theirs, args


def test_redirects_keep_credentials_on_their_host(echo):
    server = echo()
    same = echoed(sockhop_get("-L", "-u", "a:b", f"{server.url}/r302"))
    assert same["path"] == "/echo" and same["auth"] == "Basic YTpi"
    away = echoed(sockhop_get("-L", "-u", "a:b", f"{server.url}/away"))  # to localhost: another host
    assert away["path"] == "/echo" and away["auth"] is None
    trusted = echoed(sockhop_get("-L", "--location-trusted", "-u", "a:b", f"{server.url}/away"))
    assert trusted["auth"] == "Basic YTpi"


def test_range(base):
    result = sockhop_get("-r", "0-4", "-w", "|%{http_code}", f"{base}/hello.txt")
    assert result.stdout == b"hello|206"
    # The last bytes: -r-6 or --range=-6 (with -4 and -6 options, argparse reads a lone "-6" as an option).
    assert sockhop_get("-r-6", f"{base}/hello.txt").stdout == sockhop_get("--range=-6", f"{base}/hello.txt").stdout
    assert sockhop_get("--range=-6", f"{base}/hello.txt").stdout == b"world\n"
    bad = sockhop_get("-r", "x-y", f"{base}/hello.txt")
    assert "bad -r" in one_line_error(bad) and bad.returncode == 2


def test_verbose(base):
    result = sockhop_get("-v", f"{base}/hello.txt")
    assert result.returncode == 0 and result.stdout == b"hello, world\n"
    err = result.stderr.decode()
    assert "*   Trying 127.0.0.1:" in err and "* Connected to 127.0.0.1 (127.0.0.1) port" in err
    assert "> GET /hello.txt HTTP/1.1\r\n> Host: 127.0.0.1:" in err and "> \r\n" in err
    assert "< HTTP/1.1 200 OK\r\n" in err and "< Content-Length: 13\r\n< " in err and "< \r\n" in err
    assert "* Connection #0 to host 127.0.0.1 left intact" in err
    both = sockhop_get("-v", "-I", f"{base}/hello.txt", f"{base}/docs").stderr.decode()
    assert "* Re-using existing connection #0 with host 127.0.0.1" in both and "< HTTP/1.1 301" in both


@needs_curl
def test_verbose_reads_as_curls(base):
    ours, theirs = sockhop_get("-v", f"{base}/hello.txt"), curl("-v", "-s", f"{base}/hello.txt")
    assert ours.stdout == theirs.stdout
    for text in (ours.stderr, theirs.stderr):
        assert b"> GET /hello.txt HTTP/1.1\r\n" in text and b"< HTTP/1.1 200 OK\r\n" in text and b"< \r\n" in text


@needs_curl
def test_silent_and_show_error_as_curl():
    url = f"http://127.0.0.1:{refused_port()}/"
    for flags, said in ((["-s"], False), (["-s", "-S"], True), ([], True)):
        ours = sockhop_get(*flags, url)
        assert ours.returncode == 7 == curl(*flags, url).returncode
        assert ours.stdout == b""
        if said:
            assert "connection refused" in one_line_error(ours)
        else:
            assert ours.stderr == b""


def test_silent_hides_warnings(base):
    url = f"{base}/hello.txt"
    assert b"warning" in sockhop_get("-w", "%{nonsense}", url).stderr
    quiet = sockhop_get("-s", "-w", "%{nonsense}", url)
    assert quiet.returncode == 0 and quiet.stderr == b"" and quiet.stdout == b"hello, world\n"


@needs_curl
def test_write_out_as_curl(base):
    fmt = "%{http_code} %{response_code} %{size_download} %{url_effective} [%{content_type}] %{method} %%\\n"
    for path in ("/hello.txt", "/missing", "/docs/readme.md"):
        ours = sockhop_get("-o", os.devnull, "-w", fmt, base + path)
        theirs = curl("-s", "-o", os.devnull, "-w", fmt, base + path)
        assert ours.stdout == theirs.stdout and ours.stdout.endswith(b"%\n"), (ours, theirs)
    url = f"http://127.0.0.1:{refused_port()}/"
    fail = "%{http_code} %{exitcode} %{size_download} %{onerror}failed\\n"
    assert sockhop_get("-s", "-w", fail, url).stdout == curl("-s", "-w", fail, url).stdout == b"000 7 0 failed\n"
    assert sockhop_get("-w", "%{onerror}failed", f"{base}/hello.txt").stdout == b"hello, world\n"


def test_write_out_times_and_more(base, tmp_path):
    import json

    fmt = "%{time_total} %{time_connect} %{time_starttransfer} %{num_redirects} %header{content-length}"
    result = sockhop_get("-L", "-o", os.devnull, "-w", fmt, f"{base}/docs")
    total, connect, start, redirects, length = result.stdout.split()
    assert 0 < float(connect) <= float(start) <= float(total) < 30 and redirects == b"1" and int(length) > 0
    assert len(total.split(b".")[1]) == 6  # as curl: seconds, to the microsecond
    (tmp_path / "fmt").write_text("%{json}")
    report = json.loads(sockhop_get("-o", os.devnull, "-w", f"@{tmp_path / 'fmt'}", f"{base}/hello.txt").stdout)
    assert report["http_code"] == 200 and report["size_download"] == 13 and report["remote_ip"] == "127.0.0.1"
    switched = sockhop_get("-o", os.devnull, "-w", "out%{stderr}err", f"{base}/hello.txt")
    assert (switched.stdout, switched.stderr) == (b"out", b"err")


def test_retry_transient_statuses(echo):
    server = echo(flaky=2)
    result = sockhop_get("--retry", "3", "--retry-delay", "0.05", f"{server.url}/flaky")
    assert echoed(result)["path"] == "/flaky"  # only the last answer's body was written
    assert result.stderr.decode().count("retrying") == 2 and len(server.seen) == 3
    server.flaky = 5
    short = sockhop_get("-s", "-f", "--retry", "1", "--retry-delay", "0.05", f"{server.url}/flaky")
    assert short.returncode == 22 and short.stdout == b"" and short.stderr == b"" and len(server.seen) == 5
    plain = sockhop_get("--retry", "1", "--retry-delay", "0.05", f"{server.url}/echo")
    assert echoed(plain)["path"] == "/echo" and len(server.seen) == 6  # a 200 is never retried


def test_retry_connection_failures():
    url = f"http://127.0.0.1:{refused_port()}/"
    refused = sockhop_get("--retry", "2", "--retry-delay", "0.05", url)
    assert refused.returncode == 7 and "retrying" not in refused.stderr.decode()  # as curl: refusal is final
    again = sockhop_get("--retry", "2", "--retry-delay", "0.05", "--retry-connrefused", url)
    assert again.returncode == 7 and again.stderr.decode().count("retrying") == 2
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # accepted by the kernel, never answered
        port = sock.getsockname()[1]
        started = time.monotonic()
        slow = sockhop_get("--max-time", "0.3", "--retry", "1", "--retry-delay", "0.05", f"http://127.0.0.1:{port}/")
        assert slow.returncode == 28 and slow.stderr.decode().count("retrying") == 1
        assert time.monotonic() - started < 10


@needs_curl
def test_timeouts_as_curl():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # accepted by the kernel, never answered
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        started = time.monotonic()
        ours = sockhop_get("--max-time", "0.5", url)
        assert "--max-time" in one_line_error(ours) and time.monotonic() - started < 10
        assert ours.returncode == 28 == curl("-s", "--max-time", "0.5", url).returncode
        assert sockhop_get("--timeout", "0.5", url).returncode == 28
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)  # never accepts: once its queue is full, a connect waits for a SYN-ACK that never comes
        url = f"http://127.0.0.1:{full.getsockname()[1]}/"
        fillers = []
        try:
            for _ in range(3):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(full.getsockname())
                fillers.append(filler)
            time.sleep(0.2)
            ours = sockhop_get("--connect-timeout", "0.5", url)
            assert "timed out connecting" in one_line_error(ours)
            assert ours.returncode == 28 == curl("-s", "--connect-timeout", "0.5", url).returncode
        finally:
            for filler in fillers:
                filler.close()


@needs_curl
def test_exit_codes_as_curl(base, tmp_path):
    cases = [
        (["-f", f"{base}/missing"], 22),
        ([f"http://127.0.0.1:{refused_port()}/"], 7),
        (["http://[::1:1/"], 3),
        (["-o", str(tmp_path / "no" / "such" / "dir"), f"{base}/hello.txt"], 23),
        (["-4", "http://[::1]:1/"], 7),
        (["--retry", "x", f"{base}/hello.txt"], 2),
    ]
    for args, status in cases:
        ours, theirs = sockhop_get(*args), curl("-s", *args)
        assert ours.returncode == theirs.returncode == status, (args, ours, theirs)
        one_line_error(ours)


def test_bad_use_is_one_line_and_status_2(base, scripted):
    for args in (
        ["-I", "-d", "x", f"{base}/"],
        ["-C", f"{base}/"],
        ["--resolve", "nonsense", f"{base}/"],
        ["--resolve", "example.test:80:not-an-address", f"{base}/"],
        ["-H", "nonsense", f"{base}/"],
        ["--max-time", "0", f"{base}/"],
    ):
        result = sockhop_get(*args)
        assert result.returncode == 2, (args, result)
        one_line_error(result)
    server = scripted([b"HTTP/1.1 301 Moved\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n"] * 3)
    assert sockhop_get("-L", "--max-redirects", "2", f"http://127.0.0.1:{server.port}/").returncode == 47


def test_ipv4_and_ipv6(site):
    server = start_web(site, "eventloop", "--listen", "[::1]:0")
    try:
        host, port = server.address("web")
        assert sockhop_get("-6", f"http://[{host}]:{port}/hello.txt").stdout == b"hello, world\n"
        refused = sockhop_get("-4", f"http://[{host}]:{port}/hello.txt")
        assert "no IPv4 address" in one_line_error(refused) and refused.returncode == 7
        pinned = sockhop_get("-6", "--resolve", f"web.test:{port}:[::1]", f"http://web.test:{port}/hello.txt")
        assert pinned.stdout == b"hello, world\n"
    finally:
        server.stop()
        server.proc.stderr.close()


def test_resolve_keeps_the_host_name(base, echo):
    port = base.rsplit(":", 1)[1]
    result = sockhop_get("-v", "--resolve", f"site.test:{port}:127.0.0.1", f"http://site.test:{port}/hello.txt")
    assert result.stdout == b"hello, world\n"
    assert f"> Host: site.test:{port}\r\n" in result.stderr.decode()
    server = echo()
    entry = f"*:{server.port}:127.0.0.1"  # curl's wildcard
    assert echoed(sockhop_get("--resolve", entry, f"http://any.test:{server.port}/echo"))["path"] == "/echo"


def test_resolve_asks_no_resolver(base, tmp_path, monkeypatch):
    """In-process, with getaddrinfo watched: only address literals reach it."""
    from sockhop.cli import main
    from sockhop.web.client import ip_literal

    asked: list[str] = []
    real = socket.getaddrinfo

    def watched(host, *args, **kwargs):
        asked.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", watched)
    port = base.rsplit(":", 1)[1]
    out = tmp_path / "out"
    assert (
        main(
            [
                "get",
                "--resolve",
                f"pinned.test:{port}:127.0.0.1",
                "-o",
                str(out),
                f"http://pinned.test:{port}/hello.txt",
            ]
        )
        == 0
    )
    assert out.read_bytes() == b"hello, world\n"
    assert asked and all(ip_literal(host) for host in asked), asked


@needs_curl
def test_resolve_as_curl(base):
    port = base.rsplit(":", 1)[1]
    args = [
        "--resolve",
        f"site.test:{port}:127.0.0.1",
        "-w",
        "%{http_code} %{url_effective}",
        f"http://site.test:{port}/hello.txt",
    ]
    ours, theirs = sockhop_get(*args), curl("-s", *args)
    assert ours.stdout == theirs.stdout == f"hello, world\n200 http://site.test:{port}/hello.txt".encode()
