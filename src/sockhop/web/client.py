"""The client side of HTTP/1.1 on plain sockets or TLS: one request at a time over a connection that is kept for
the next URL on the same scheme, host and port.

:class:`ResponseReader` is sans-IO like the server (fed bytes, told about EOF) and leaves the framing to httptools:
Content-Length, chunked, or -- when a response has neither -- "until the server closes". :class:`Connection` owns
the socket, and turns every way a fetch can fail into one :class:`ClientError` with a line a person can act on.
"""

from __future__ import annotations

import socket
import ssl
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

from sockhop import __version__
from sockhop.errors import RemoteProtocolError, SockhopError, UnknownHostError
from sockhop.net.addresses import check_host
from sockhop.tlsclient import describe_certificate_error

USER_AGENT = f"sockhop/{__version__}"
RECV_SIZE = 256 * 1024
MAX_HEAD = 64 * 1024  # a response head larger than this is not one we want
DEFAULT_PORTS = {"http": 80, "https": 443}


class ClientError(SockhopError):
    """The request failed."""


class ConnectError(ClientError):
    """Cannot connect."""


class TimedOut(ClientError):
    """Timed out."""


class CertificateError(ClientError):
    """The server's certificate failed verification."""


class HandshakeError(ClientError):
    """The TLS handshake failed for another reason."""


class BadStatus(ClientError):
    """The server answered with an error status."""


class MalformedResponse(RemoteProtocolError):
    """The server's response is not valid HTTP/1.1."""


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
            raise ClientError(f"bad URL {url}: {exc}") from None
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ClientError(f"bad URL {url}: want http://HOST[:PORT]/PATH or https://...")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.hostname, port, path, scheme)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


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
            raise MalformedResponse("the server closed the connection without a complete response")
        if self.framed:
            raise MalformedResponse("the server closed the connection before the end of the body")
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
            raise MalformedResponse(f"bad gzip body: {exc}") from None
        if out:
            self.sink(out)

    def finish(self) -> None:
        try:
            out = self.inflater.flush()
        except zlib.error as exc:
            raise MalformedResponse(f"bad gzip body: {exc}") from None
        if out:
            self.sink(out)


class Connection:
    """A connection to one host and port, reused for as many requests as the server allows. With a TLS context it
    speaks HTTPS: the handshake offers ALPN http/1.1 and checks the certificate against the host name."""

    def __init__(self, host: str, port: int, timeout: float, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.tls = tls
        self.sock: socket.socket | None = None
        self.used = 0  # requests answered on the current socket

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}" if ":" not in self.host else f"[{self.host}]:{self.port}"

    def open(self) -> socket.socket:
        try:
            infos = socket.getaddrinfo(check_host(self.host), self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UnknownHostError(f"cannot resolve {self.host}: {exc.strerror}") from None
        last: OSError | None = None
        for family, kind, proto, _, addr in infos:
            sock = socket.socket(family, kind, proto)
            sock.settimeout(self.timeout)
            try:
                sock.connect(addr)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self._handshake(sock)
            self.sock, self.used = sock, 0
            return sock
        if isinstance(last, TimeoutError):
            raise TimedOut(f"timed out connecting to {self.name}")
        if isinstance(last, ConnectionRefusedError):
            raise ConnectError(f"connection refused by {self.name}")
        raise ConnectError(f"cannot connect to {self.name}: {getattr(last, 'strerror', None) or last}")

    def _handshake(self, sock: socket.socket) -> ssl.SSLSocket:
        """TLS on a connected socket; every way it fails is one line naming what went wrong."""
        assert self.tls is not None
        try:
            return self.tls.wrap_socket(sock, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise CertificateError(f"{self.name}: {describe_certificate_error(exc)}") from None
        except TimeoutError:
            sock.close()
            raise TimedOut(f"timed out in the TLS handshake with {self.name}") from None
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            hint = " (is it a plain http:// port?)" if reason == "WRONG_VERSION_NUMBER" else ""
            raise HandshakeError(f"TLS handshake with {self.name} failed: {reason}{hint}") from None

    def _send(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.sendall(data)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            raise _StaleConnection from None  # a kept connection the server closed meanwhile
        except TimeoutError:
            raise TimedOut(f"timed out sending to {self.name}") from None

    def _recv(self, sock: socket.socket, received: bool) -> bytes:
        try:
            return sock.recv(RECV_SIZE)
        except ConnectionResetError as exc:
            if not received:
                raise _StaleConnection from None
            raise ClientError(f"{self.name} reset the connection: {exc.strerror}") from None
        except TimeoutError:
            raise TimedOut(f"timed out waiting for {self.name}") from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            if not received:
                raise _StaleConnection from None  # a kept TLS connection closed without close_notify
            return b""  # the end of a body delimited by the close, or a truncation the reader will name
        except ssl.SSLError as exc:
            raise ClientError(f"TLS error from {self.name}: {exc.reason or exc}") from None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(
        self,
        method: str,
        target: Target,
        headers: list[tuple[str, str]],
        on_body: Callable[[bytes], None],
        on_head: Callable[[Response], None] | None = None,
    ) -> Response:
        """Send one request and read its response, the body going to ``on_body``. A kept connection the server has
        meanwhile closed is reopened once, transparently (only idempotent methods are sent here)."""
        lines = [f"{method} {target.path} HTTP/1.1", f"Host: {target.authority}"]
        lines += [f"{name}: {value}" for name, value in headers]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.sock is not None:
            try:
                return self._exchange(method, data, on_body, on_head)
            except _StaleConnection:
                self.close()
        try:
            return self._exchange(method, data, on_body, on_head)
        except _StaleConnection:
            raise MalformedResponse(f"{self.name} closed the connection without a response") from None

    def _exchange(
        self, method: str, data: bytes, on_body: Callable[[bytes], None], on_head: Callable[[Response], None] | None
    ) -> Response:
        sock = self.sock or self.open()
        reader = ResponseReader(on_body, head=method == "HEAD", on_head=on_head)
        received = False
        try:
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


class _StaleConnection(Exception):
    """The server closed a kept connection before answering: try again on a fresh one."""
