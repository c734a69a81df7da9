"""``sockhop get URL...``: what people reach for curl or wget to do -- print a body or save it, show headers,
follow redirects, resume a download, post a form -- over :mod:`sockhop.web.client`, with curl's option names and
exit statuses so that the commands and scripts people already have keep working.

URLs on the same scheme, host and port share one connection while the server keeps it open. https:// URLs are
verified against the system's trust store (or ``--cacert``; ``-k`` skips the check, with a warning), and redirects
may go between http and https.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import BinaryIO, NoReturn
from urllib.parse import unquote, urljoin, urlsplit

from sockhop.errors import SockhopError, UnknownHostError, UsageError
from sockhop.options import positive_float, positive_int
from sockhop.web.client import (
    USER_AGENT,
    BadStatus,
    ClientError,
    Connection,
    Dialing,
    GzipDecoder,
    Refused,
    Response,
    Target,
    TimedOut,
    TooManyRedirects,
    ip_literal,
)

REDIRECTS = frozenset({301, 302, 303, 307, 308})

#: The statuses curl's --retry counts as transient: worth asking again after a pause.
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})

#: curl's --retry pauses: 1 s, doubled after each retry up to 10 minutes (unless --retry-delay fixes it).
RETRY_FIRST, RETRY_MAX = 1.0, 600.0


class ReadError(ClientError):
    """Cannot read the data to send."""

    exit_code = 26


class WriteError(ClientError):
    """Cannot write the body where it should go."""

    exit_code = 23


class CACertError(ClientError):
    """Cannot use the CA certificates given."""

    exit_code = 77


def exit_code(exc: SockhopError) -> int:
    """curl's exit status for a failure (``man curl``, EXIT CODES): 2 for bad use, 6 for an unknown host..."""
    if isinstance(exc, UsageError):
        return 2
    if isinstance(exc, UnknownHostError):
        return 6
    return getattr(exc, "exit_code", 1)


