"""The server side of one HTTP/1.1 connection, sans-IO: fed bytes, answers with a :class:`Reply`.

httptools (llhttp, Node.js's parser) does the parsing and already refuses the classic smuggling shapes -- both
Content-Length and Transfer-Encoding, duplicate Content-Length, an unknown Transfer-Encoding, obsolete line
folding, whitespace before a colon. This module adds what a parser leaves to its server: limits on the request
line (414) and header block (431), the version (505), the methods (405 / 501), Host, and one answer per request in
the order they came, however they were pipelined. Every error answers once and closes the connection, because after
a malformed request nobody can tell where the next one starts.

Requests are answered as soon as they are complete, so a connection is never "busy" between two calls: the only
state is how far the current request has got. The legal moves are in ``TRANSITIONS``.

Slow clients: the protocol reads no clock, it asks the engine for an alarm (``Reply.alarm``). When the first bytes of a
request arrive and its head is not complete, it arms a header deadline (``HttpLimits.header_timeout``); when the head
completes it clears it. A client trickling header bytes (slowloris) keeps the idle timeout at bay but not the alarm:
``timed_out`` answers 408 and the connection closes (nothing is said to a keep-alive connection that was merely idle).
A request that arrives whole -- the common case -- sets no alarm at all, so the engine's fast path stays open.

The hot path: a request that arrives alone in one read, byte for byte the same as one parsed before (a browser
reloading, a benchmark, a health check), is answered from what the parser made of it then (:class:`Parsed`), and a
plain GET of a small file from the file's cached wire bytes, revalidated with one ``stat``. Everything else -- and
every request the first time -- goes through httptools.

The Date header and the access log need the time of day; it comes from the ``clock`` the server is built with,
called once per batch of input, so tests can fix it.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import httptools

from sockhop.engine.protocol import CLOSE, NOTHING, Address, Close, FileRegion, Reply, Results, StreamProtocol
from sockhop.errors import LocalProtocolError, RemoteProtocolError
from sockhop.web.accesslog import AccessLog, entry_parts, format_entry
from sockhop.web.files import Site
from sockhop.web.handler import refused_method, respond
from sockhop.web.hosts import Hosts, VirtualHost
from sockhop.web.paths import SitePath, parse_target

if TYPE_CHECKING:
    from sockhop.web.h2server import Http2Server
from sockhop.web.response import Response, error_response, http_date, response_head

# What an unknown method looks like: every registered method is an upper-case token, so "FROB /" is a method we do
# not implement (501) while "hello there" or a TLS handshake is garbage (400).
_METHOD_SP = re.compile(rb"[A-Z][A-Z0-9_-]* ")
_METHOD = re.compile(rb"[A-Z][A-Z0-9_-]*")

#: A Host header's value, RFC 9110 7.2: uri-host [ ":" port ] -- an IP literal in brackets, or a reg-name
#: (unreserved, percent-encoded, sub-delims; empty allowed, for a target without authority).
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")

#: A request line with a later HTTP/1 minor version, which llhttp refuses and RFC 9110 2.5 says to answer as 1.1.
_LATER_MINOR = re.compile(rb"([^\r\n ]+ [^\r\n ]+ HTTP/1\.)[2-9](?=\r|\n|$)")


@dataclass(frozen=True)
class HttpLimits:
    """How much of a request the server holds before refusing it (nginx's and Apache's defaults, roughly)."""

    max_target: int = 8 * 1024  # request target: 414 over it
    max_field: int = 8 * 1024  # one header line: 431
    max_head: int = 32 * 1024  # the whole request head: 431 (414 while still in the request line)
    max_headers: int = 100  # header fields: 431
    #: A request body is read (and, until something consumes bodies, dropped) up to this; 413 over it, at once when
    #: Content-Length says so. nginx's client_max_body_size is 1m too.
    max_body: int = 1024 * 1024
    max_requests: int = 1000  # per connection; the last one is answered with Connection: close
    #: Seconds from a request's first byte to the end of its head: 408 after that, however steadily bytes trickle.
    #: nginx's client_header_timeout is 60 s, as long as our idle timeout, which would leave a trickling client 60 s
    #: per connection slot; Apache's mod_reqtimeout starts at 20 s. A real client sends its head in one packet.
    header_timeout: float = 20.0
    #: HTTP/2: streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS, nginx's default); more are
    #: refused with RST_STREAM(REFUSED_STREAM). ``header_timeout`` is also how long every stream with something to
    #: send may wait on a window the client keeps shut.
    max_streams: int = 128


@dataclass(frozen=True)
class WebOptions:
    """Everything a connection needs, shared by all of them."""

    site: Site
    limits: HttpLimits = field(default_factory=HttpLimits)
    access_log: AccessLog | None = None
    clock: Callable[[], float] = time.time
    #: Requests already parsed, by their exact bytes (see :class:`Parsed`): shared by the connections of a process.
    memo: dict[bytes, Parsed] = field(default_factory=dict, compare=False, repr=False)
    #: The virtual hosts; None: ``site`` and ``access_log`` answer every name.
    hosts: Hosts | None = None

    def __post_init__(self) -> None:
        if self.hosts is None:
            object.__setattr__(self, "hosts", Hosts(VirtualHost(self.site, self.access_log)))


class State(enum.Enum):
    IDLE = "idle"  # between requests: nothing of the next one has arrived
    HEAD = "head"  # reading a request line and headers
    BODY = "body"  # headers read; reading (and dropping) a body
    CLOSING = "closing"  # the last answer is decided; whatever else arrives is ignored
    HTTP2 = "http/2"  # the client's first bytes were HTTP/2's preface: web/h2server.py has the connection

    __hash__ = object.__hash__  # members are singletons: identity hashing, in C (Enum's own runs Python code)


class Event(enum.Enum):
    BEGIN = "a request begins"
    HEADERS = "its headers end"
    COMPLETE = "it ends and the connection stays open"
    LAST = "it ends and so does the connection"
    FAIL = "the client broke the protocol"

    __hash__ = object.__hash__


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.IDLE, Event.BEGIN): State.HEAD,
    (State.HEAD, Event.HEADERS): State.BODY,
    (State.BODY, Event.COMPLETE): State.IDLE,
    (State.BODY, Event.LAST): State.CLOSING,
    (State.IDLE, Event.LAST): State.CLOSING,  # stop requested between requests
    (State.IDLE, Event.FAIL): State.CLOSING,
    (State.HEAD, Event.FAIL): State.CLOSING,
    (State.BODY, Event.FAIL): State.CLOSING,
}


# Module-level names for the states: on Python 3.11 every ``State.X`` runs a descriptor, and the hot path asks often.
IDLE, HEAD, BODY, CLOSING, HTTP2 = State.IDLE, State.HEAD, State.BODY, State.CLOSING, State.HTTP2
BEGIN, HEADERS, COMPLETE, LAST, FAIL = Event.BEGIN, Event.HEADERS, Event.COMPLETE, Event.LAST, Event.FAIL

#: Requests longer than this are not remembered in the memo; nor more than MEMO_ENTRIES of them (then it starts over).
MEMO_BYTES = 2048
MEMO_ENTRIES = 512


class Parsed(NamedTuple):
    """What httptools made of one whole request that arrived alone in one read, kept under its exact bytes.

    Parsing is deterministic: the same bytes, fed to a parser between two requests, produce the same callbacks. So
    when the same bytes arrive again between two requests -- as they do from a benchmark, a browser reloading, a
    health check -- the answer starts from this record instead of running the parser again. Only requests that
    parsed cleanly into a GET or HEAD of a valid path are remembered; everything else is parsed every time. A
    NamedTuple: one is made for every request parsed, and a tuple is the cheapest object to make.
    """

    method: str
    url: bytes
    version: str
    keep_alive: bool
    headers: tuple[tuple[bytes, bytes], ...]
    target: SitePath
    fields: dict[str, str]  # lower-case names, repeated fields joined: what the site reads
    key: tuple | None  # the site's cache key when the small-file fast lane applies (a plain GET), else None
    host: VirtualHost  # the virtual host the Host header named
    logged: str = ""  # for the fast lane's access-log line, the part from the request line to the status ...
    log_tail: str = ""  # ... and the part after the size (see accesslog.entry_parts)


#: HTTP/2's connection preface (RFC 9113 3.4), which no HTTP/1.1 request begins with.
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: Headers that make a GET more than "the file, please".
_NOT_PLAIN = frozenset(("range", "if-none-match", "if-modified-since", "if-range"))


class _Stop(Exception):
    """Raised from a parser callback to stop parsing: the connection's last answer has been given."""


