"""The web part of `sockhop up`: the built-in site, offered on a listener (port 0 here: 8080 may be taken)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from sockhop.up import SERVICES, UpContext
from sockhop.web.cli import DEFAULT_PORT, web_service
from sockhop.web.site import site_root

from .helpers import feed, parse_responses, server


@dataclass(frozen=True)
class AnyPort(UpContext):
    def open(self, port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> socket.socket:
        assert port == DEFAULT_PORT
        return super().open(0, kind)


def test_web_is_one_of_the_services():
    assert web_service in SERVICES


def test_offer(tmp_path: Path):
    offers = web_service(AnyPort("127.0.0.1", tmp_path))
    try:
        assert len(offers) == 1
        listener = offers[0].listener
        assert listener.name == "web" and listener.is_stream and listener.busy.startswith(b"HTTP/1.1 503")
        assert "sockhop get http://127.0.0.1:8080/" in offers[0].try_it
        proto = listener.factory()
        raw, _ = feed(proto, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        page = parse_responses(raw)[0]
        assert page.status == 200 and b"The six models" in page.body
    finally:
        for offer in offers:
            offer.listener.sock.close()


def test_built_in_site_is_complete():
    root = site_root()
    assert (root / "index.html").is_file() and (root / "style.css").is_file()
    raw, _ = feed(server(root), b"GET /style.css HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    assert parse_responses(raw)[0].header("content-encoding") == "gzip"
