"""The real server, under every model, driven by clients nobody here wrote: curl, wget, ab, http.client, urllib."""

from __future__ import annotations

import gzip
import http.client
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.support import end_process, require_tool

from .conftest import BIG

pytestmark = pytest.mark.interop


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, timeout=timeout, check=False)


def curl(*args: str) -> subprocess.CompletedProcess:
    return run(require_tool("curl"), "-sS", "--max-time", "20", *args)


def test_curl_get_and_head(web):
    result = curl("-i", web.url("/hello.txt"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"HTTP/1.1 200 OK\r\n")
    assert result.stdout.endswith(b"\r\n\r\nhello, world\n")
    head = curl("-I", web.url("/hello.txt"))
    assert b"Content-Length: 13\r\n" in head.stdout and head.stdout.endswith(b"\r\n\r\n")


def test_curl_big_file_with_sendfile(web, tmp_path):
    out = tmp_path / "big.bin"
    result = curl("-o", str(out), web.url("/big.bin"))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == BIG


def test_curl_keep_alive_over_several_urls(web):
    result = curl("-v", web.url("/hello.txt"), web.url("/index.html"), web.url("/docs/readme.md"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello, world\n" + b"<!doctype html><title>home</title><h1>home</h1>\n" + b"# docs\n"
    assert result.stderr.count(b"Re-using existing connection") == 2


def test_curl_http10(web):
    result = curl("-0", "-i", web.url("/hello.txt"))
    assert result.stdout.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in result.stdout
    assert result.stdout.endswith(b"hello, world\n")


def test_curl_ranges(web):
    assert curl("-r", "0-4", web.url("/hello.txt")).stdout == b"hello"
    multi = curl("-i", "-r", "0-4,7-11", web.url("/hello.txt")).stdout
    assert b"206 Partial Content" in multi and b"multipart/byteranges" in multi
    assert curl("-o", "/dev/null", "-w", "%{http_code}", "-r", "100-", web.url("/hello.txt")).stdout == b"416"
    # Large parts go out with sendfile, several regions of one descriptor.
    assert curl("-r", "100000-199999", web.url("/big.bin")).stdout == BIG[100000:200000]
    parts = curl("-r", "0-99999,500000-599999", web.url("/big.bin")).stdout
    assert BIG[:100000] in parts and BIG[500000:600000] in parts and len(parts) > 200000


def test_curl_conditional(web):
    head = curl("-I", web.url("/hello.txt")).stdout.decode()
    etag = next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith("ETag"))
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", f"If-None-Match: {etag}", web.url("/hello.txt"))
    assert code.stdout == b"304"
    code = curl("-o", "/dev/null", "-w", "%{http_code}", "-z", "2000-01-01", web.url("/hello.txt"))
    assert code.stdout == b"200"


def test_curl_compressed_and_redirects(web):
    result = curl("--compressed", "-i", web.url("/app.js"))
    assert b"Content-Encoding: gzip" in result.stdout and result.stdout.endswith(b"console.log('plain');\n")
    assert curl("-L", web.url("/docs")).stdout.startswith(b"<!doctype html>")  # 301 to /docs/, then the listing
    assert curl("-o", "/dev/null", "-w", "%{http_code}", web.url("/.env")).stdout == b"404"
    assert curl(web.url("/sp%20ace%20%C3%A9.txt")).stdout == b"unicode name\n"


def test_wget(web, tmp_path):
    wget = require_tool("wget")
    result = run(wget, "-q", "-O", str(tmp_path / "hello"), "--timeout=20", "--tries=1", web.url("/hello.txt"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "hello").read_text() == "hello, world\n"
    missing = run(wget, "-q", "-O", str(tmp_path / "nope"), "--timeout=20", "--tries=1", web.url("/nope"))
    assert missing.returncode == 8  # "server issued an error response"


def test_http_client_keep_alive(web):
    conn = http.client.HTTPConnection(web.host, web.port, timeout=20)
    try:
        for path, body in [("/hello.txt", b"hello, world\n"), ("/docs/readme.md", b"# docs\n")] * 2:
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200 and response.read() == body
        conn.request("HEAD", "/big.bin")
        response = conn.getresponse()
        assert response.getheader("Content-Length") == str(len(BIG)) and response.read() == b""
        conn.request("POST", "/hello.txt", body=b"x=1")
        response = conn.getresponse()
        assert response.status == 405 and response.getheader("Allow") == "GET, HEAD"
        response.read()
    finally:
        conn.close()


def test_urllib(web):
    with urllib.request.urlopen(web.url("/docs"), timeout=20) as response:  # follows the 301
        assert response.url.endswith("/docs/") and b"readme.md" in response.read()
    request = urllib.request.Request(web.url("/app.js"), headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(response.read()).startswith(b"console.log")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(web.url("/missing"), timeout=20)
    assert info.value.code == 404
    info.value.close()


def test_ab_short_burst(web):
    ab = require_tool("ab")
    # Keep-alive clients hold their connection: iterative serves one at a time and pool as many as it has workers.
    concurrency = {"iterative": "1", "pool": "2"}.get(web.model, "4")
    result = run(ab, "-q", "-k", "-n", "200", "-c", concurrency, "-s", "20", web.url("/hello.txt"), timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "Complete requests:      200" in out and "Failed requests:        0" in out
    assert "Non-2xx responses" not in out


@pytest.mark.parametrize("model", ["eventloop", "prefork", "fork"])
def test_access_log_file(site, tmp_path, model):
    from .conftest import start_web

    log = tmp_path / "access.log"
    server = start_web(site, model, "--access-log", str(log))
    try:
        host, port = server.address("web")
        base = f"http://{host}:{port}"
        result = curl("-A", "interop/1", "-e", "http://ref.test/", f"{base}/hello.txt", f"{base}/missing")
        assert result.returncode == 0, result.stderr
    finally:
        server.stop()
        server.proc.stderr.close()
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("127.0.0.1 - - [")
    assert lines[0].endswith('] "GET /hello.txt HTTP/1.1" 200 13 "http://ref.test/" "interop/1"')
    assert '"GET /missing HTTP/1.1" 404 ' in lines[1]


def test_access_log_to_stdout(site):
    import os
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "sockhop", "serve", "web", str(site), "--listen", "127.0.0.1:0", "--access-log", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        announce = proc.stderr.readline()
        port = announce.rsplit(":", 1)[1].split()[0]
        assert curl(f"http://127.0.0.1:{port}/hello.txt").stdout == b"hello, world\n"
        line = proc.stdout.readline()
        assert '"GET /hello.txt HTTP/1.1" 200 13 "-" "curl/' in line
    finally:
        end_process(proc, 15)
        proc.stdout.close()
        proc.stderr.close()
