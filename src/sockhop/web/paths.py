"""From a request target to path segments inside the site root -- refusing every way out.

The target is decoded once (percent-decoding to bytes, then strict UTF-8, which rejects overlong encodings), and the
decoded path is what every check looks at, so ``%2e%2e``, ``%2f`` and ``%5c`` get no second chance. Dot segments are
resolved as RFC 3986 says; one that would climb above the root is refused. NUL and backslashes never name a file
here (a backslash is a separator on Windows and an old trick elsewhere), so they are refused too. What this module
cannot see -- symlinks -- files.py checks on the opened file itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

from sockhop.errors import RemoteProtocolError


class BadTarget(RemoteProtocolError):
    """The request target does not name a path on this server."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, hint=HTTPStatus.BAD_REQUEST)


@dataclass(frozen=True, slots=True)
class SitePath:
    """A path inside the root: ``segments`` has no empty, ``.`` or ``..`` part and no ``/``, NUL or backslash.
    ``raw`` is the target's path as the client wrote it (still percent-encoded), for redirects."""

    segments: tuple[str, ...]
    slash: bool  # the path ended with "/" (or is the root)
    raw: str
    query: str

    @property
    def text(self) -> str:
        joined = "/" + "/".join(self.segments)
        return joined + "/" if self.slash and self.segments else joined

    dotted: bool = False  # some segment is a dotfile (set by parse_target, which sees every segment)

    def hidden(self) -> bool:
        """True if any segment is a dotfile (``.git``, ``.env``)."""
        return self.dotted


@lru_cache(maxsize=1024)  # a site is asked for the same few targets over and over; SitePath is immutable
def parse_target(target: bytes) -> SitePath:
    """Split and decode an origin-form (``/a/b?q``) or absolute-form (``http://host/a/b``) request target.

    Raises:
        BadTarget: anything that is not a path on this server, or that would leave the root.
    """
    if target.startswith((b"http://", b"https://")):
        rest = target.split(b"://", 1)[1]
        slash = rest.find(b"/")
        target = rest[slash:] if slash >= 0 else b"/"
    if not target.startswith(b"/"):
        raise BadTarget("the request target must be a path")
    raw, _, query = target.partition(b"?")
    raw = raw.partition(b"#")[0]
    decoded = unquote_to_bytes(raw)
    if b"\x00" in decoded:
        raise BadTarget("NUL in the path")
    if b"\\" in decoded:
        raise BadTarget("backslash in the path")
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise BadTarget("the path is not valid UTF-8") from None
    segments: list[str] = []
    parts = text.split("/")
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not segments:
                raise BadTarget("the path climbs above the root")
            segments.pop()
            continue
        segments.append(part)
    slash = parts[-1] in ("", ".", "..")
    dotted = any(segment.startswith(".") for segment in segments)
    return SitePath(tuple(segments), slash, raw.decode("ascii", "replace"), query.decode("ascii", "replace"), dotted)
