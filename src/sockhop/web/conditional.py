"""Conditional requests (RFC 9110 13): answer 304 when the client's copy is current, and decide whether a Range
still applies (If-Range). Only GET and HEAD come here, so If-Match and If-Unmodified-Since -- which guard
changes -- have nothing to guard on a read-only site and are not evaluated."""

from __future__ import annotations

from collections.abc import Mapping

from sockhop.web.response import parse_http_date


def _tags(value: str) -> list[str]:
    return [tag.strip() for tag in value.split(",") if tag.strip()]


def _weak_match(a: str, b: str) -> bool:
    return a.removeprefix("W/") == b.removeprefix("W/")


def not_modified(headers: Mapping[str, str], etag: str, mtime: int) -> bool:
    """True if the client's cached copy is current: If-None-Match (weak comparison) when present, otherwise
    If-Modified-Since against the file's modification time in whole seconds."""
    inm = headers.get("if-none-match")
    if inm is not None:
        return any(tag == "*" or _weak_match(tag, etag) for tag in _tags(inm))
    ims = headers.get("if-modified-since")
    if ims is not None:
        since = parse_http_date(ims)
        return since is not None and mtime <= since
    return False


def range_applies(headers: Mapping[str, str], etag: str, last_modified: str) -> bool:
    """If-Range: send the part only if the client's copy is still this one (strong ETag match, or the exact
    Last-Modified date); otherwise the whole file."""
    value = headers.get("if-range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return not value.startswith("W/") and value == etag
    return value == last_modified
