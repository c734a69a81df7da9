"""Byte ranges (RFC 9110 14): ``Range: bytes=0-99,200-,-500``.

``parse_ranges`` says what to send: None (no usable Range -- send the whole file), an empty list (none of the
ranges is satisfiable -- 416), or the (first, last) byte pairs, inclusive. Syntax errors are ignored as the RFC
allows; too many ranges, or ranges that overlap, are a denial-of-service pattern and are answered with the whole
file instead (as Apache does).
"""

from __future__ import annotations

import hashlib

MAX_RANGES = 32


def parse_ranges(value: str, size: int) -> list[tuple[int, int]] | None:
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    ranges: list[tuple[int, int]] = []
    specs = [part.strip() for part in spec.split(",")]
    if len(specs) > MAX_RANGES:
        return None
    for part in specs:
        if not part:
            continue
        first_text, dash, last_text = part.partition("-")
        first_text, last_text = first_text.strip(), last_text.strip()
        if not dash or not (first_text.isdigit() or first_text == "") or not (last_text.isdigit() or last_text == ""):
            return None
        if first_text == "":
            if last_text == "":
                return None
            suffix = int(last_text)
            if suffix == 0 or size == 0:
                continue  # unsatisfiable on its own
            ranges.append((max(0, size - suffix), size - 1))
            continue
        first = int(first_text)
        if last_text and int(last_text) < first:
            return None
        last = int(last_text) if last_text else size - 1
        if first >= size:
            continue  # unsatisfiable
        ranges.append((first, min(last, size - 1)))
    ordered = sorted(ranges)
    for (_, a_last), (b_first, _) in zip(ordered, ordered[1:], strict=False):
        if b_first <= a_last:
            return None
    return ranges


def content_range(first: int, last: int, size: int) -> str:
    return f"bytes {first}-{last}/{size}"


def boundary_for(etag: str) -> str:
    """A multipart boundary that cannot occur in the parts' own headers; derived from the ETag so the same request
    gets the same bytes back (no random number on the hot path)."""
    return "sockhop-" + hashlib.sha1(etag.encode()).hexdigest()[:20]


def multipart_heads(
    ranges: list[tuple[int, int]], size: int, content_type: str, boundary: str
) -> tuple[list[bytes], bytes]:
    """The header block before each part and the closing delimiter, for a multipart/byteranges body."""
    heads = [
        (
            f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n"
            f"Content-Range: {content_range(first, last, size)}\r\n\r\n"
        ).encode()
        for first, last in ranges
    ]
    return heads, f"\r\n--{boundary}--\r\n".encode()
