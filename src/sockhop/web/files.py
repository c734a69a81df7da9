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
from typing import TYPE_CHECKING

from sockhop.engine.protocol import FileRegion
from sockhop.web.compress import Compressor

if TYPE_CHECKING:
    from sockhop.web.auth import BasicAuth
    from sockhop.web.upstream import Routes
from sockhop.web.conditional import not_modified, range_applies
from sockhop.web.listing import render_listing
from sockhop.web.mime import content_type
from sockhop.web.paths import SitePath
from sockhop.web.ranges import boundary_for, content_range, multipart_heads, parse_ranges
from sockhop.web.response import Response, error_response, http_date, redirect_response, response_head

#: Files up to this size are read into memory and sent with their headers in one go; larger ones use sendfile.
SMALL_FILE = 16 * 1024

#: Files described in the cache (one per path and accepted coding); bounds its memory to about this many small files.
CACHE_ENTRIES = 1024

#: Precompressed siblings, best first: (Content-Encoding, file suffix).
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))

#: What an error page keeps of its file's headers: not its validators (the error is not that file).
_PAGE_HEADERS = frozenset(("Content-Type", "Content-Length", "Content-Encoding", "Cache-Control"))

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a FIFO in the tree must not hang us


@dataclass(frozen=True)
class SiteOptions:
    """How the site is served. ``root`` must be an existing directory."""

    root: Path
    listing: bool = True
    dotfiles: bool = False
    follow_symlinks: bool = False
    index: str = "index.html"
    compressor: Compressor | None = None  # compression on the fly (--compress); None: off
    #: ``Cache-Control`` by URL path prefix, (prefix, value) pairs; the longest matching prefix wins.
    cache_control: tuple[tuple[str, str], ...] = ()
    #: nginx's error_page: (status, page path in the site) -- the page is sent with the error's status.
    error_pages: tuple[tuple[int, str], ...] = ()
    auth: BasicAuth | None = None  # Basic authentication from an htpasswd file; None: open to all
    proxy: Routes | None = None  # URL prefixes an upstream answers (web/proxy.py); None: none


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
        self.cache: dict[tuple, CachedFile] = {}
        self.policies = sorted(options.cache_control, key=lambda pair: len(pair[0]), reverse=True)
        self.error_pages = dict(options.error_pages)

    def _policy(self, path: str) -> tuple[tuple[str, str], ...]:
        """The Cache-Control header for the file at ``path`` (a path under the root), if a prefix names it."""
        if not self.policies:
            return ()
        url = path[len(self.root) :] or "/"
        for prefix, value in self.policies:
            if url.startswith(prefix):
                return (("Cache-Control", value),)
        return ()

    def error_page(self, response: Response, method: str, now: float) -> Response:
        """The site's page for an error status (``--error-page 404=/404.html``), sent with that status; the plain
        error when there is none, or it cannot be served."""
        page = self.error_pages.get(int(response.status))
        if page is None or method not in ("GET", "HEAD"):
            return response
        from sockhop.web.paths import parse_target

        answer = self.respond(method, parse_target(page.encode()), {}, now)
        if answer.status != HTTPStatus.OK:
            answer.release()
            return response
        response.release()
        answer.status = response.status
        answer.headers = [(name, value) for name, value in answer.headers if name in _PAGE_HEADERS]
        answer.close = response.close
        return answer

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
    def cache_key(self, target: SitePath, headers: Mapping[str, str]) -> tuple[str, bool, tuple[str, ...]] | None:
        """Where the description of ``target`` is cached: its path, its trailing slash and the precompressed codings
        the client accepts. None for a hidden path, which is never served."""
        if not self.options.dotfiles and target.hidden():
            return None
        accept = headers.get("accept-encoding")
        segments = target.segments
        path = self.root_prefix + "/".join(segments) if segments else self.root  # os.path.join, without its cost
        return path, target.slash, accept_key(accept) if accept else ()

    def fresh(self, key: tuple, now: float) -> CachedFile | None:
        """The cached description under ``key`` if it still matches the file (one ``stat``); None otherwise."""
        entry = self.cache.get(key)
        if entry is None:
            return None
        if entry.current(now, strict=bool(key[2])):
            return entry
        self.cache.pop(key, None)
        return None

    def respond(
        self, method: str, target: SitePath, headers: Mapping[str, str], now: float = 0.0, key: tuple | None = ()
    ) -> Response:
        """The answer to a GET or HEAD of ``target``; ``now`` (the server's clock) paces the cheap revalidation.
        ``key``: ``cache_key(target, headers)`` if the caller has it already."""
        head = method == "HEAD"
        if key == ():
            key = self.cache_key(target, headers)
        if key is None:
            return error_response(HTTPStatus.NOT_FOUND, head=head)
        path = key[0]
        entry = self.fresh(key, now)
        if entry is not None and entry.compressed and "range" in headers:
            entry = None  # a range is of the file itself: the slow way, uncompressed (and not cached)
        if entry is not None:
            response = self._send(method, entry, headers, None)
            if response is not None:
                return response
            self.cache.pop(key, None)
        try:
            opened = self._open(path)
        except PermissionError:
            return error_response(HTTPStatus.FORBIDDEN, head=head)
        if opened is None:
            return error_response(HTTPStatus.NOT_FOUND, head=head)
        fd, info = opened
        if stat.S_ISDIR(info.st_mode):
            os.close(fd)
            return self._directory(method, target, path, headers, key)
        if target.slash:  # "/file.txt/" names a directory that is not there
            os.close(fd)
            return error_response(HTTPStatus.NOT_FOUND, head=head)
        return self._file(method, fd, info, path, headers, key)

    def _directory(self, method: str, target: SitePath, path: str, headers: Mapping[str, str], key: tuple) -> Response:
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
                return self._file(method, fd, info, index, headers, key)
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

    def _file(
        self, method: str, fd: int, info: os.stat_result, path: str, headers: Mapping[str, str], key: tuple
    ) -> Response:
        """A file just opened and checked: describe it (and remember the description), then answer."""
        kind = content_type(os.path.basename(path))
        extra: tuple[tuple[str, str], ...] = ()
        policy = self._policy(path)
        sent = path
        sibling = self._sibling(path, headers)
        if sibling is not None:
            coding, sibling_fd, sibling_info = sibling
            os.close(fd)
            fd, info, sent = sibling_fd, sibling_info, path + dict(ENCODINGS)[coding]
            extra = (("Content-Encoding", coding), ("Vary", "Accept-Encoding"))
        else:
            compressor = self.options.compressor
            if compressor is not None and compressor.applies(kind, info.st_size):
                extra = (("Vary", "Accept-Encoding"),)
                coding = compressor.coding(accepted_encodings(headers.get("accept-encoding")))
                if coding is not None and "range" in headers:
                    key = ()  # served whole-file ranges, uncompressed: not what the key's next request wants
                elif coding is not None:
                    return self._compressed(method, fd, info, path, kind, coding, headers, key, policy)
            elif self._has_sibling(path):
                extra = (("Vary", "Accept-Encoding"),)
        extra += policy
        data = None
        if info.st_size <= SMALL_FILE:
            try:
                data = os.pread(fd, info.st_size, 0)
            finally:
                os.close(fd)
            fd = None
            if len(data) != info.st_size:  # changed while we read: describe what we have, cache nothing
                info = os.stat_result((*info[:6], len(data), *info[7:]))
                key = ()
        entry = CachedFile.describe(sent, info, kind, extra, data)
        if key:
            if len(self.cache) >= CACHE_ENTRIES:
                self.cache.clear()
            self.cache[key] = entry
        response = self._send(method, entry, headers, fd)
        assert response is not None
        return response

    def _compressed(
        self,
        method: str,
        fd: int,
        info: os.stat_result,
        path: str,
        kind: str,
        coding: str,
        headers: Mapping[str, str],
        key: tuple,
        policy: tuple[tuple[str, str], ...] = (),
    ) -> Response:
        """A text file compressed on the fly (once per file version: the compressor keeps it), described and cached
        as a small file is, so the hot path answers it from bytes. Its ETag names the coding (RFC 9110 8.8.3)."""
        compressor = self.options.compressor
        assert compressor is not None
        try:
            data = os.pread(fd, info.st_size, 0)
        finally:
            os.close(fd)
        identity = (info.st_mtime_ns, info.st_ino, info.st_size, info.st_ctime_ns)
        if len(data) != info.st_size:  # changed while we read: send what we have, as it is, cache nothing
            info = os.stat_result((*info[:6], len(data), *info[7:]))
            entry = CachedFile.describe(path, info, kind, (("Vary", "Accept-Encoding"),), data)
            response = self._send(method, entry, headers, None)
            assert response is not None
            return response
        body = compressor.compressed(path, identity, coding, data)
        extra = (("Content-Encoding", coding), ("Vary", "Accept-Encoding"), *policy)
        entry = CachedFile.describe(path, info, kind, extra, body)
        entry.size = len(body)
        entry.etag = f'{entry.etag[:-1]}-{coding}"'
        entry.compressed = True
        if key:
            if len(self.cache) >= CACHE_ENTRIES:
                self.cache.clear()
            self.cache[key] = entry
        response = self._send(method, entry, headers, None)
        assert response is not None
        return response

    def _send(self, method: str, entry: CachedFile, headers: Mapping[str, str], fd: int | None) -> Response | None:
        """The response for a described file. Its body comes from ``entry.data`` (small files), ``fd`` if given,
        or a fresh open of ``entry.path``; None if that open finds a different file (the caller starts over)."""
        head = method == "HEAD"
        size = entry.size
        common = [("Last-Modified", entry.last_modified), ("ETag", entry.etag), *entry.extra]
        ranges = None
        if not_modified(headers, entry.etag, entry.mtime):
            status = HTTPStatus.NOT_MODIFIED
        else:
            common.append(("Accept-Ranges", "bytes"))
            range_header = headers.get("range")
            if range_header is not None and range_applies(headers, entry.etag, entry.last_modified):
                ranges = parse_ranges(range_header, size)
            if ranges is not None and not ranges:
                if fd is not None:
                    os.close(fd)
                response = error_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, head=head)
                response.headers.append(("Content-Range", f"bytes */{size}"))
                return response
            status = HTTPStatus.PARTIAL_CONTENT if ranges else HTTPStatus.OK
        if status == HTTPStatus.NOT_MODIFIED or head:
            if fd is not None:
                os.close(fd)
            fd = None
        elif entry.data is None and fd is None:
            fd = entry.reopen()
            if fd is None:
                return None
        if status == HTTPStatus.NOT_MODIFIED:
            return Response(status, common)
        if ranges and len(ranges) > 1:
            return self._multipart(entry, ranges, common, fd)
        first, last = ranges[0] if ranges else (0, size - 1)
        count = last - first + 1
        response_headers = [("Content-Type", entry.kind), ("Content-Length", str(count))]
        if ranges:
            response_headers.append(("Content-Range", content_range(first, last, size)))
        response_headers += common
        if head or count == 0:
            if fd is not None:
                os.close(fd)
            return Response(status, response_headers)
        if entry.data is not None:
            body = entry.data if count == size else entry.data[first : last + 1]
            return Response(status, response_headers, (body,), count)
        assert fd is not None
        return Response(status, response_headers, (FileRegion(fd, first, count),), count)

    @staticmethod
    def _multipart(
        entry: CachedFile, ranges: list[tuple[int, int]], common: list[tuple[str, str]], fd: int | None
    ) -> Response:
        boundary = boundary_for(entry.etag)
        heads, tail = multipart_heads(ranges, entry.size, entry.kind, boundary)
        length = sum(len(h) for h in heads) + len(tail) + sum(last - first + 1 for first, last in ranges)
        response_headers = [
            ("Content-Type", f"multipart/byteranges; boundary={boundary}"),
            ("Content-Length", str(length)),
            *common,
        ]
        if fd is None and entry.data is None:  # HEAD
            return Response(HTTPStatus.PARTIAL_CONTENT, response_headers)
        body: list[bytes | FileRegion] = []
        for i, ((first, last), part_head) in enumerate(zip(ranges, heads, strict=True)):
            body.append(part_head)
            if entry.data is not None:
                body.append(entry.data[first : last + 1])
            else:
                assert fd is not None
                # One descriptor serves every part; only the last region closes it.
                body.append(FileRegion(fd, first, last - first + 1, close=i == len(ranges) - 1))
        body.append(tail)
        return Response(HTTPStatus.PARTIAL_CONTENT, response_headers, tuple(body), length)


