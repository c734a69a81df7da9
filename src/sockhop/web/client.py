"""The client side of HTTP/1.1 on plain sockets or TLS: one request at a time over a connection that is kept for
the next URL on the same scheme, host and port.

:class:`ResponseReader` is sans-IO like the server (fed bytes, told about EOF) and leaves the framing to httptools:
Content-Length, chunked, or -- when a response has neither -- "until the server closes". :class:`Connection` owns
the socket, and turns every way a fetch can fail into one :class:`ClientError` with a line a person can act on.
"""

from __future__ import annotations

import socket
import ssl
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlsplit

import httptools

from sockhop import __version__
from sockhop.errors import AddressError, RemoteProtocolError, SockhopError, UnknownHostError
from sockhop.net.addresses import check_host, format_address, format_host, format_host_port
from sockhop.tlsclient import describe_certificate_error
from sockhop.web.h2client import H2Session, StreamError
from sockhop.web.h2client import Refused as H2Refused

USER_AGENT = f"sockhop/{__version__}"
RECV_SIZE = 256 * 1024
MAX_HEAD = 64 * 1024  # a response head larger than this is not one we want
DEFAULT_PORTS = {"http": 80, "https": 443}


class ClientError(SockhopError):
    """The request failed."""

    #: curl's exit status for this failure, so scripts written for curl read ours the same way.
    exit_code = 1


class BadURL(ClientError):
    """The URL is malformed."""

    exit_code = 3


class ConnectError(ClientError):
    """Cannot connect."""

    exit_code = 7


class Refused(ConnectError):
    """The server refused the connection."""


class TimedOut(ClientError):
    """Timed out."""

    exit_code = 28


class CertificateError(ClientError):
    """The server's certificate failed verification."""

    exit_code = 60


class HandshakeError(ClientError):
    """The TLS handshake failed for another reason."""

    exit_code = 35


class BadStatus(ClientError):
    """The server answered with an error status."""

    exit_code = 22


class TooManyRedirects(ClientError):
    """Too many redirects."""

    exit_code = 47


class SendError(ClientError):
    """Sending the request failed."""

    exit_code = 55


class ReceiveError(ClientError):
    """Receiving the response failed."""

    exit_code = 56


class MalformedResponse(RemoteProtocolError):
    """The server's response is not valid HTTP/1.1."""

    exit_code = 8


class EmptyReply(MalformedResponse):
    """The server closed the connection without a response."""

    exit_code = 52


class PartialBody(MalformedResponse):
    """The server closed the connection before the end of the body."""

    exit_code = 18


class BadContentEncoding(MalformedResponse):
    """The body's content coding cannot be decoded."""

    exit_code = 61


@dataclass(frozen=True)
class Target:
    """Where a URL points: the connection it needs and the request target to send on it."""

    host: str
    port: int
    path: str  # origin-form: path and query
    scheme: str = "http"

    @classmethod
    def from_url(cls, url: str) -> Target:
        if "://" not in url:
            url = "http://" + url
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            port = parts.port or DEFAULT_PORTS.get(scheme, 0)
        except ValueError as exc:
            raise BadURL(f"bad URL {url}: {exc}") from None
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise BadURL(f"bad URL {url}: want http://HOST[:PORT]/PATH or https://...")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.hostname, port, path, scheme)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        if self.port == DEFAULT_PORTS[self.scheme]:
            return format_host(self.host)
        return format_host_port(self.host, self.port)


@dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    keep_alive: bool = True

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def head_text(self) -> str:
        lines = [f"HTTP/{self.version} {self.status} {self.reason}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        return "\r\n".join(lines) + "\r\n\r\n"


class _HeadersDone(Exception):
    """Stops the parser after the head of a response to HEAD (it has no body whatever its headers say)."""


class ResponseReader:
    """Reads one response. ``on_body`` receives the body decoded from its transfer coding (not its content
    coding), piece by piece, so a large download never sits in memory."""

    def __init__(
        self,
        on_body: Callable[[bytes], None],
        *,
        head: bool = False,
        on_head: Callable[[Response], None] | None = None,
    ) -> None:
        self.on_body_piece = on_body
        self.on_head = on_head
        self.head = head
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.framed = False  # Content-Length or chunked: EOF before the end is an error
        self.complete = False

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self.headers]
        self.response = Response(
            status, self.reason.decode("latin-1"), parser.get_http_version(), headers, parser.should_keep_alive()
        )
        self.framed = any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in self.headers)
        self.reason, self.headers = b"", []
        if status >= 200 and self.on_head is not None:
            self.on_head(self.response)
        if self.head and status >= 200:
            raise _HeadersDone

    def on_body(self, body: bytes) -> None:
        self.on_body_piece(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        if 100 <= self.response.status < 200:  # an interim answer (100 Continue): the real one follows
            self.response = None
            return
        self.complete = True

    # feeding
    def feed(self, data: bytes) -> bool:
        """Feed bytes; True once the response is complete."""
        waiting = self.response is None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadersDone):
                self.complete = True
                return True
            if cause is not None:  # from where the body went: a closed pipe, a full disk, a bad gzip stream
                raise cause from None
            raise MalformedResponse(f"malformed response: {exc}") from None
        except httptools.HttpParserUpgrade:
            self.complete = True
        except httptools.HttpParserError as exc:
            raise MalformedResponse(f"malformed response: {exc}") from None
        if waiting and self.response is None:  # httptools holds a partial head without limit: we set one
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD:
                raise MalformedResponse("the response head is too large")
        return self.complete

    def eof(self) -> None:
        """The server closed. Fine for a body delimited by the close; an error anywhere else."""
        if self.complete:
            return
        if self.response is None:
            raise EmptyReply("the server closed the connection without a complete response")
        if self.framed:
            raise PartialBody("the server closed the connection before the end of the body")
        self.response.keep_alive = False
        self.complete = True


