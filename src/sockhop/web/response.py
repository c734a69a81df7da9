"""What the server answers: a status, headers and a body, turned into bytes once, at the end.

Status codes are the standard library's :class:`http.HTTPStatus`, so the server, the client and the tests share
one set of names.
"""

from __future__ import annotations

import html
import os
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


def status_line(version: str, status: int) -> bytes:
    return f"HTTP/{version} {status} {reason(status)}\r\n".encode("ascii")


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
