"""What the server does with one request, whichever HTTP version carried it.

HTTP/1.1 (web/protocol.py) and HTTP/2 (web/h2server.py) differ in framing only: each parses its own wire format
into a method, a target and header fields, and both hand them here, so files, ranges, conditional requests,
precompressed siblings, listings and the access log's line are one implementation behind both.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from http import HTTPStatus

from sockhop.errors import RemoteProtocolError
from sockhop.web.files import Site
from sockhop.web.paths import SitePath, parse_target
from sockhop.web.response import Response, error_response

#: Methods this server knows. GET and HEAD are served; the others get 405 with Allow. Anything else (WebDAV's
#: PROPFIND, ...) or a token nobody registered gets 501.
SERVED = frozenset({"GET", "HEAD"})
KNOWN = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
ALLOW = "GET, HEAD"


def refused_method(method: str) -> Response | None:
    """The answer to a method this server does not serve (405 with Allow, or 501); None for GET and HEAD."""
    if method in SERVED:
        return None
    status = HTTPStatus.METHOD_NOT_ALLOWED if method in KNOWN else HTTPStatus.NOT_IMPLEMENTED
    answer = error_response(status)
    if status == HTTPStatus.METHOD_NOT_ALLOWED:
        answer.headers.append(("Allow", ALLOW))
    return answer


def respond(
    site: Site, method: str, target: SitePath, fields: Mapping[str, str], now: float, key: tuple | None = ()
) -> Response:
    """The site's answer to a GET or HEAD of ``target``; a failure of the server's own (out of descriptors, an I/O
    error) is a 503 or 500 that ends the connection, never the client's fault."""
    auth = site.options.auth
    if auth is not None:
        refused = auth.refused(fields, now, head=method == "HEAD")
        if refused is not None:
            return refused
    try:
        response = site.respond(method, target, fields, now, key)
        if response.status >= 400 and site.error_pages:
            return site.error_page(response, method, now)
        return response
    except OSError as exc:
        busy = exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM)
        status = HTTPStatus.SERVICE_UNAVAILABLE if busy else HTTPStatus.INTERNAL_SERVER_ERROR
        return error_response(status, close=True, head=method == "HEAD")


def handle(site: Site, method: str, target: bytes, fields: Mapping[str, str], now: float) -> Response:
    """The whole answer to one request whose framing is already checked: the method, the target, then the site."""
    refused = refused_method(method)
    if refused is not None:
        return refused
    try:
        path = parse_target(target)
    except RemoteProtocolError as exc:
        return error_response(exc.hint or HTTPStatus.BAD_REQUEST, str(exc), head=method == "HEAD")
    return respond(site, method, path, fields, now)