class HttpServer(StreamProtocol):
    """One connection. The ``on_*`` methods are httptools' callbacks, not part of the engine contract."""

    results = Results("sockhop_http_requests", "HTTP requests answered, by status code", ("code",))

    # Starting values as class attributes: a connection sets only what it changes, so one that is answered from the
    # memo and closed (a new connection per request) costs little more than the object.
    parser: httptools.HttpRequestParser | None = None  # made when first needed: a memo hit needs none
    state = IDLE
    peer_host = "-"
    requests = 0
    stopping = False
    now = 0.0
    error: RemoteProtocolError | None = None
    # The first bytes of the current request, while we know where it started: llhttp rejects an unknown method
    # without saying what it was, and 501 (a method we do not know) differs from 400 (garbage).
    sample: bytes | None = b""
    # The bytes of the current request while it is still in its request line, when it began at the start of a read:
    # what is fed again, as HTTP/1.1, if its version turns out to be a later HTTP/1 minor.
    line: bytes | None = None
    bad_method: bytes | None = None  # llhttp refused the method: collecting it to tell 501 from 400
    deadline_for = -1  # the request (count of those before it) whose header deadline is armed; -1: none
    begun = 0  # requests begun during the current data_received (a memo candidate must be alone)
    failed = False
    peer_done = False  # a complete request said Connection: close: the connection may close without lingering
    candidate: Parsed | None = None
    # The current request (see _reset_request).
    url = b""
    headers: list[tuple[bytes, bytes]] | tuple[()] = ()
    head_bytes = 0
    body_bytes = 0
    fed_body = 0  # body bytes the parser found in the data being fed (a head may begin after them)
    method = ""
    version = "1.1"
    keep_alive = True
    asked_close = False  # Connection: close, or HTTP/1.0 without keep-alive (an upgrade ends keep-alive too)
    answer: Response | None = None  # decided at the end of the headers (405, 400...), else the file
    continued = False  # 100 Continue was sent for the current request
    host_field: bytes | None = None  # the current request's Host header, once its head is complete
    h2: Http2Server  # set when the connection turns out to be HTTP/2
    #: A subclass with a reverse proxy (web/proxy.py) answers some requests from an upstream.
    proxying: ClassVar[bool] = False
    current = None  # the proxy's exchange for the request being read

    def __init__(self, options: WebOptions) -> None:
        self.options = options
        self.limits = options.limits
        self.hosts = options.hosts
        self.site = options.site
        self.log = options.access_log
        self.clock = options.clock
        self.memo = options.memo
        self.out: list[bytes | FileRegion] = []
        self.log_lines: list[str] = []

    def _reset_request(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.body_bytes = 0
        self.method = ""
        self.version = "1.1"
        self.keep_alive = True
        self.asked_close = False
        self.answer = None
        self.continued = False

    def move(self, event: Event) -> None:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            state = self.state.name
            raise LocalProtocolError(f"can't handle event {event.name} ({event.value}) in state {state}") from None

    # -- the engine contract -------------------------------------------------------------------------------------
    def connection_made(self, peer: Address, local: Address) -> Reply:
        if isinstance(peer, tuple) and peer:
            self.peer_host = str(peer[0])
        return NOTHING

    def data_received(self, data: bytes) -> Reply | bytes:
        state = self.state
        if state is IDLE:
            hit = self.memo.get(data)
            if hit is not None and self.bad_method is None:
                return self._answer_parsed(hit)
            if not self.requests and data[:3] == b"PRI" and _PREFACE.startswith(data[:24]) and self.bad_method is None:
                return self._become_http2(data)
        elif state is HTTP2:
            return self.h2.data_received(data)
        elif state is CLOSING:
            return NOTHING
        self.now = self.clock()
        if self.bad_method is not None:
            self._collect_bad_method(data)
            return self._flush()
        if state is IDLE:
            self.sample = data[:32]
            self.line = data
        elif state is HEAD:
            if self.sample is not None and len(self.sample) < 32:
                self.sample += data[: 32 - len(self.sample)]
            if self.line is not None and len(self.line) <= self.limits.max_target + 64:
                self.line += data
        began_here = state is IDLE
        self.begun = 0
        self.fed_body = 0
        self.failed = False
        self.candidate = None
        parser = self.parser
        if parser is None:
            parser = self.parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The request was answered (with Connection: close); what follows is a protocol we do not speak --
            # unless a proxy tunnels it to an upstream that does.
            self.candidate = None
            if self.proxying and self.tunnelled_request(data[exc.args[0] :]):
                pass
            elif self.state is not CLOSING:
                self.move(LAST)
        except httptools.HttpParserInvalidMethodError:
            self._collect_bad_method(data)
        except httptools.HttpParserError as exc:
            if "HTTP version" in str(exc) and self.line is not None:
                later = _LATER_MINOR.match(self.line)
                if later is not None:  # HTTP/1.2 and on: answered as 1.1
                    return self._restart(later.group(1) + b"1" + self.line[later.end() :])
            cause = exc.__context__
            if isinstance(exc, httptools.HttpParserCallbackError) and not isinstance(
                cause, (_Stop, RemoteProtocolError)
            ):
                # Our own bug, not the client's: the engine logs it and drops the connection.
                raise (cause or exc) from None
            if self.state is not CLOSING or self.error is not None:
                self._fail(self.error or self._parser_error(exc))
        except RemoteProtocolError as exc:  # raised after parsing, from our own checks
            self._fail(exc)
        else:
            if self.state is HEAD:
                self._check_head_growth(data, began_here)
                if self.deadline_for != self.requests:  # a new request's head is under way: its clock starts now
                    self.deadline_for = self.requests
                    return self._flush()._replace(alarm=self.limits.header_timeout)
        if self.deadline_for >= 0 and self.state is not HEAD:  # the head is complete (or failed)
            self.deadline_for = -1
            return self._flush()._replace(alarm=0)
        if (
            self.candidate is not None
            and began_here
            and self.begun == 1
            and not self.failed
            and self.state is not HEAD
            and len(data) <= MEMO_BYTES
        ):
            memo = self.memo
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            memo[data] = self.candidate
        reply = self._flush()
        if reply.close and self.peer_done and not self.failed:
            return reply._replace(close=Close.AT_ONCE)
        return reply

    def _restart(self, data: bytes) -> Reply | bytes:
        """Parse the current request again from its first byte (its request line rewritten) with a fresh parser."""
        self.parser = None
        self.line = None
        self.state = IDLE
        self.sample = b""
        return self.data_received(data)

    def _answer_parsed(self, hit: Parsed) -> Reply | bytes:
        """A request seen before, byte for byte, arrived whole between two requests: answer it without the parser.
        A plain GET of a small cached file is one bytes object, answered as such (the engine's cheapest answer);
        anything else takes the general way."""
        self.now = now = self.clock()
        self.requests += 1
        last = not hit.keep_alive or self.stopping or self.requests >= self.limits.max_requests
        key = hit.key
        host = hit.host
        if key is not None:
            entry = host.site.fresh(key, now)
            if entry is not None and entry.data is not None:
                wire = entry.wire(now, last)
                log = host.log
                if log is not None:
                    log.add_parts(self.peer_host, now, hit.logged, entry.size, hit.log_tail)
                if self.on_result is not None:
                    self.on_result("200")
                if last:
                    self.move(LAST)
                    # The client asked to close and sent exactly this request: nothing more is coming.
                    return Reply((wire,), Close.LINGER if hit.keep_alive else Close.AT_ONCE)
                return wire
        self.method, self.url, self.version, self.keep_alive = hit.method, hit.url, hit.version, hit.keep_alive
        self.headers = list(hit.headers)
        self.answer = None
        self.site, self.log = host
        self.move(BEGIN)
        self.move(HEADERS)
        self._finish(self._respond(hit.target, hit.fields), last)
        reply = self._flush()
        if reply.close and not hit.keep_alive and not self.failed:
            return reply._replace(close=Close.AT_ONCE)
        return reply

    def _become_http2(self, data: bytes) -> Reply:
        """The client opened with HTTP/2's preface (after ALPN ``h2``, or h2c with prior knowledge): from now on the
        connection is HTTP/2's, the same handler behind it."""
        from sockhop.web.h2server import Http2Server

        self.h2 = Http2Server(self.options, self.peer_host, self.on_result)
        self.state = HTTP2
        return self.h2.data_received(data)

    def output_drained(self) -> Reply:
        return self.h2.output_drained() if self.state is HTTP2 else NOTHING

    def eof_received(self) -> Reply:
        if self.state is HTTP2:
            return self.h2.eof_received()
        return CLOSE

    def connection_lost(self) -> None:
        """A connection ending is a quiet moment: write the access-log lines still pending (this connection's last
        requests may be among them)."""
        if self.state is HTTP2:
            self.h2.connection_lost()
            return
        for log in self.hosts.all_logs:
            log.flush()

    def stop_requested(self) -> Reply:
        """Idle keep-alive connections close now; one in the middle of a request closes after answering it."""
        if self.state is HTTP2:
            return self.h2.stop_requested()
        if self.state is IDLE:
            self.move(LAST)
            return CLOSE
        self.stopping = True
        return NOTHING

    def timed_out(self) -> Reply:
        """Silent for the idle timeout: a half-sent request gets 408 (the slowloris defence); an idle keep-alive
        connection is simply closed."""
        if self.state is HTTP2:
            return self.h2.timed_out()
        if self.state in (HEAD, BODY) and self.bad_method is None:
            self.now = self.options.clock()
            self._fail(RemoteProtocolError("request timed out", hint=HTTPStatus.REQUEST_TIMEOUT))
            return self._flush()._replace(close=True)
        return CLOSE

    # -- httptools callbacks -------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.move(BEGIN)
        self.begun += 1
        self._reset_request()

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_target:
            self._raise(RemoteProtocolError("request target too long", hint=HTTPStatus.REQUEST_URI_TOO_LONG))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(name) + len(value) > self.limits.max_field or len(self.headers) > self.limits.max_headers:
            self._raise(RemoteProtocolError("header fields too large", hint=HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE))

    def on_headers_complete(self) -> None:
        self.move(HEADERS)
        self.line = None
        parser = self.parser
        self.version = parser.get_http_version()
        self.method = parser.get_method().decode("ascii", "replace")
        if self.version not in ("1.1", "1.0"):
            self._raise(RemoteProtocolError(f"HTTP/{self.version}", hint=HTTPStatus.HTTP_VERSION_NOT_SUPPORTED))
        self.asked_close = not parser.should_keep_alive()
        self.keep_alive = not self.asked_close and not parser.should_upgrade()
        hosts = 0
        host = None
        has_body = chunked = False
        length = 0
        expect = None
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"host":
                hosts += 1
                host = value
                if _HOST.fullmatch(value) is None:  # RFC 9112 3.2: 400 for an invalid Host
                    self._raise(RemoteProtocolError("invalid Host header", hint=HTTPStatus.BAD_REQUEST))
            elif lower == b"transfer-encoding":
                if self.version == "1.0":  # RFC 9112 6.1: faulty framing from a 1.0 client
                    self._raise(RemoteProtocolError("Transfer-Encoding in HTTP/1.0", hint=HTTPStatus.BAD_REQUEST))
                self._check_codings(value)
                has_body = chunked = True
            elif lower == b"content-length":
                length = int(value.strip() or 0)  # llhttp has checked it is digits, once, without Transfer-Encoding
                has_body = length > 0
            elif lower == b"expect":
                expect = value.strip().lower()
        if hosts > 1 or (hosts == 0 and self.version == "1.1"):
            self._raise(RemoteProtocolError("exactly one Host header is required", hint=HTTPStatus.BAD_REQUEST))
        if length > self.limits.max_body:  # known before a byte of it: refused at once, nothing read
            self._raise(RemoteProtocolError("request body too large", hint=HTTPStatus.REQUEST_ENTITY_TOO_LARGE))
        if expect is not None and self.version == "1.1" and expect != b"100-continue":  # 1.0's is ignored (RFC 9110)
            self._raise(RemoteProtocolError("unsupported expectation", hint=HTTPStatus.EXPECTATION_FAILED))
        waiting = expect is not None and self.version == "1.1" and (chunked or has_body)
        self.host_field = host
        if self.proxying and self._proxy(chunked, waiting):
            return
        answer = refused_method(self.method)
        if answer is not None:
            if self.method == "CONNECT" or (has_body and waiting):
                # The client waits for our word before sending the body; it will not be used, so say so now and
                # end the connection (RFC 9110 10.1.1) rather than read what nobody wants.
                answer.close = True
                self._emit(answer)
                self.move(LAST)
                raise _Stop
            self.answer = answer  # the body, if any, is read and dropped within max_body, then this answer
        elif waiting:
            self.out.append(CONTINUE)  # the body will be read: ask for it
            self.continued = True

    def _check_codings(self, value: bytes) -> None:
        """RFC 9112 6.1 and 6.3: chunked must be the final coding, once (else the body's end is unknown: 400); any
        other coding before it is one this server cannot decode (501, as nginx answers). Either way, close."""
        codings = [coding.strip().lower() for coding in value.split(b",")]
        if codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
            self._raise(RemoteProtocolError("chunked is not the final transfer coding", hint=HTTPStatus.BAD_REQUEST))
        if len(codings) > 1:
            self._raise(RemoteProtocolError("transfer coding not implemented", hint=HTTPStatus.NOT_IMPLEMENTED))

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        self.fed_body += len(body)
        if self.body_bytes > self.limits.max_body:
            self._raise(RemoteProtocolError("request body too large", hint=HTTPStatus.REQUEST_ENTITY_TOO_LARGE))

    def on_message_complete(self) -> None:
        self.requests += 1
        self.sample = None  # the next request starts somewhere inside this chunk
        response = self.answer
        if response is None:
            try:
                target = parse_target(self.url)
            except RemoteProtocolError as exc:
                response = error_response(exc.hint or HTTPStatus.BAD_REQUEST, str(exc), head=self.method == "HEAD")
            else:
                fields: dict[str, str] = {}
                for name, value in self.headers:
                    key = name.decode("latin-1").lower()
                    text = value.decode("latin-1")
                    fields[key] = f"{fields[key]}, {text}" if key in fields else text
                host = self.hosts.pick(fields.get("host"))
                self.site, self.log = host
                cache_key = self.site.cache_key(target, fields)
                response = self._respond(target, fields, cache_key)
                if (
                    self.begun == 1
                    and self.body_bytes == 0
                    and not self.continued
                    and (self.keep_alive or self.asked_close)
                ):  # no upgrade
                    plain = (
                        self.method == "GET"
                        and self.site.options.auth is None  # every request shows its credentials
                        and (self.version == "1.1" or not self.keep_alive)  # a 1.0 keep-alive needs its own header
                        and _NOT_PLAIN.isdisjoint(fields)
                    )
                    key = cache_key if plain else None
                    logged = log_tail = ""
                    if key is not None and self.log is not None:
                        logged, log_tail = entry_parts(self._request_line(), *_referer_agent(self.headers))
                        logged += " 200"
                    self.candidate = Parsed(
                        self.method,
                        self.url,
                        self.version,
                        self.keep_alive,
                        tuple(self.headers),
                        target,
                        fields,
                        key,
                        host,
                        logged,
                        log_tail,
                    )
        last = not self.keep_alive or self.stopping or self.requests >= self.limits.max_requests
        if self.asked_close:
            self.peer_done = True  # the client asked to close after this request, read to its end: no more input
        if self._finish(response, last):
            raise _Stop

    def _proxy(self, chunked: bool, waiting: bool) -> bool:
        """A proxy's say at the end of a request's head: True if an upstream answers it."""
        return False

    def tunnelled_request(self, rest: bytes) -> bool:
        """A proxy's say after an upgrade request: True if it tunnels what follows (``rest`` first)."""
        return False

    def _respond(self, target: SitePath, fields: dict[str, str], key: tuple | None = ()) -> Response:
        return respond(self.site, self.method, target, fields, self.now, key)

    def _finish(self, response: Response, last: bool) -> bool:
        """Queue the answer to a complete request and move on; True if it was the connection's last."""
        last = last or response.close
        response.close = last
        self._emit(response)
        self.move(LAST if last else COMPLETE)
        return last

    # -- answering -----------------------------------------------------------------------------------------------
    def _emit(self, response: Response) -> None:
        """Queue a response: status line and headers as one bytes object, then the body pieces."""
        # Connection: close when this is the last answer; keep-alive to a 1.0 client, which closes unless told.
        connection = "close" if response.close else "keep-alive" if self.version == "1.0" else None
        # HTTP/1.1 whatever the request's minor version, as RFC 9110 (6.2) asks and nginx and Apache do: a 1.0
        # client reads it as 1.0, and a plain GET then gets the same cached bytes whichever version asked.
        self.out.append(response_head(response.status, http_date(self.now), response.headers, connection))
        self.out.extend(response.body)
        if self.on_result is not None:
            self.on_result(str(int(response.status)))
        log = self.log
        if log is not None:
            referer, agent = _referer_agent(self.headers)
            line = format_entry(
                self.peer_host, self.now, self._request_line(), response.status, response.length, referer, agent
            )
            if log is self.options.access_log:
                self.log_lines.append(line)
            else:  # another virtual host's log
                log.add(line, self.now)

    def _request_line(self) -> str:
        return f"{self.method} {self.url.decode('latin-1')} HTTP/{self.version}" if self.method else "-"

    def _flush(self) -> Reply:
        """Everything queued during one event, consecutive bytes joined so they leave in one send."""
        out = self.out
        if self.log_lines:
            assert self.options.access_log is not None
            self.options.access_log.write(self.log_lines, self.now)
            self.log_lines = []
        close = self.state is CLOSING
        if not out:
            return CLOSE if close else NOTHING
        self.out = []
        pieces: list[bytes | FileRegion] = []
        run: list[bytes] = []
        for piece in out:
            if isinstance(piece, FileRegion):
                if run:
                    pieces.append(b"".join(run))
                    run = []
                pieces.append(piece)
            else:
                run.append(piece)
        if run:
            pieces.append(b"".join(run))
        return Reply(tuple(pieces), close)

    # -- errors --------------------------------------------------------------------------------------------------
    def _raise(self, exc: RemoteProtocolError) -> None:
        """Raise from inside a parser callback, remembering the error (httptools wraps what callbacks raise)."""
        self.error = exc
        raise exc

    def _fail(self, exc: RemoteProtocolError) -> None:
        """Answer a broken request with its status and close."""
        self.error = None
        self.failed = True
        self.keep_alive = False
        answer = error_response(exc.hint or HTTPStatus.BAD_REQUEST, str(exc), close=True)
        self._emit(answer)
        if self.state is not CLOSING:
            self.move(FAIL)

    def _parser_error(self, exc: httptools.HttpParserError) -> RemoteProtocolError:
        message = str(exc) or "malformed request"
        if "HTTP version" in message:
            return RemoteProtocolError(message, hint=HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
        return RemoteProtocolError(message, hint=HTTPStatus.BAD_REQUEST)

    def _collect_bad_method(self, data: bytes | None) -> None:
        """llhttp refused the method. A well-formed token followed by a space is a method we do not implement
        (501); anything else is garbage (400). The token may arrive a byte at a time, so collect up to 32 bytes."""
        if data is None or self.sample is None:
            self._fail(RemoteProtocolError("malformed request line", hint=HTTPStatus.BAD_REQUEST))
            return
        if self.bad_method is None:
            self.bad_method = self.sample
            if self.state is IDLE:
                self.move(BEGIN)
        else:
            self.bad_method += data[:33]
        sample = self.bad_method
        if _METHOD_SP.match(sample):
            self.bad_method = None
            self._fail(RemoteProtocolError("method not implemented", hint=HTTPStatus.NOT_IMPLEMENTED))
        elif len(sample) > 32 or _METHOD.fullmatch(sample) is None:
            self.bad_method = None
            self._fail(RemoteProtocolError("malformed request line", hint=HTTPStatus.BAD_REQUEST))

    def _check_head_growth(self, data: bytes, began_here: bool) -> None:
        """Bound the bytes of an unfinished request head, which llhttp and httptools buffer without limit (a
        header value arrives in one callback only when complete)."""
        if began_here or self.head_bytes == 0:
            # The head under way began in this data: after its last blank line, and after the bodies in it (a
            # request's body and the next request's head can share a read, as a client sends them back to back)
            end = data.rfind(b"\r\n\r\n")
            self.head_bytes = min(len(data) - end - 4 if end >= 0 else len(data), len(data) - self.fed_body)
        else:
            self.head_bytes += len(data)
        if self.head_bytes > self.limits.max_head:
            if self.parser.get_http_version() == "0.0":  # still in the request line
                self._fail(RemoteProtocolError("request target too long", hint=HTTPStatus.REQUEST_URI_TOO_LONG))
            else:
                self._fail(
                    RemoteProtocolError("header fields too large", hint=HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
                )


def _referer_agent(headers) -> tuple[str | None, str | None]:
    """Referer and User-Agent, for the access log."""
    referer = agent = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"referer":
            referer = value.decode("latin-1")
        elif lower == b"user-agent":
            agent = value.decode("latin-1")
    return referer, agent


def make_factory(options: WebOptions) -> Callable[[], HttpServer]:
    """What a :class:`Listener` calls once per connection."""

    def factory() -> HttpServer:
        return HttpServer(options)

    return factory


#: The interim answer to ``Expect: 100-continue`` when the body will be read.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

#: What a client over the connection limit is told.
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\nServer is too busy.\n"
)