def accept_key(value: str) -> tuple[str, ...]:
    """The part of Accept-Encoding that changes what this site sends: which precompressed codings are accepted."""
    accepted = accepted_encodings(value)
    return tuple(coding for coding, _ in ENCODINGS if coding in accepted)


@dataclass(slots=True)
class CachedFile:
    """What a file looked like when it was last opened and checked -- headers, and the bytes of a small one.

    ``current()`` compares it with the file as it is now (one ``stat`` per request): any change to the file (inode,
    size, mtime, ctime) and the entry is dropped, so a changed file is never served stale. The folder is checked too
    (a precompressed sibling added or removed): on every request from a client that accepts one, at most once a
    second otherwise -- for those clients a new sibling changes only the Vary header. A large file is reopened for
    every request and checked to be the same inode (``reopen``), the one a full open-and-check found inside the root.

    For a small file the complete answer to a plain GET -- status line, headers, body -- is kept as one bytes object
    per second of the Date header (``wire``), so the common request costs one ``stat`` and no formatting.
    """

    path: str
    folder: str
    identity: tuple[int, int, int, int]  # mtime_ns, inode, size, ctime_ns: the likeliest to differ first
    folder_mtime: int
    kind: str
    extra: tuple[tuple[str, str], ...]
    size: int
    mtime: int
    etag: str
    last_modified: str
    data: bytes | None
    checked: int = 0  # the second the folder was last found unchanged
    wires: tuple[int, bytes, bytes] = (-1, b"", b"")  # (second, keep-alive answer, closing answer), one attribute
    compressed: bool = False  # compressed on the fly: ``data`` is the compressed bytes, ``size`` their length

    @classmethod
    def describe(
        cls, path: str, info: os.stat_result, kind: str, extra: tuple[tuple[str, str], ...], data: bytes | None
    ) -> CachedFile:
        folder = os.path.dirname(path)
        try:
            folder_mtime = os.stat(folder).st_mtime_ns
        except OSError:
            folder_mtime = -1
        return cls(
            path,
            folder,
            (info.st_mtime_ns, info.st_ino, info.st_size, info.st_ctime_ns),
            folder_mtime,
            kind,
            extra,
            info.st_size,
            int(info.st_mtime),
            f'"{info.st_mtime_ns:x}-{info.st_size:x}"',
            http_date(int(info.st_mtime)),
            data,
        )

    def current(self, now: float = 0.0, *, strict: bool = True) -> bool:
        """True if the file (and, when due, its folder) is as described. ``strict``: check the folder now."""
        try:
            info = os.stat(self.path)
        except OSError:
            return False
        if (info.st_mtime_ns, info.st_ino, info.st_size, info.st_ctime_ns) != self.identity:
            return False
        second = int(now)
        if strict or second != self.checked:
            try:
                if os.stat(self.folder).st_mtime_ns != self.folder_mtime:
                    return False
            except OSError:
                return False
            self.checked = second
        return True

    def wire(self, now: float, close: bool) -> bytes:
        """The whole HTTP/1.1 answer to a plain GET of this (small) file, Date as of ``now``: what the general path
        would build from a Response, formatted once a second."""
        second = int(now)
        wires = self.wires
        if wires[0] != second:
            assert self.data is not None
            headers = [
                ("Content-Type", self.kind),
                ("Content-Length", str(self.size)),
                ("Last-Modified", self.last_modified),
                ("ETag", self.etag),
                *self.extra,
                ("Accept-Ranges", "bytes"),
            ]
            date = http_date(second)
            keep, closing = response_head(200, date, headers), response_head(200, date, headers, "close")
            wires = self.wires = (second, keep + self.data, closing + self.data)
        return wires[2] if close else wires[1]

    def reopen(self) -> int | None:
        try:
            fd = os.open(self.path, _OPEN_FLAGS)
        except OSError:
            return None
        info = os.fstat(fd)
        if (info.st_mtime_ns, info.st_ino, info.st_size, info.st_ctime_ns) != self.identity:
            os.close(fd)
            return None
        return fd
