"""The static site: from a request to a :class:`Response` -- a file, a directory's index or listing, a redirect,
a precompressed sibling, a range, a 304.

Files are opened first and checked after, on the open descriptor (``/proc/self/fd``), so a symlink swapped in
between a check and an open gains nothing. Small files are read into the response (headers and body then leave
in one send); larger ones go out as a :class:`FileRegion` with sendfile. Either way every request reads the file
as it is now, so a changed file is never served stale.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from sockhop.engine.protocol import FileRegion
from sockhop.web.conditional import not_modified, range_applies
from sockhop.web.listing import render_listing
from sockhop.web.mime import content_type
from sockhop.web.paths import SitePath
from sockhop.web.ranges import boundary_for, content_range, multipart_heads, parse_ranges
from sockhop.web.response import Response, error_response, http_date, redirect_response

#: Files up to this size are read into memory and sent with their headers in one go; larger ones use sendfile.
SMALL_FILE = 16 * 1024

#: Precompressed siblings, best first: (Content-Encoding, file suffix).
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO in the tree must not hang us


@dataclass(frozen=True)
class SiteOptions:
    """How the site is served. ``root`` must be an existing directory."""

    root: Path
    listing: bool = True
    dotfiles: bool = False
    follow_symlinks: bool = False
    index: str = "index.html"


def accepted_encodings(value: str | None) -> set[str]:
    """The codings an Accept-Encoding header allows (q=0 excluded)."""
    if not value:
        return set()
    allowed = set()
    for item in value.split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, val = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
        if q > 0 and name:
            allowed.add(name)
    if "*" in allowed:
        allowed.update(("gzip", "br"))
    return allowed


class Site:
    """Answers GET and HEAD for the files under one root."""

    def __init__(self, options: SiteOptions) -> None:
        self.options = options
        self.root = os.path.realpath(options.root)
        self.root_prefix = self.root.rstrip("/") + "/"

    # -- opening, safely -----------------------------------------------------------------------------------------
    def _inside(self, fd: int, fallback: str) -> bool:
        """True if the opened file really lies under the root (symlinks resolved by the kernel)."""
        if self.options.follow_symlinks:
            return True
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            real = os.path.realpath(fallback)
        return real == self.root or real.startswith(self.root_prefix)

    def _open(self, path: str) -> tuple[int, os.stat_result] | None:
        """Open ``path`` if it exists and lies inside the root; None otherwise. Raises PermissionError for a file
        that is there but refused (outside the root, or neither a file nor a directory)."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
                return None
            if exc.errno in (errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENXIO):
                raise PermissionError(path) from None
            raise
        try:
            info = os.fstat(fd)
            if not self._inside(fd, path) or not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise PermissionError(path)
        except BaseException:
            os.close(fd)
            raise
        return fd, info

    # -- answering -----------------------------------------------------------------------------------------------
    def respond(self, method: str, target: SitePath, headers: Mapping[str, str]) -> Response:
        """The answer to a GET or HEAD of ``target``."""
        head = method == "HEAD"
        if target.hidden() and not self.options.dotfiles:
            return error_response(HTTPStatus.NOT_FOUND, head=head)
        path = os.path.join(self.root, *target.segments)
        try:
            opened = self._open(path)
        except PermissionError:
            return error_response(HTTPStatus.FORBIDDEN, head=head)
        if opened is None:
            return error_response(HTTPStatus.NOT_FOUND, head=head)
        fd, info = opened
        if stat.S_ISDIR(info.st_mode):
            os.close(fd)
            return self._directory(method, target, path, headers)
        if target.slash:  # "/file.txt/" names a directory that is not there
            os.close(fd)
            return error_response(HTTPStatus.NOT_FOUND, head=head)
        return self._file(method, fd, info, path, headers)

    def _directory(self, method: str, target: SitePath, path: str, headers: Mapping[str, str]) -> Response:
        head = method == "HEAD"
        if not target.slash:
            location = target.raw + "/" + (f"?{target.query}" if target.query else "")
            return redirect_response(location, head=head)
        index = os.path.join(path, self.options.index)
        try:
            opened = self._open(index)
        except PermissionError:
            opened = None
        if opened is not None:
            fd, info = opened
            if stat.S_ISREG(info.st_mode):
                return self._file(method, fd, info, index, headers)
            os.close(fd)
        if not self.options.listing:
            return error_response(HTTPStatus.FORBIDDEN, "Directory listing is off.", head=head)
        page = render_listing(path, target.text, dotfiles=self.options.dotfiles)
        response_headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(page)))]
        return Response(HTTPStatus.OK, response_headers, () if head else (page,), 0 if head else len(page))

    def _sibling(self, path: str, headers: Mapping[str, str]) -> tuple[str, int, os.stat_result] | None:
        """A precompressed sibling (``file.br``, ``file.gz``) the client accepts, opened; or None."""
        accepted = accepted_encodings(headers.get("accept-encoding"))
        if not accepted:
            return None
        for coding, suffix in ENCODINGS:
            if coding in accepted:
                try:
                    opened = self._open(path + suffix)
                except PermissionError:
                    continue
                if opened is not None:
                    fd, info = opened
                    if stat.S_ISREG(info.st_mode):
                        return coding, fd, info
                    os.close(fd)
        return None

    def _has_sibling(self, path: str) -> bool:
        return any(os.path.isfile(path + suffix) for _, suffix in ENCODINGS)

    def _file(self, method: str, fd: int, info: os.stat_result, path: str, headers: Mapping[str, str]) -> Response:
        kind = content_type(os.path.basename(path))
        extra: list[tuple[str, str]] = []
        sibling = self._sibling(path, headers)
        if sibling is not None:
            coding, sibling_fd, sibling_info = sibling
            os.close(fd)
            fd, info = sibling_fd, sibling_info
            extra = [("Content-Encoding", coding), ("Vary", "Accept-Encoding")]
        elif self._has_sibling(path):
            extra = [("Vary", "Accept-Encoding")]
        return self._send_file(method, fd, info, kind, extra, headers)

    def _send_file(
        self,
        method: str,
        fd: int,
        info: os.stat_result,
        kind: str,
        extra: list[tuple[str, str]],
        headers: Mapping[str, str],
    ) -> Response:
        head = method == "HEAD"
        size = info.st_size
        mtime = int(info.st_mtime)
        etag = f'"{info.st_mtime_ns:x}-{size:x}"'
        last_modified = http_date(mtime)
        common = [("Last-Modified", last_modified), ("ETag", etag), *extra]
        if not_modified(headers, etag, mtime):
            os.close(fd)
            return Response(HTTPStatus.NOT_MODIFIED, common)
        common.append(("Accept-Ranges", "bytes"))
        ranges = None
        range_header = headers.get("range")
        if range_header is not None and range_applies(headers, etag, last_modified):
            ranges = parse_ranges(range_header, size)
        if ranges is not None and not ranges:
            os.close(fd)
            response = error_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, head=head)
            response.headers.append(("Content-Range", f"bytes */{size}"))
            return response
        if ranges and len(ranges) == 1:
            first, last = ranges[0]
            count = last - first + 1
            response_headers = [
                ("Content-Type", kind),
                ("Content-Length", str(count)),
                ("Content-Range", content_range(first, last, size)),
                *common,
            ]
            return Response(HTTPStatus.PARTIAL_CONTENT, response_headers, *self._body(fd, first, count, head))
        if ranges:
            boundary = boundary_for(etag)
            heads, tail = multipart_heads(ranges, size, kind, boundary)
            length = sum(len(h) for h in heads) + len(tail) + sum(last - first + 1 for first, last in ranges)
            response_headers = [
                ("Content-Type", f"multipart/byteranges; boundary={boundary}"),
                ("Content-Length", str(length)),
                *common,
            ]
            if head:
                os.close(fd)
                return Response(HTTPStatus.PARTIAL_CONTENT, response_headers)
            body: list[bytes | FileRegion] = []
            for i, ((first, last), part_head) in enumerate(zip(ranges, heads, strict=True)):
                body.append(part_head)
                # One descriptor serves every part; only the last region closes it.
                body.append(FileRegion(fd, first, last - first + 1, close=i == len(ranges) - 1))
            body.append(tail)
            return Response(HTTPStatus.PARTIAL_CONTENT, response_headers, tuple(body), length)
        response_headers = [("Content-Type", kind), ("Content-Length", str(size)), *common]
        return Response(HTTPStatus.OK, response_headers, *self._body(fd, 0, size, head))

    @staticmethod
    def _body(fd: int, offset: int, count: int, head: bool) -> tuple[tuple[bytes | FileRegion, ...], int]:
        """The body pieces and their length; closes ``fd`` unless a FileRegion now owns it."""
        if head or count == 0:
            os.close(fd)
            return (), 0
        if count <= SMALL_FILE:
            try:
                data = os.pread(fd, count, offset)
            finally:
                os.close(fd)
            return (data,), len(data)
        return (FileRegion(fd, offset, count),), count
