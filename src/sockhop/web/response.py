"""What the server answers: a status, headers and a body, turned into bytes once, at the end.

Status codes are the standard library's :class:`http.HTTPStatus`, so the server, the client and the tests share
one set of names.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from functools import lru_cache
from http import HTTPStatus

from sockhop import __version__
from sockhop.engine.protocol import FileRegion

SERVER = f"sockhop/{__version__}"

#: Statuses that never carry a body (RFC 9110 6.4.1), whatever the method.
BODILESS = frozenset({HTTPStatus.NOT_MODIFIED, HTTPStatus.NO_CONTENT})

_REASONS = {status.value: status.phrase for status in HTTPStatus}


@dataclass(slots=True)
class Response:
    """One answer. ``body`` pieces are bytes or :class:`FileRegion`; ``length`` is their total size (what
    Content-Length says and the access log records). ``close``: the connection must end after this one."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: tuple[bytes | FileRegion, ...] = ()
    length: int = 0
    close: bool = False

    def release(self) -> None:
        """Close the files of a body that will not be sent (a HEAD, or a response replaced by an error)."""
        for piece in self.body:
            if isinstance(piece, FileRegion) and piece.close:
                try:
                    os.close(piece.fd)
                except OSError:
                    pass
        self.body = ()


def reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


#: The status line and Server header every answer starts with, one per status (HTTP/1.1 whatever the request's
#: version, as RFC 9110 6.2 asks and nginx and Apache do).
_HEAD_STARTS = {code: f"HTTP/1.1 {code} {phrase}\r\nServer: {SERVER}\r\nDate: " for code, phrase in _REASONS.items()}


def response_head(status: int, date: str, headers: Iterable[tuple[str, str]], connection: str | None = None) -> bytes:
    """The head of an answer -- status line, Server, Date, ``headers`` in order, then ``Connection: connection``
    if given -- ending in the blank line. The one formatter of the server: the general path calls it for every
    answer, and a cached file's ready-made answer (``CachedFile.wire``) once a second, so both are the same bytes."""
    start = _HEAD_STARTS.get(status) or f"HTTP/1.1 {int(status)} {reason(status)}\r\nServer: {SERVER}\r\nDate: "
    text = start + date + "\r\n" + "".join([f"{name}: {value}\r\n" for name, value in headers])
    if connection is not None:
        text += f"Connection: {connection}\r\n"
    return (text + "\r\n").encode("latin-1")


def http_date(seconds: float) -> str:
    """An IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``). Cached: every response in one second carries the same
    Date, and a site has few distinct Last-Modified times."""
    return _http_date(int(seconds))


@lru_cache(maxsize=4096)
def _http_date(whole: int) -> str:
    return formatdate(whole, usegmt=True)


def parse_http_date(text: str) -> int | None:
    """Seconds since the epoch of an HTTP date (any of the three formats RFC 9110 accepts), or None if it is not
    one -- a bad date in a conditional header is ignored, never an error."""
    try:
        return int(parsedate_to_datetime(text).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def error_page(status: int, detail: str = "") -> bytes:
    """The small HTML body of an error response."""
    title = f"{status} {reason(status)}"
    extra = f"<p>{html.escape(detail)}</p>\n" if detail else ""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>\n'
        f"<body><h1>{title}</h1>\n{extra}<hr><address>{SERVER}</address></body></html>\n"
    ).encode()


def error_response(status: int, detail: str = "", *, close: bool = False, head: bool = False) -> Response:
    page = error_page(status, detail)
    headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(page)))]
    return Response(status, headers, () if head else (page,), 0 if head else len(page), close)


def redirect_response(location: str, *, head: bool = False) -> Response:
    response = error_response(HTTPStatus.MOVED_PERMANENTLY, f"Moved to {location}", head=head)
    response.headers.append(("Location", location))
    return response