def _data(kind: str) -> Callable[[str], tuple[str, str]]:
    return lambda value: (kind, value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``sockhop get``'s options, named as curl names them, with curl's meanings."""
    parser.add_argument("urls", nargs="+", metavar="URL")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", metavar="FILE", help="write the body to FILE")
    out.add_argument("-O", "--remote-name", action="store_true", help="save under the URL's own file name")
    parser.add_argument("-I", "--head", action="store_true", help="send HEAD; show the status line and headers")
    parser.add_argument("-i", "--include", action="store_true", help="show the status line and headers too")
    parser.add_argument("-L", "--location", action="store_true", help="follow redirects")
    parser.add_argument("-H", "--header", action="append", default=[], metavar="'Name: value'", help="repeatable")
    parser.add_argument("-C", "--continue", dest="resume", action="store_true", help="resume a partial download")
    parser.add_argument("-f", "--fail", action="store_true", help="exit 22 on a 4xx or 5xx status, printing no body")
    parser.add_argument("-v", "--verbose", dest="trace", action="store_true", help="the exchange on stderr (> < *)")
    parser.add_argument("-s", "--silent", action="store_true", help="no progress, warnings or errors")
    parser.add_argument("-S", "--show-error", action="store_true", help="with -s: still say what failed")
    parser.add_argument("-X", "--request", metavar="METHOD", help="send this method instead of GET (or POST with -d)")
    data = "POST this (as a form; @FILE reads a file, @- standard input); repeated: joined with &"
    parser.add_argument("-d", "--data", dest="data", action="append", type=_data("ascii"), metavar="DATA", help=data)
    parser.add_argument(
        "--data-binary", dest="data", action="append", type=_data("binary"), metavar="DATA", help="-d, byte for byte"
    )
    parser.add_argument("--data-raw", dest="data", action="append", type=_data("raw"), metavar="DATA", help="-d, no @")
    parser.add_argument("-A", "--user-agent", metavar="NAME", help=f"User-Agent (default {USER_AGENT})")
    parser.add_argument("-u", "--user", metavar="USER:PASSWORD", help="HTTP Basic authentication (to this host only)")
    parser.add_argument("--location-trusted", action="store_true", help="with -L: send -u to other hosts too")
    parser.add_argument(
        "-r", "--range", metavar="RANGE", help="only these bytes: 0-499, 500-, 0-0,-1; the last 500: --range=-500"
    )
    parser.add_argument("-w", "--write-out", metavar="FORMAT", help="after each URL: %%{http_code}, ... (@FILE)")
    parser.add_argument("--max-time", type=positive_float, metavar="S", help="give up a URL after S seconds")
    parser.add_argument("--connect-timeout", type=positive_float, metavar="S", help="connecting (and TLS); default 30")
    parser.add_argument(
        "--timeout", type=positive_float, metavar="S", help="--connect-timeout and the wait for each read (default 30)"
    )
    parser.add_argument("--retry", type=_count, default=0, metavar="N", help="retry timeouts, 408, 429 and 5xx")
    parser.add_argument("--retry-delay", type=positive_float, metavar="S", help="wait S between retries")
    parser.add_argument("--retry-max-time", type=positive_float, metavar="S", help="no retry after S seconds")
    parser.add_argument("--retry-connrefused", action="store_true", help="with --retry: a refusal is transient too")
    family = parser.add_mutually_exclusive_group()
    family.add_argument("-4", "--ipv4", dest="family", action="store_const", const=socket.AF_INET, default=0)
    family.add_argument("-6", "--ipv6", dest="family", action="store_const", const=socket.AF_INET6)
    parser.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="HOST:PORT:ADDR",
        help="connect to ADDR for HOST:PORT, asking no resolver (Host, SNI and certificate stay HOST's); repeatable",
    )
    parser.add_argument("--cacert", metavar="FILE", help="trust the CA certificates in FILE (PEM) for https://")
    parser.add_argument("-k", "--insecure", action="store_true", help="https:// without verifying the certificate")
    parser.add_argument("--max-redirects", type=positive_int, default=10, metavar="N", help="with -L (default 10)")
    version = parser.add_mutually_exclusive_group()
    version.add_argument(
        "--http2", dest="http", action="store_const", const="2", default="2", help="offer h2 by ALPN (the default)"
    )
    version.add_argument(
        "--http1.1", dest="http", action="store_const", const="1.1", help="HTTP/1.1 only: https:// offers no h2"
    )
    version.add_argument(
        "--http2-prior-knowledge",
        dest="http",
        action="store_const",
        const="2-prior",
        help="http:// speaks HTTP/2 from the first byte (h2c)",
    )

    def one_line(message: str) -> NoReturn:  # bad use is one line and status 2, as curl
        parser.exit(2, f"sockhop get: {message} (see sockhop get --help)\n")

    parser.error = one_line  # type: ignore[method-assign]


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


# -- what the options say -----------------------------------------------------------------------------------------
def parse_resolve(entries: list[str]) -> dict[tuple[str, int], tuple[str, ...]]:
    """curl's ``--resolve [+]HOST:PORT:ADDR[,ADDR]...`` (``-HOST:PORT`` drops an entry; ``*`` is any host).
    Addresses must be IP literals: the point is to ask no resolver."""
    pinned: dict[tuple[str, int], tuple[str, ...]] = {}
    for entry in entries:
        text = entry.removeprefix("+")
        remove = text.startswith("-")
        host, _, rest = text.removeprefix("-").partition(":")
        port_text, _, addresses = rest.partition(":")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536 or not host:
            raise UsageError(f"bad --resolve {entry!r}: want HOST:PORT:ADDR, such as example.com:443:127.0.0.1")
        key = (host.lower(), int(port_text))
        if remove:
            pinned.pop(key, None)
            continue
        found = tuple(a.strip().removeprefix("[").removesuffix("]") for a in addresses.split(",") if a.strip())
        if not found or not all(ip_literal(a) for a in found):
            raise UsageError(f"bad --resolve {entry!r}: ADDR must be IP addresses (such as 127.0.0.1 or [::1])")
        pinned[key] = found
    return pinned


def read_data(entries: list[tuple[str, str]]) -> bytes | None:
    """The body -d/--data-binary/--data-raw make, as curl makes it: ``@FILE`` read (-d drops its line breaks),
    pieces joined with ``&``."""
    if not entries:
        return None
    pieces = []
    for kind, value in entries:
        if kind != "raw" and value.startswith("@"):
            name = value[1:]
            try:
                if name == "-":
                    data = sys.stdin.buffer.read()
                else:
                    with open(name, "rb") as file:
                        data = file.read()
            except OSError as exc:
                raise ReadError(f"cannot read {name} for --data: {exc.strerror or exc}") from None
            if kind == "ascii":
                data = data.replace(b"\r", b"").replace(b"\n", b"")
        else:
            data = os.fsencode(value)
        pieces.append(data)
    return b"&".join(pieces)


def basic_auth(user: str) -> str:
    """The Authorization value for ``-u USER:PASSWORD`` (asked for on the terminal when only USER is given)."""
    name, colon, password = user.partition(":")
    if not colon:
        if not sys.stdin.isatty():
            raise UsageError(f"-u {name}: give USER:PASSWORD (there is no terminal to ask for the password)")
        import getpass

        password = getpass.getpass(f"Enter host password for user '{name}': ")
    token = base64.b64encode(f"{name}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


_RANGE = re.compile(r"(\d+-\d*|-\d+)(,(\d+-\d*|-\d+))*")


def byte_range(text: str) -> str:
    """-r's value as a Range header value."""
    spec = text.removeprefix("bytes=").replace(" ", "")
    if not _RANGE.fullmatch(spec):
        raise UsageError(f"bad -r {text!r}: want FIRST-LAST, FIRST-, -COUNT, or several joined with commas")
    return f"bytes={spec}"


def remote_name(url: str) -> str:
    """The file name -O saves under: the last segment of the URL's path (``index.html`` for a folder)."""
    name = os.path.basename(unquote(urlsplit(url if "://" in url else "http://" + url).path))
    if name in ("", ".", ".."):
        name = "index.html"
    return name


def absolute(url: str) -> str:
    return url if "://" in url else "http://" + url


# -- -w ------------------------------------------------------------------------------------------------------------
@dataclass
class Transfer:
    """One URL's fetch, redirects and retries included: what --write-out reports."""

    url: str
    start: float = field(default_factory=time.monotonic)
    url_effective: str = ""
    response: Response | None = None
    method: str = ""
    request_start: float = 0.0  # the final request's
    lookup: float = 0.0  # durations from start; 0 on a kept connection
    connect: float = 0.0
    appconnect: float = 0.0
    pretransfer: float = 0.0
    starttransfer: float = 0.0
    end: float = 0.0
    size_download: int = 0
    size_header: int = 0
    size_request: int = 0
    size_upload: int = 0
    redirects: int = 0
    redirect_url: str = ""
    connects: int = 0
    peer: tuple[str, int] = ("", 0)
    local: tuple[str, int] = ("", 0)
    filename: str = ""
    exitcode: int = 0
    errormsg: str = ""

    def values(self) -> dict[str, str | int | float]:
        total = (self.end or time.monotonic()) - self.start
        response = self.response
        status = response.status if response is not None else 0
        version = response.version if response is not None else "0"
        return {
            "content_type": (response.header("content-type") if response else None) or "",
            "errormsg": self.errormsg,
            "exitcode": self.exitcode,
            "filename_effective": self.filename,
            "http_code": f"{status:03d}",
            "http_version": version.removesuffix(".0"),
            "local_ip": self.local[0],
            "local_port": self.local[1],
            "method": self.method,
            "num_connects": self.connects,
            "num_headers": len(response.headers) if response else 0,
            "num_redirects": self.redirects,
            "redirect_url": self.redirect_url,
            "remote_ip": self.peer[0],
            "remote_port": self.peer[1],
            "response_code": f"{status:03d}",
            "scheme": urlsplit(self.url_effective or absolute(self.url)).scheme.upper(),
            "size_download": self.size_download,
            "size_header": self.size_header,
            "size_request": self.size_request,
            "size_upload": self.size_upload,
            "speed_download": int(self.size_download / total) if total > 0 else 0,
            "time_appconnect": self.appconnect,
            "time_connect": self.connect,
            "time_namelookup": self.lookup,
            "time_pretransfer": self.pretransfer,
            "time_redirect": self.request_start - self.start if self.redirects else 0.0,
            "time_starttransfer": self.starttransfer,
            "time_total": total,
            "url": absolute(self.url),
            "url_effective": self.url_effective or absolute(self.url),
        }


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}
_VARIABLE = re.compile(r"%%|%\{([a-z_]+)\}|%header\{([^}]*)\}|\\(.)", re.DOTALL)


