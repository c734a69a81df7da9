"""``sockhop get URL...``: what people reach for curl or wget to do -- print a body or save it, show headers,
follow redirects, resume a download -- over :mod:`sockhop.web.client`.

URLs on the same scheme, host and port share one connection while the server keeps it open. https:// URLs are
verified against the system's trust store (or ``--cacert``; ``-k`` skips the check, with a warning), and redirects
may go between http and https.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from collections.abc import Callable
from http import HTTPStatus
from typing import BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

from sockhop.options import positive_float, positive_int
from sockhop.web.client import (
    USER_AGENT,
    BadStatus,
    ClientError,
    Connection,
    GzipDecoder,
    Response,
    Target,
)

REDIRECTS = frozenset({301, 302, 303, 307, 308})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``sockhop get``'s options, named as curl names them."""
    parser.add_argument("urls", nargs="+", metavar="URL")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", metavar="FILE", help="write the body to FILE")
    out.add_argument("-O", "--remote-name", action="store_true", help="save under the URL's own file name")
    parser.add_argument("-I", "--head", action="store_true", help="send HEAD; show the status line and headers")
    parser.add_argument("-i", "--include", action="store_true", help="show the status line and headers too")
    parser.add_argument("-L", "--location", action="store_true", help="follow redirects")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'", help="repeatable")
    parser.add_argument("-C", "--continue", dest="resume", action="store_true", help="resume a partial download")
    parser.add_argument("-f", "--fail", action="store_true", help="exit non-zero on a 4xx or 5xx status")
    parser.add_argument("--timeout", type=positive_float, default=30.0, metavar="S", help="connect and read timeout")
    parser.add_argument("--cacert", metavar="FILE", help="trust the CA certificates in FILE (PEM) for https://")
    parser.add_argument("-k", "--insecure", action="store_true", help="https:// without verifying the certificate")
    parser.add_argument("--max-redirects", type=positive_int, default=10, metavar="N", help="with -L (default 10)")


