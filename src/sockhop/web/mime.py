"""Content-Type from a file name: the machine's /etc/mime.types when present (what nginx's and Apache's packages
ship, and what an administrator edits), over the standard library's built-in table, plus the web's usual types
either may lack, with ``charset=utf-8`` on text types. Cached per suffix -- the hot path asks the same few questions
again and again."""

from __future__ import annotations

import mimetypes
import os
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

#: Where the machine keeps its table (Debian's media-types package; the file nginx users know).
SYSTEM_TYPES = "/etc/mime.types"

_types = mimetypes.MimeTypes()  # the built-in table ...
if os.path.isfile(SYSTEM_TYPES):
    try:
        _types.read(SYSTEM_TYPES)  # ... with the machine's over it
    except (OSError, UnicodeDecodeError):
        pass  # an unreadable table leaves the built-in one


@lru_cache(maxsize=512)
def content_type(name: str) -> str:
    dot = name.rfind(".")
    suffix = name[dot:].lower() if dot > 0 else ""
    kind = _EXTRA.get(suffix) or (_types.guess_type("x" + suffix, strict=False)[0] if suffix else None) or DEFAULT
    if kind.startswith(_TEXTUAL):
        kind += "; charset=utf-8"
    return kind
