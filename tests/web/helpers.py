"""Drive the web protocol in memory: feed bytes whole, byte by byte or with trailing data (h11's tr()), and read
back the responses, FileRegions included."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sockhop.engine.protocol import FileRegion, Reply, as_reply
from sockhop.web.accesslog import AccessLog
from sockhop.web.files import Site, SiteOptions
from sockhop.web.protocol import HttpLimits, HttpServer, WebOptions

FIXED_TIME = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
TRAILING = b"GET /next HTTP/1.1\r\nHost: exa"


def server(root: Path, *, log: AccessLog | None = None, limits: HttpLimits | None = None, **site) -> HttpServer:
    options = WebOptions(Site(SiteOptions(root=root, **site)), limits or HttpLimits(), log, clock=lambda: FIXED_TIME)
    proto = HttpServer(options)
    proto.connection_made(("127.0.0.1", 40000), ("127.0.0.1", 8080))
    return proto


def materialise(replies: list[Reply]) -> tuple[bytes, bool]:
    """Everything the replies would put on the wire, and whether the connection is to be closed."""
    out = bytearray()
    close = False
    for reply in map(as_reply, replies):
        for piece in reply.send:
            if isinstance(piece, FileRegion):
                out += piece.read()
                if piece.close:
                    os.close(piece.fd)
            else:
                out += piece
        close = close or reply.close
    return bytes(out), close


def feed(proto: HttpServer, data: bytes, mode: str = "whole") -> tuple[bytes, bool]:
    """Feed ``data`` in one piece, a byte at a time, or in one piece followed by the start of another request
    ("trailing", which must change nothing about the answers); stop feeding once the protocol asks to close."""
    replies: list[Reply] = []
    if mode == "trailing":
        chunks = [data + TRAILING]
    elif mode == "whole":
        chunks = [data]
    else:
        chunks = [data[i : i + 1] for i in range(len(data))]
    for chunk in chunks:
        reply = as_reply(proto.data_received(chunk))
        replies.append(reply)
        if reply.close:
            break
    return materialise(replies)


@dataclass
class Parsed:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def parse_responses(raw: bytes, heads: tuple[bool, ...] = ()) -> list[Parsed]:
    """Split a byte stream of responses (Content-Length framed; ``heads[i]`` true: response i answers a HEAD)."""
    found: list[Parsed] = []
    while raw:
        head, sep, raw = raw.partition(b"\r\n\r\n")
        assert sep, f"unterminated head: {head!r}"
        lines = head.decode("latin-1").split("\r\n")
        _, status, reason = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        is_head = heads[len(found)] if len(found) < len(heads) else False
        length = 0 if is_head or status in ("304",) else int(headers.get("content-length", "0"))
        found.append(Parsed(int(status), reason, headers, raw[:length]))
        raw = raw[length:]
    return found
