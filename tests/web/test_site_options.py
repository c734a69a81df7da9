"""What nginx users reach for: error pages, Cache-Control by prefix, the machine's MIME types -- in memory and with
curl against a real server, HTTP/1.1 and HTTP/2."""

from __future__ import annotations

import os
import subprocess

import pytest

from sockhop.web.mime import SYSTEM_TYPES, content_type
from tests.support import cannot_run, require_tool, start_server

from .helpers import feed, parse_responses, server


@pytest.fixture
def root(tmp_path):
    (tmp_path / "404.html").write_text("<h1>custom not found</h1>\n")
    (tmp_path / "hello.txt").write_text("hello\n")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "app.js").write_text("let x = 1;\n")
    (tmp_path / "assets" / "fonts").mkdir()
    (tmp_path / "assets" / "fonts" / "a.woff2").write_bytes(b"wOF2")
    return tmp_path


def get(proto, path: str, *extra: str, method: str = "GET"):
    request = "\r\n".join([f"{method} {path} HTTP/1.1", "Host: x", *extra]) + "\r\n\r\n"
    raw, _ = feed(proto, request.encode())
    return parse_responses(raw, heads=(method == "HEAD",))[0]


def test_an_error_page_is_sent_with_the_error_status(root):
    proto = server(root, error_pages=((404, "/404.html"),))
    for _ in range(2):  # and again, from the memo
        missing = get(proto, "/nowhere")
        assert missing.status == 404 and missing.body == b"<h1>custom not found</h1>\n"
        assert missing.header("content-type") == "text/html; charset=utf-8" and missing.header("etag") is None
    head = get(proto, "/nowhere", method="HEAD")
    assert head.status == 404 and head.body == b"" and head.header("content-length") == "26"
    assert get(proto, "/hello.txt").body == b"hello\n"


def test_a_missing_error_page_leaves_the_plain_error(root):
    (root / "404.html").unlink()
    missing = get(server(root, error_pages=((404, "/404.html"),)), "/nowhere")
    assert missing.status == 404 and b"404 Not Found" in missing.body


def test_cache_control_by_the_longest_prefix(root):
    policies = (("/assets/", "max-age=3600"), ("/assets/fonts/", "max-age=31536000, immutable"))
    proto = server(root, cache_control=policies)
    assert get(proto, "/assets/app.js").header("cache-control") == "max-age=3600"
    assert get(proto, "/assets/fonts/a.woff2").header("cache-control") == "max-age=31536000, immutable"
    assert get(proto, "/hello.txt").header("cache-control") is None


def test_mime_types_from_the_machine():
    if not os.path.isfile(SYSTEM_TYPES):
        cannot_run(f"{SYSTEM_TYPES} is missing (the media-types package)")
    assert content_type("pkg.deb") == "application/vnd.debian.binary-package"  # not in Python's own table
    assert content_type("book.epub") == "application/epub+zip"
    assert content_type("app.js") == "text/javascript; charset=utf-8"  # the web's usual types still win


@pytest.mark.interop
def test_with_curl_over_http11_and_http2(root):
    proc = start_server(
        ["serve", "web", str(root), "--listen", "127.0.0.1:0", "--no-access-log", "--error-page", "404=/404.html",
         "--cache-control", "/assets/=max-age=3600"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        host, port = proc.address("web")
        curl = require_tool("curl")
        for version in ("--http1.1", "--http2-prior-knowledge"):
            done = subprocess.run(
                [curl, "-sS", version, "-w", "%{http_code}", f"http://{host}:{port}/nowhere"],
                capture_output=True,
                timeout=30,
            )
            assert done.stdout == b"<h1>custom not found</h1>\n404"
            done = subprocess.run(
                [curl, "-sS", version, "-D", "-", "-o", "/dev/null", f"http://{host}:{port}/assets/app.js"],
                capture_output=True,
                timeout=30,
            )
            assert b"cache-control: max-age=3600" in done.stdout.lower()
    finally:
        proc.stop()


def test_option_mistakes_are_one_line(tmp_path):
    import sys

    for option in (["--error-page", "404"], ["--error-page", "200=/x"], ["--cache-control", "assets=1"]):
        done = subprocess.run(
            [sys.executable, "-m", "sockhop", "serve", "web", str(tmp_path), *option],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and "error: argument" in done.stderr
