"""The web part of `sockhop up`: the built-in site, offered on a listener (port 0 here: 8080 may be taken)."""

from __future__ import annotations

from pathlib import Path

from sockhop.service import UpContext
from sockhop.services import SERVICES
from sockhop.web.service import SERVICE
from sockhop.web.site import site_root
from tests.support import open_up_plan

from .helpers import feed, parse_responses, server


def test_web_is_one_of_the_services():
    assert SERVICE in SERVICES and SERVICE.default_port == 8080


def test_up_serves_the_built_in_site(tmp_path: Path):
    listeners, plan = open_up_plan("web", UpContext("127.0.0.1", tmp_path))
    try:
        assert len(listeners) == 1
        listener = listeners[0]
        assert listener.name == "web" and listener.is_stream and listener.busy.startswith(b"HTTP/1.1 503")
        assert "sockhop get http://127.0.0.1:8080/" in plan.try_lines[0]
        proto = listener.factory()
        raw, _ = feed(proto, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        page = parse_responses(raw)[0]
        assert page.status == 200 and b"The six models" in page.body
    finally:
        for listener in listeners:
            listener.sock.close()


def test_built_in_site_is_complete():
    root = site_root()
    assert (root / "index.html").is_file() and (root / "style.css").is_file()
    raw, _ = feed(server(root), b"GET /style.css HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    assert parse_responses(raw)[0].header("content-encoding") == "gzip"