class GzipDecoder:
    """Content-Encoding: gzip, decoded as it streams."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self.sink = sink
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def __call__(self, data: bytes) -> None:
        try:
            out = self.inflater.decompress(data)
        except zlib.error as exc:
            raise BadContentEncoding(f"bad gzip body: {exc}") from None
        if out:
            self.sink(out)

    def finish(self) -> None:
        try:
            out = self.inflater.flush()
        except zlib.error as exc:
            raise BadContentEncoding(f"bad gzip body: {exc}") from None
        if out:
            self.sink(out)


#: What a verbose trace receives: a kind (``*`` information, ``>`` the request head, ``<`` the response head) and text.
Trace = Callable[[str, str], None]


@dataclass(frozen=True)
class Dialing:
    """How to reach a host: timeouts, the address family (curl's -4/-6) and fixed addresses for some host and port
    pairs (curl's --resolve, host ``*`` for any: those never go to the resolver). ``read_timeout`` bounds each wait
    for the server."""

    connect_timeout: float = 30.0
    read_timeout: float = 30.0
    family: int = socket.AF_UNSPEC
    pinned: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)


def ip_literal(text: str) -> int | None:
    """The address family of an IP address literal, or None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
        except OSError:
            continue
        return family
    return None


def check_host_name(host: str) -> str:
    """The ASCII form of a host name, or UnknownHostError for one no resolver could know (an empty label, one over
    63 characters, a space): said here (by net's one check) rather than by asking the machine's resolver."""
    try:
        check_host(host)
        return host if host.isascii() else host.encode("idna").decode("ascii")
    except (AddressError, UnicodeError) as exc:
        raise UnknownHostError(f"cannot resolve {host}: {exc}") from None


class Connection:
    """A connection to one host and port, reused for as many requests as the server allows. With a TLS context it
    speaks HTTPS: the handshake offers ALPN http/1.1 and checks the certificate against the host name (even when
    the address comes from ``dialing.pinned``). ``deadline`` (a ``time.monotonic()`` value, or None) bounds the
    whole of the current request, connecting included: curl's --max-time."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float | Dialing,
        tls: ssl.SSLContext | None = None,
        *,
        trace: Trace | None = None,
        alpn: tuple[str, ...] = ("http/1.1",),
        prior_knowledge: bool = False,
    ) -> None:
        self.host, self.port = host, port
        self.alpn = alpn  # what the TLS handshake offers (the context says so too; this is for -v)
        self.prior_knowledge = prior_knowledge  # http://: speak HTTP/2 from the first byte (h2c)
        self.session: H2Session | None = None  # the socket speaks HTTP/2
        self.prefetched: dict[tuple, int] = {}  # requests sent ahead of their turn, as streams
        self.dialing = timeout if isinstance(timeout, Dialing) else Dialing(timeout, timeout)
        self.timeout = self.dialing.read_timeout
        self.tls = tls
        self.trace = trace
        self.sock: socket.socket | None = None
        self.used = 0  # requests answered on the current socket
        self.deadline: float | None = None
        self.opens = 0  # sockets opened, for curl's num_connects
        #: When the last socket was opened: monotonic stamps of the start, the address lookup, the TCP connect and
        #: the TLS handshake (what curl's --write-out calls time_namelookup, time_connect and time_appconnect).
        self.stamps: dict[str, float] = {}
        self.first_byte = 0.0  # monotonic time the last response's head arrived
        self.head_size = 0  # bytes of the last request's head
        self.peer: tuple[str, int] = ("", 0)
        self.local: tuple[str, int] = ("", 0)

    @property
    def name(self) -> str:
        return format_host_port(self.host, self.port)

    def _note(self, kind: str, text: str) -> None:
        if self.trace is not None:
            self.trace(kind, text)

    def _limit(self, timeout: float, what: str) -> float:
        """``timeout``, shortened to what is left before the deadline; TimedOut once nothing is left."""
        if self.deadline is None:
            return timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimedOut(f"gave up {what} {self.name}: --max-time ran out")
        return min(timeout, left)

    def _timed_out(self, what: str) -> TimedOut:
        if self.deadline is not None and time.monotonic() >= self.deadline - 0.001:
            return TimedOut(f"gave up {what} {self.name}: --max-time ran out")
        return TimedOut(f"timed out {what} {self.name}")

    def addresses(self) -> list[tuple]:
        """getaddrinfo's answers for the host, asking the machine's resolver only for a name nobody pinned."""
        family = self.dialing.family
        pinned = self.dialing.pinned.get((self.host.lower(), self.port)) or self.dialing.pinned.get(("*", self.port))
        if pinned is not None:
            self._note("*", f"Hostname {self.host} was found in DNS cache")
        literals = pinned or ((self.host,) if ip_literal(self.host) else ())
        if literals:
            infos = []
            for address in literals:
                kind = ip_literal(address)
                if family in (socket.AF_UNSPEC, kind):
                    infos += socket.getaddrinfo(
                        address, self.port, kind, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
                    )
            if not infos:
                wanted = "IPv4" if family == socket.AF_INET else "IPv6"
                raise ConnectError(f"cannot connect to {self.name}: no {wanted} address for it (-4/-6)")
            return infos
        name = check_host_name(self.host)
        try:
            return socket.getaddrinfo(name, self.port, family, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UnknownHostError(f"cannot resolve {self.host}: {exc.strerror}") from None

    def open(self) -> socket.socket:
        stamps = self.stamps = {"start": time.monotonic()}
        infos = self.addresses()
        stamps["namelookup"] = time.monotonic()
        last: OSError | None = None
        for family, kind, proto, _, addr in infos:
            self._note("*", f"  Trying {format_address(addr)}...")
            timeout = self._limit(self.dialing.connect_timeout, "connecting to")
            sock = socket.socket(family, kind, proto)
            sock.settimeout(timeout)
            try:
                sock.connect(addr)
            except OSError as exc:
                sock.close()
                last = exc
                self._note("*", f"connect to {addr[0]} port {addr[1]} failed: {exc.strerror or 'timed out'}")
                continue
            stamps["connect"] = time.monotonic()
            self.opens += 1
            self.peer, self.local = sock.getpeername()[:2], sock.getsockname()[:2]
            self._note("*", f"Connected to {self.host} ({addr[0]}) port {addr[1]} (#{self.opens - 1})")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self._handshake(sock, stamps["start"])
            stamps["appconnect"] = time.monotonic()
            self.sock, self.used = sock, 0
            h2 = sock.selected_alpn_protocol() == "h2" if isinstance(sock, ssl.SSLSocket) else self.prior_knowledge
            if h2:
                self._note("*", "Using HTTP/2" + ("" if self.tls is not None else " with prior knowledge (h2c)"))
                self.session = H2Session(partial(self._send, sock), partial(self._recv, sock, True))
            return sock
        if isinstance(last, TimeoutError):
            raise self._timed_out("connecting to")
        if isinstance(last, ConnectionRefusedError):
            raise Refused(f"connection refused by {self.name}")
        raise ConnectError(f"cannot connect to {self.name}: {getattr(last, 'strerror', None) or last}")

    def _handshake(self, sock: socket.socket, started: float) -> ssl.SSLSocket:
        """TLS on a connected socket; every way it fails is one line naming what went wrong. The handshake counts
        towards the connect timeout, as curl counts it."""
        assert self.tls is not None
        self._note("*", f"ALPN: offers {','.join(self.alpn)}")
        try:
            left = self.dialing.connect_timeout - (time.monotonic() - started)
            if left <= 0:
                raise TimeoutError
            sock.settimeout(self._limit(left, "in the TLS handshake with"))
            tls = self.tls.wrap_socket(sock, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise CertificateError(f"{self.name}: {describe_certificate_error(exc)}") from None
        except TimeoutError:
            sock.close()
            raise self._timed_out("in the TLS handshake with") from None
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            hint = " (is it a plain http:// port?)" if reason == "WRONG_VERSION_NUMBER" else ""
            raise HandshakeError(f"TLS handshake with {self.name} failed: {reason}{hint}") from None
        if self.trace is not None:
            self._trace_tls(tls)
        return tls

    def _trace_tls(self, tls: ssl.SSLSocket) -> None:
        cipher = tls.cipher()
        self._note("*", f"SSL connection using {tls.version()} / {cipher[0] if cipher else '?'}")
        self._note("*", f"ALPN: server accepted {tls.selected_alpn_protocol() or 'nothing'}")
        cert = tls.getpeercert()
        if not cert:  # -k: not verified, so not decoded either
            self._note("*", "SSL certificate verify result: not checked (-k), continuing anyway.")
            return

        def name(parts: tuple) -> str:
            return "; ".join(f"{key}={value}" for rdn in parts for key, value in rdn)

        self._note("*", "Server certificate:")
        self._note("*", f" subject: {name(cert.get('subject', ()))}")
        self._note("*", f" start date: {cert.get('notBefore', '?')}")
        self._note("*", f" expire date: {cert.get('notAfter', '?')}")
        self._note("*", f" issuer: {name(cert.get('issuer', ()))}")
        self._note("*", " SSL certificate verify ok.")

    def _send(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.settimeout(self._limit(self.timeout, "sending to"))
            sock.sendall(data)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            raise _StaleConnection from None  # a kept connection the server closed meanwhile
        except TimeoutError:
            raise self._timed_out("sending to") from None
        except OSError as exc:
            raise SendError(f"cannot send to {self.name}: {exc.strerror or exc}") from None

    def _recv(self, sock: socket.socket, received: bool) -> bytes:
        try:
            sock.settimeout(self._limit(self.timeout, "waiting for"))
            return sock.recv(RECV_SIZE)
        except ConnectionResetError as exc:
            if not received:
                raise _StaleConnection from None
            raise ReceiveError(f"{self.name} reset the connection: {exc.strerror}") from None
        except TimeoutError:
            raise self._timed_out("waiting for") from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            if not received:
                raise _StaleConnection from None  # a kept TLS connection closed without close_notify
            return b""  # the end of a body delimited by the close, or a truncation the reader will name
        except ssl.SSLError as exc:
            raise ReceiveError(f"TLS error from {self.name}: {exc.reason or exc}") from None

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        self.prefetched.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    @property
    def http2(self) -> bool:
        return self.session is not None

    def prefetch(self, method: str, target: Target, headers: list[tuple[str, str]]) -> None:
        """Over HTTP/2, send a bodiless request now, ahead of its turn, as one more concurrent stream: ``request``
        with the same method, target and headers later reads its answer instead of asking again."""
        session = self.session
        if session is None or not session.usable or len(self.prefetched) >= PREFETCH or not session.room:
            return
        key = (method, target.scheme, target.authority, target.path, tuple(headers))
        if key not in self.prefetched:
            self.prefetched[key] = session.start(method, target.scheme, target.authority, target.path, headers)

    def request(
        self,
        method: str,
        target: Target,
        headers: list[tuple[str, str]],
        on_body: Callable[[bytes], None],
        on_head: Callable[[Response], None] | None = None,
        body: bytes | None = None,
        *,
        head: bool | None = None,
    ) -> Response:
        """Send one request (with ``body``, if any, and its Content-Length) and read its response, the body going
        to ``on_body``. ``head``: the response has no body whatever its headers say (default: for HEAD). A kept
        connection the server has meanwhile closed before a byte of answer is reopened once, transparently, as
        curl and browsers do."""
        lines = [f"{method} {target.path} HTTP/1.1", f"Host: {target.authority}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if body is not None and not any(name.lower() == "content-length" for name, _ in headers):
            lines.append(f"Content-Length: {len(body)}")
        text = "\r\n".join(lines) + "\r\n\r\n"
        self.head_size = len(text)
        data = text.encode("latin-1") + (body or b"")
        bodiless = method == "HEAD" if head is None else head
        self.request_made = (method, target, headers, body)
        if self.sock is not None:
            if self.used or self.session is None:  # (an HTTP/2 connection opened to send requests ahead: not yet)
                self._note("*", f"Re-using existing connection #{self.opens - 1} with host {self.host}")
            try:
                return self._exchange(bodiless, text, data, on_body, on_head)
            except _StaleConnection:
                self.close()
        try:
            return self._exchange(bodiless, text, data, on_body, on_head)
        except _StaleConnection:
            raise EmptyReply(f"{self.name} closed the connection without a response") from None

    def _exchange(
        self,
        bodiless: bool,
        text: str,
        data: bytes,
        on_body: Callable[[bytes], None],
        on_head: Callable[[Response], None] | None,
    ) -> Response:
        sock = self.sock or self.open()
        if self.session is not None:
            return self._exchange_h2(bodiless, text, on_body, on_head)

        def head(response: Response) -> None:
            self.first_byte = time.monotonic()
            self._note("<", response.head_text())
            if on_head is not None:
                on_head(response)

        reader = ResponseReader(on_body, head=bodiless, on_head=head)
        received = False
        try:
            self._note(">", text)
            self._send(sock, data)
            while not reader.complete:
                chunk = self._recv(sock, received)
                if not chunk:
                    if not received:
                        raise _StaleConnection
                    reader.eof()
                    break
                received = True
                reader.feed(chunk)  # may raise from where the body goes (a closed pipe): not the server's fault
        except BaseException:
            self.close()
            raise
        response = reader.response
        assert response is not None
        self.used += 1
        if not response.keep_alive:
            self.close()
        return response

    def _exchange_h2(
        self,
        bodiless: bool,
        text: str,
        on_body: Callable[[bytes], None],
        on_head: Callable[[Response], None] | None,
    ) -> Response:
        """One request as a stream of the HTTP/2 connection (or the answer to one sent ahead by ``prefetch``)."""
        session = self.session
        assert session is not None
        request = self.request_made
        method, target, headers, body = request
        key = (method, target.scheme, target.authority, target.path, tuple(headers))
        sid = self.prefetched.pop(key, None) if body is None else None
        self._note(">", text.replace(" HTTP/1.1\r\n", " HTTP/2\r\n", 1))

        def head(status: int, fields: list[tuple[str, str]]) -> None:
            self.first_byte = time.monotonic()
            response = Response(status, "", "2", fields)
            self._note("<", response.head_text())
            if on_head is not None:
                on_head(response)

        refusals = 0
        while True:
            try:
                if sid is None:
                    if not session.usable:
                        raise _StaleConnection
                    while not session.room and self.prefetched:  # the server's stream limit: make room for this
                        session.cancel(self.prefetched.popitem()[1])
                    sid = session.start(method, target.scheme, target.authority, target.path, headers, body)
                status, fields = session.wait(sid, head, on_body, bodiless)
                break
            except H2Refused:
                # RST_STREAM(REFUSED_STREAM): the server did nothing with it (over its stream limit), so ask again
                # on this connection; past a GOAWAY, on a new one.
                refusals += 1
                sid = None
                if session.usable and refusals < REFUSALS:
                    continue
                self.close()
                raise _StaleConnection from None
            except StreamError as exc:
                self.close()
                raise ReceiveError(f"{self.name}: {exc}") from None
            except BaseException:
                self.close()
                raise
        self.used += 1
        response = Response(status, "", "2", fields, session.usable)
        if not session.usable and not self.prefetched:
            self.close()
        return response


#: Requests sent ahead of their turn on one HTTP/2 connection, at most (the server's stream limit is 100 or more).
PREFETCH = 64
#: Times one request is sent again on a connection whose server refused its stream (REFUSED_STREAM).
REFUSALS = 8


class _StaleConnection(Exception):
    """The server closed a kept connection before answering: try again on a fresh one."""