def write_out(fmt: str, transfer: Transfer, stdout: BinaryIO, warn: Callable[[str], None]) -> None:
    """curl's --write-out: ``%{variable}``, ``%header{name}``, ``%%``, and the escapes ``\\n \\r \\t \\\\``.
    ``%{stdout}``/``%{stderr}`` switch where the rest goes; ``%{onerror}``: the rest only if the URL failed."""
    values = transfer.values()
    out: list[str] = []
    target = "stdout"
    pieces: list[tuple[str, str]] = []  # (target, text)

    def emit(text: str) -> None:
        out.append(text)

    pos = 0
    for match in _VARIABLE.finditer(fmt):
        emit(fmt[pos : match.start()])
        pos = match.end()
        whole, name, header, escape = match.group(0), *match.groups()
        if whole == "%%":
            emit("%")
        elif escape is not None:
            emit(_ESCAPES.get(escape, whole))
        elif header is not None:
            response = transfer.response
            emit((response.header(header) if response else None) or "")
        elif name in ("stdout", "stderr"):
            pieces.append((target, "".join(out)))
            out.clear()
            target = name
        elif name == "onerror":
            if not transfer.exitcode:
                pos = len(fmt)
                break
        elif name == "json":
            emit(json.dumps({key: _json_value(key, value) for key, value in sorted(values.items())}))
        elif name in values:
            value = values[name]
            emit(f"{value:.6f}" if isinstance(value, float) else str(value))
        else:
            warn(f"unknown --write-out variable: {name!r}")
    emit(fmt[pos:])
    pieces.append((target, "".join(out)))
    for where, text in pieces:
        if not text:
            continue
        if where == "stderr":
            sys.stderr.write(text)
            sys.stderr.flush()
        else:
            stdout.write(text.encode("utf-8", "surrogateescape"))
            stdout.flush()