def remote_name(url: str) -> str:
    """The file name -O saves under: the last segment of the URL's path (``index.html`` for a folder)."""
    name = os.path.basename(unquote(urlsplit(url if "://" in url else "http://" + url).path))
    if name in ("", ".", ".."):
        name = "index.html"
    return name


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name, self.enabled = name, enabled
        self.total: int | None = None
        self.done = 0
        self.shown = -1

    def start(self, total: int | None, already: int = 0) -> None:
        self.total = total + already if total is not None else None
        self.done = already

    def advance(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        if self.total:
            percent = min(100, self.done * 100 // self.total)
            if percent != self.shown:
                self.shown = percent
                bar = "#" * (percent // 4)
                sys.stderr.write(f"\r{self.name} [{bar:<25}] {percent:3d}% {self.done} bytes")
                sys.stderr.flush()
        elif self.done // 65536 != self.shown:
            self.shown = self.done // 65536
            sys.stderr.write(f"\r{self.name} {self.done} bytes")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self.shown >= 0:
            sys.stderr.write("\n")
            sys.stderr.flush()


class Getter:
    """Runs ``sockhop get``: one connection per host and port at a time, reused across URLs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.conn: Connection | None = None
        self.scheme = ""  # of self.conn
        self.context: ssl.SSLContext | None = None  # made at the first https:// URL
        self.extra = [self._split_header(h) for h in args.header]
        self.stdout: BinaryIO = sys.stdout.buffer
        self.output: BinaryIO | None = None  # -o FILE, shared by every URL

    @staticmethod
    def _split_header(text: str) -> tuple[str, str]:
        name, sep, value = text.partition(":")
        if not sep or not name.strip() or any(c in text for c in "\r\n"):
            raise ClientError(f"bad header {text!r}: want 'Name: value'")
        return name.strip(), value.strip()

    def connection(self, target: Target) -> Connection:
        conn = self.conn
        if conn is None or (self.scheme, conn.host, conn.port) != (target.scheme, target.host, target.port):
            if conn is not None:
                conn.close()
            conn = self.conn = Connection(target.host, target.port, self.args.timeout, self.tls_for(target))
            self.scheme = target.scheme
        return conn

    def tls_for(self, target: Target) -> ssl.SSLContext | None:
        if not target.tls:
            return None
        if self.context is None:
            from sockhop.tlsclient import client_context

            args = self.args
            try:
                self.context = client_context(getattr(args, "cacert", None), insecure=getattr(args, "insecure", False))
            except (OSError, ssl.SSLError) as exc:
                raise ClientError(f"cannot use --cacert {args.cacert}: {getattr(exc, 'reason', None) or exc}") from None
            self.context.set_alpn_protocols(["http/1.1"])
        return self.context

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.output is not None:
            self.output.close()

    def headers_for(self, resume_from: int) -> list[tuple[str, str]]:
        headers = {"user-agent": ("User-Agent", USER_AGENT), "accept": ("Accept", "*/*")}
        if resume_from:
            headers["range"] = ("Range", f"bytes={resume_from}-")
        else:
            headers["accept-encoding"] = ("Accept-Encoding", "gzip")
        for name, value in self.extra:
            headers[name.lower()] = (name, value)
        return [pair for pair in headers.values() if pair[1]]

    # -- one URL -------------------------------------------------------------------------------------------------
    def get(self, url: str) -> None:
        args = self.args
        method = "HEAD" if args.head else "GET"
        path = args.output or (remote_name(url) if args.remote_name else None)
        resume_from = 0
        if args.resume:
            if path is None:
                raise ClientError("-C needs -o FILE or -O")
            resume_from = os.path.getsize(path) if os.path.isfile(path) else 0
        redirects = 0
        while True:
            target = Target.from_url(url)
            conn = self.connection(target)
            sink = _Sink(self, path, resume_from, method)
            response = conn.request(method, target, self.headers_for(resume_from), sink.body, sink.head)
            location = response.header("location")
            if args.location and response.status in REDIRECTS and location:
                redirects += 1
                if redirects > args.max_redirects:
                    raise ClientError(f"too many redirects (more than {args.max_redirects}) from {url}")
                url = urljoin(url if "://" in url else "http://" + url, location)
                if response.status == 303:
                    method = "HEAD" if args.head else "GET"
                continue
            sink.finish(response)
            break
        if args.fail and response.status >= 400:
            raise BadStatus(f"{url}: {response.status} {response.reason}")


class _Sink:
    """Where one response goes: its head to stdout with -i/-I, its body to stdout or a file (opened only when the
    status says there is something to write, so a 404 does not clobber a file)."""

    def __init__(self, getter: Getter, path: str | None, resume_from: int, method: str) -> None:
        self.getter = getter
        self.path = path
        self.resume_from = resume_from
        self.method = method
        self.response: Response | None = None
        self.writer: Callable[[bytes], None] | None = None
        self.decoder: GzipDecoder | None = None
        self.file: BinaryIO | None = None
        self.progress = Progress(os.path.basename(path) if path else "", bool(path) and sys.stderr.isatty())

    def body(self, data: bytes) -> None:
        if self.writer is None:
            return  # a redirect's or an error's body, or a HEAD
        self.progress.advance(len(data))
        if self.decoder is not None:
            self.decoder(data)
        else:
            self.writer(data)

    def head(self, response: Response) -> None:
        """The head is here: decide where the body goes, before any of it arrives."""
        _prepare(self, response)

    def finish(self, response: Response) -> None:
        if self.decoder is not None:
            self.decoder.finish()
        if self.file is not None and self.file is not self.getter.output:
            self.file.close()
        self.progress.finish()


def _prepare(sink: _Sink, response: Response) -> None:
    """Decide where the body of ``response`` goes, before any of it arrives."""
    getter = sink.getter
    args = getter.args
    redirecting = args.location and response.status in REDIRECTS and response.header("location")
    if redirecting:
        return
    if args.include or args.head:
        getter.stdout.write(response.head_text().encode("latin-1"))
        getter.stdout.flush()
    if sink.method == "HEAD":
        return
    if args.fail and response.status >= 400:
        return
    if sink.resume_from and response.status == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE:
        return  # the file is already complete
    if sink.path is None:
        writer: Callable[[bytes], None] = getter.stdout.write
    elif args.output and not args.resume:
        if getter.output is None:
            getter.output = open(sink.path, "wb")  # noqa: SIM115 - shared by every URL, closed by the Getter
        sink.file = getter.output
        writer = sink.file.write
    else:
        append = bool(sink.resume_from) and response.status == HTTPStatus.PARTIAL_CONTENT
        sink.file = open(sink.path, "ab" if append else "wb")  # noqa: SIM115 - closed in finish()
        writer = sink.file.write
        if append:
            sink.progress.start(_length(response), sink.resume_from)
    if not sink.progress.total:
        sink.progress.start(_length(response))
    sink.writer = writer
    if (response.header("content-encoding") or "").lower() in ("gzip", "x-gzip"):
        sink.decoder = GzipDecoder(writer)


def _length(response: Response) -> int | None:
    value = response.header("content-length")
    return int(value) if value and value.isdigit() else None


def run_get(args: argparse.Namespace) -> int:
    getter = Getter(args)
    try:
        for url in args.urls:
            getter.get(url)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit while flushing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        getter.close()
    return 0
