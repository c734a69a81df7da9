"""Compression on the fly (--compress): in memory, then curl (HTTP/1.1 and HTTP/2) against real servers."""

from __future__ import annotations

import gzip
import os
import subprocess

import brotli
import pytest

from sockhop.web.compress import Compressor
from tests.support import require_tool, start_server

from .helpers import feed, parse_responses, server

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(400)).encode()


@pytest.fixture
def root(tmp_path):
    (tmp_path / "page.html").write_bytes(TEXT)
    (tmp_path / "tiny.txt").write_bytes(b"tiny\n")
    (tmp_path / "photo.png").write_bytes(os.urandom(5000))
    (tmp_path / "app.js").write_bytes(TEXT)
    (tmp_path / "app.js.gz").write_bytes(b"\x1f\x8bPRECOMPRESSED")
    return tmp_path


def get(proto, path: str, *extra: str):
    request = "\r\n".join([f"GET {path} HTTP/1.1", "Host: x", *extra]) + "\r\n\r\n"
    raw, _ = feed(proto, request.encode())
    return parse_responses(raw)[0]


def test_gzip_and_brotli_for_text_with_vary(root):
    compressor = Compressor()
    proto = server(root, compressor=compressor)
    gz = get(proto, "/page.html", "Accept-Encoding: gzip")
    assert gz.header("content-encoding") == "gzip" and gz.header("vary") == "Accept-Encoding"
    assert gzip.decompress(gz.body) == TEXT and int(gz.header("content-length")) == len(gz.body) < len(TEXT) // 5
    br = get(proto, "/page.html", "Accept-Encoding: gzip, deflate, br")
    assert br.header("content-encoding") == "br" and brotli.decompress(br.body) == TEXT
    assert gz.header("etag") != br.header("etag") and br.header("etag").endswith('-br"')
    plain = get(proto, "/page.html")
    assert plain.body == TEXT and plain.header("content-encoding") is None and plain.header("vary") == "Accept-Encoding"


def test_a_hot_file_is_compressed_once(root):
    compressor = Compressor()
    proto = server(root, compressor=compressor)
    for _ in range(5):
        assert get(proto, "/page.html", "Accept-Encoding: gzip").header("content-encoding") == "gzip"
    assert len(compressor.store) == 1
    (root / "page.html").write_bytes(TEXT + b"more\n")  # a new version: compressed again
    assert gzip.decompress(get(proto, "/page.html", "Accept-Encoding: gzip").body) == TEXT + b"more\n"
    assert len(compressor.store) == 2


def test_not_for_ranges_small_files_binary_types_or_when_a_sibling_exists(root):
    proto = server(root, compressor=Compressor())
    get(proto, "/page.html", "Accept-Encoding: gzip")  # cached compressed: the range must not get those bytes
    ranged = get(proto, "/page.html", "Accept-Encoding: gzip", "Range: bytes=0-9")
    assert ranged.status == 206 and ranged.body == TEXT[:10] and ranged.header("content-encoding") is None
    assert get(proto, "/tiny.txt", "Accept-Encoding: gzip").header("content-encoding") is None
    assert get(proto, "/photo.png", "Accept-Encoding: gzip").header("content-encoding") is None
    assert get(proto, "/app.js", "Accept-Encoding: gzip").body == b"\x1f\x8bPRECOMPRESSED"


def test_conditional_requests_use_the_compressed_etag(root):
    proto = server(root, compressor=Compressor())
    etag = get(proto, "/page.html", "Accept-Encoding: gzip").header("etag")
    again = get(proto, "/page.html", "Accept-Encoding: gzip", f"If-None-Match: {etag}")
    assert again.status == 304


def test_off_by_default(root):
    proto = server(root)
    response = get(proto, "/page.html", "Accept-Encoding: gzip")
    assert response.body == TEXT and response.header("vary") is None


# -- real servers -------------------------------------------------------------------------------------------------
@pytest.mark.interop
@pytest.mark.parametrize("model", ["eventloop", "thread", "prefork"])
def test_curl_compressed_over_http11_and_http2(root, model):
    workers = ["--workers", "2"] if model == "prefork" else []
    server_ = start_server(
        ["serve", "web", str(root), "--listen", "127.0.0.1:0", "--no-access-log", "--compress", "--model", model,
         *workers],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        host, port = server_.address("web")
        url = f"http://{host}:{port}/page.html"
        curl = require_tool("curl")
        for version in ("--http1.1", "--http2-prior-knowledge"):
            for coding in ("gzip", "br"):
                done = subprocess.run(
                    [curl, "-sS", version, "-H", f"Accept-Encoding: {coding}", "--compressed", "-D", "-", url],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
                head, _, body = done.stdout.partition(b"\r\n\r\n")
                assert f"content-encoding: {coding}".encode() in head.lower() and body == TEXT, done.stderr
        ranged = subprocess.run([curl, "-sS", "--compressed", "-r", "0-9", url], capture_output=True, timeout=30)
        assert ranged.stdout == TEXT[:10]
    finally:
        server_.stop()