def _json_value(key: str, value: str | int | float) -> str | int | float | None:
    if key in ("http_code", "response_code"):
        return int(str(value))
    if isinstance(value, float):
        return round(value, 6)
    return None if value == "" and key in ("errormsg", "redirect_url") else value


# -- the progress bar ----------------------------------------------------------------------------------------------
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


# -- fetching ------------------------------------------------------------------------------------------------------
class Getter:
    """Runs ``sockhop get``: one connection per host and port at a time, reused across URLs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.silent = getattr(args, "silent", False)
        self.trace = self._trace if getattr(args, "trace", False) else None
        if args.head and args.data:
            raise UsageError("-d and -I ask for two methods (POST and HEAD): give one, or -X")
        if args.resume and args.range:
            raise UsageError("-C and -r both ask for a range: give one")
        self.extra = [self._split_header(h) for h in args.header]
        self.pinned = parse_resolve(args.resolve)
        self.range = byte_range(args.range) if args.range else None
        self.auth = basic_auth(args.user) if args.user else None
        self.body = read_data(args.data or [])
        self.format = self._format(args.write_out) if args.write_out else None
        timeout = args.timeout or 30.0
        self.dialing = Dialing(args.connect_timeout or timeout, timeout, args.family, self.pinned)
        self.conn: Connection | None = None
        self.scheme = ""  # of self.conn
        self.context: ssl.SSLContext | None = None  # made at the first https:// URL
        self.stdout: BinaryIO = sys.stdout.buffer
        self.output: BinaryIO | None = None  # -o FILE, shared by every URL
        self.retrying = False  # the current response will be asked for again: its body goes nowhere
        self.upcoming: list[str] = []  # the URLs after the current one (HTTP/2 sends them ahead, see _send_ahead)
        if self.trace is not None:
            for (host, port), addresses in self.pinned.items():
                self.trace("*", f"Added {host}:{port}:{','.join(addresses)} to DNS cache")

    @staticmethod
    def _split_header(text: str) -> tuple[str, str]:
        name, sep, value = text.partition(":")
        if not sep or not name.strip() or any(c in text for c in "\r\n"):
            raise UsageError(f"bad header {text!r}: want 'Name: value'")
        return name.strip(), value.strip()

    @staticmethod
    def _format(text: str) -> str:
        if not text.startswith("@"):
            return text
        try:
            if text == "@-":
                return sys.stdin.read()
            with open(text[1:], encoding="utf-8") as file:
                return file.read()
        except OSError as exc:
            raise ReadError(f"cannot read {text[1:]} for --write-out: {exc.strerror or exc}") from None

    def warn(self, message: str) -> None:
        if not self.silent:
            print(f"sockhop: warning: {message}", file=sys.stderr)

    @staticmethod
    def _trace(kind: str, text: str) -> None:
        """-v as curl shows it: ``*`` lines about the connection, the heads as sent and received after ``>``/``<``
        (CRLF kept)."""
        if kind == "*":
            sys.stderr.write(f"* {text}\n")
        else:
            sys.stderr.write("".join(f"{kind} {line}\r\n" for line in text.split("\r\n")[:-1]))
        sys.stderr.flush()

    def connection(self, target: Target) -> Connection:
        conn = self.conn
        if conn is None or (self.scheme, conn.host, conn.port) != (target.scheme, target.host, target.port):
            if conn is not None:
                conn.close()
            version = getattr(self.args, "http", "1.1")
            conn = Connection(
                target.host,
                target.port,
                self.dialing,
                self.tls_for(target),
                trace=self.trace,
                alpn=("http/1.1",) if version == "1.1" else ("h2", "http/1.1"),
                prior_knowledge=version == "2-prior",
            )
            if self.conn is not None:
                conn.opens = self.conn.opens  # curl numbers connections #0, #1... across a run
            self.conn, self.scheme = conn, target.scheme
        return conn

    def tls_for(self, target: Target) -> ssl.SSLContext | None:
        if not target.tls:
            return None
        if self.context is None:
            from sockhop import tlsclient

            args = self.args
            quiet = contextlib.redirect_stderr(io.StringIO()) if self.silent else contextlib.nullcontext()
            try:
                with quiet:  # -s: not even the -k warning
                    self.context = tlsclient.client_context(getattr(args, "cacert", None), insecure=args.insecure)
            except tlsclient.CACertError as exc:  # curl's 77: a problem with the CA certificates
                raise CACertError(str(exc)) from None
            version = getattr(args, "http", "1.1")
            self.context.set_alpn_protocols(["http/1.1"] if version == "1.1" else ["h2", "http/1.1"])
        return self.context

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.output is not None:
            self.output.close()

    def headers_for(
        self, target: Target, origin: tuple[str, str, int], resume_from: int, body: bool
    ) -> list[tuple[str, str]]:
        """The request headers: ours with -A, -u (first host only) and -r, then -H over them (empty: dropped)."""
        headers: dict[str, tuple[str, str]] = {}
        if self.auth and (origin == (target.scheme, target.host, target.port) or self.args.location_trusted):
            headers["authorization"] = ("Authorization", self.auth)
        if resume_from:
            headers["range"] = ("Range", f"bytes={resume_from}-")
        elif self.range:
            headers["range"] = ("Range", self.range)
        agent = self.args.user_agent
        headers["user-agent"] = ("User-Agent", USER_AGENT if agent is None else agent)
        headers["accept"] = ("Accept", "*/*")
        if "range" not in headers:
            headers["accept-encoding"] = ("Accept-Encoding", "gzip")
        if body:
            headers["content-type"] = ("Content-Type", "application/x-www-form-urlencoded")
        for name, value in self.extra:
            headers[name.lower()] = (name, value)
        return [pair for pair in headers.values() if pair[1]]

    # -- one URL, retried --------------------------------------------------------------------------------------
    def get(self, url: str, transfer: Transfer | None = None) -> None:
        """Fetch one URL; with --retry, again after a pause while it fails in a way curl calls transient."""
        args = self.args
        transfer = transfer or Transfer(url)
        left = args.retry
        pause = args.retry_delay or RETRY_FIRST
        while True:
            self.retrying = False
            output_at = self.output.tell() if self.output is not None and self.output.seekable() else None
            budget = None if args.retry_max_time is None else args.retry_max_time - (time.monotonic() - transfer.start)
            if budget is not None and budget < pause:
                left = 0  # no time for another try: this answer is the one
            try:
                response = self.fetch(url, transfer, retries_left=left)
            except (TimedOut, UnknownHostError, Refused) as exc:
                if not left or (isinstance(exc, Refused) and not args.retry_connrefused):
                    raise
                why, wait = str(exc), pause
            else:
                if not self.retrying:
                    return
                why = f"{response.status} {response.reason} from {transfer.url_effective}"
                after = response.header("retry-after") or ""
                wait = max(pause, min(float(after), RETRY_MAX)) if after.isdigit() else pause
            if budget is not None:
                wait = max(0.0, min(wait, budget))
            left -= 1
            self.warn(f"{why}; retrying in {wait:g} s ({left} {'retry' if left == 1 else 'retries'} left)")
            if self.output is not None and output_at is not None:  # -o: what the failed try wrote goes
                self.output.seek(output_at)
                self.output.truncate()
            time.sleep(wait)
            if args.retry_delay is None:
                pause = min(pause * 2, RETRY_MAX)

    def fetch(self, url: str, transfer: Transfer, retries_left: int = 0) -> Response:
        """One try at a URL, following redirects with -L."""
        args = self.args
        body = self.body
        method = args.request or ("HEAD" if args.head else "POST" if body is not None else "GET")
        bodiless = args.head or method == "HEAD"
        path = args.output or (remote_name(url) if args.remote_name else None)
        transfer.filename = path or ""
        resume_from = 0
        if args.resume:
            if path is None:
                raise UsageError("-C needs -o FILE or -O")
            resume_from = os.path.getsize(path) if os.path.isfile(path) else 0
        deadline = time.monotonic() + args.max_time if args.max_time else None  # each try has its own, as curl
        first = Target.from_url(url)
        origin = (first.scheme, first.host, first.port)
        redirects = 0
        transfer.redirects, transfer.size_header = 0, 0
        while True:
            target = Target.from_url(url)
            transfer.url_effective, transfer.method = absolute(url), method
            conn = self.connection(target)
            conn.deadline, conn.first_byte = deadline, 0.0
            transfer.request_start = time.monotonic()
            opens = conn.opens
            sink = _Sink(self, path, resume_from, bodiless, retries_left)
            headers = self.headers_for(target, origin, resume_from, body is not None)
            if redirects == 0 and self.upcoming:
                self._send_ahead(conn, target, method, headers)
            try:
                response = conn.request(method, target, headers, sink.body, sink.head, body, head=bodiless)
            finally:
                self._measure(transfer, conn, opens, sink)
            transfer.response = response
            transfer.size_header += len(response.head_text())
            location = response.header("location")
            transfer.redirect_url = urljoin(absolute(url), location) if location else ""
            if args.location and response.status in REDIRECTS and location:
                redirects += 1
                transfer.redirects = redirects
                if redirects > args.max_redirects:
                    raise TooManyRedirects(f"too many redirects (more than {args.max_redirects}) from {url}")
                url = transfer.redirect_url
                if self.trace is not None:
                    self.trace("*", f"Issue another request to this URL: '{url}'")
                see_other = response.status == 303 and method != "HEAD"
                if not args.request and (see_other or (response.status in (301, 302) and method == "POST")):
                    method, body = "GET", None  # as browsers and curl do
                continue
            sink.finish(response)
            break
        transfer.redirect_url = "" if args.location else transfer.redirect_url
        if self.trace is not None:
            if conn.sock is not None:
                self.trace("*", f"Connection #{conn.opens - 1} to host {conn.host} left intact")
            else:
                self.trace("*", f"Closing connection {conn.opens - 1}")
        if args.fail and response.status >= 400 and not self.retrying:
            raise BadStatus(f"{transfer.url_effective}: {response.status} {response.reason}")
        return response

    def _send_ahead(self, conn: Connection, target: Target, method: str, headers: list[tuple[str, str]]) -> None:
        """Over HTTP/2, the URLs that follow on the same host go out now, with this one, as concurrent streams on
        one connection; their answers are read (and written out) in turn."""
        if method not in ("GET", "HEAD") or self.body is not None or self.args.resume:
            return
        if conn.sock is None:
            try:
                conn.open()
            except SockhopError:
                return  # request() will open it again and say what is wrong
        if not conn.http2:
            return
        conn.prefetch(method, target, headers)  # this one first: the lowest stream id
        for url in self.upcoming:
            try:
                other = Target.from_url(url)
            except ClientError:
                break
            if (other.scheme, other.host, other.port) != (target.scheme, target.host, target.port):
                break
            conn.prefetch(method, other, self.headers_for(other, (other.scheme, other.host, other.port), 0, False))

    @staticmethod
    def _measure(transfer: Transfer, conn: Connection, opens: int, sink: _Sink) -> None:
        """What --write-out reports of the request just made (or tried)."""
        start, stamps = transfer.start, conn.stamps
        transfer.connects += conn.opens - opens
        if conn.opens > opens and stamps:  # opened for this request
            transfer.lookup = stamps.get("namelookup", start) - start
            transfer.connect = stamps.get("connect", start) - start
            transfer.appconnect = stamps["appconnect"] - start if conn.tls and "appconnect" in stamps else 0.0
        transfer.pretransfer = max(transfer.connect, transfer.appconnect, transfer.request_start - start)
        transfer.starttransfer = max(conn.first_byte - start, transfer.pretransfer)
        transfer.peer, transfer.local = conn.peer, conn.local
        transfer.size_request = conn.head_size + len(sink.getter.body or b"")
        transfer.size_upload = len(sink.getter.body or b"")
        transfer.size_download = sink.received


class _Sink:
    """Where one response goes: its head to stdout with -i/-I, its body to stdout or a file (opened only when the
    status says there is something to write, so a 404 does not clobber a file)."""

    def __init__(self, getter: Getter, path: str | None, resume_from: int, bodiless: bool, retries: int) -> None:
        self.getter = getter
        self.path = path
        self.resume_from = resume_from
        self.bodiless = bodiless
        self.retries = retries
        self.received = 0
        self.writer: Callable[[bytes], None] | None = None
        self.decoder: GzipDecoder | None = None
        self.file: BinaryIO | None = None
        enabled = bool(path) and sys.stderr.isatty() and not getter.silent
        self.progress = Progress(os.path.basename(path) if path else "", enabled)

    def body(self, data: bytes) -> None:
        self.received += len(data)
        if self.writer is None:
            return  # a redirect's or an error's body, or a HEAD
        self.progress.advance(len(data))
        try:
            if self.decoder is not None:
                self.decoder(data)
            else:
                self.writer(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise WriteError(f"cannot write the body to {self.path or 'stdout'}: {exc.strerror or exc}") from None

    def head(self, response: Response) -> None:
        """The head is here: decide where the body goes, before any of it arrives."""
        try:
            _prepare(self, response)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise WriteError(f"cannot write to {self.path or 'stdout'}: {exc.strerror or exc}") from None

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
    if sink.retries and response.status in TRANSIENT:
        getter.retrying = True  # asked for again: this answer goes nowhere
        return
    if args.include or args.head:
        getter.stdout.write(response.head_text().encode("latin-1"))
        getter.stdout.flush()
    if sink.bodiless:
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
    """Fetch every URL in turn; stop at the first failure with curl's exit status for it, having said what failed
    in one line (unless -s without -S) and written -w's report for every URL tried."""
    silent = getattr(args, "silent", False)
    show_error = not silent or getattr(args, "show_error", False)
    getter: Getter | None = None
    status = 0
    try:
        getter = Getter(args)
        for index, url in enumerate(args.urls):
            transfer = Transfer(url)
            getter.upcoming = args.urls[index + 1 :]
            try:
                getter.get(url, transfer)
            except SockhopError as exc:
                transfer.exitcode, transfer.errormsg = exit_code(exc), str(exc)
                raise
            finally:
                transfer.end = time.monotonic()
                if getter.format is not None:
                    write_out(getter.format, transfer, getter.stdout, getter.warn)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from complaining at exit while flushing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SockhopError as exc:
        status = exit_code(exc)
        if show_error or status == 2:  # bad use is said even with -s
            print(f"sockhop: {exc}", file=sys.stderr)
    finally:
        if getter is not None:
            getter.close()
    return status
