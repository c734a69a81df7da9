"""Content-Type from a file name: the standard library's table, plus the web's usual types it lacks, with
``charset=utf-8`` on text types. Cached per suffix -- the hot path asks the same few questions again and again."""

from __future__ import annotations

import mimetypes
from functools import lru_cache

DEFAULT = "application/octet-stream"

_EXTRA = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".md": "text/markdown",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
}
_TEXTUAL = (
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "image/svg+xml",
    "application/manifest+json",
)

_types = mimetypes.MimeTypes()  # the built-in table only: the same answer on every machine


@lru_cache(maxsize=512)
def content_type(name: str) -> str:
    dot = name.rfind(".")
    suffix = name[dot:].lower() if dot > 0 else ""
    kind = _EXTRA.get(suffix) or (_types.guess_type("x" + suffix, strict=False)[0] if suffix else None) or DEFAULT
    if kind.startswith(_TEXTUAL):
        kind += "; charset=utf-8"
    return kind
