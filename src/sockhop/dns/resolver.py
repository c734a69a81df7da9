"""A stub resolver: ask one name server one question, the way dig does, and the API the mail client uses.

The query goes out over UDP from a port the kernel picks at random, with a random ID. Only a reply that comes from
the server asked, carries that ID and echoes the question is accepted -- anything else is someone guessing (or
an old reply) and is ignored while the wait goes on. No reply within ``timeout``: ask again, ``tries`` times per
server, then the next server. A reply with TC set did not fit a datagram: ask again over TCP.

    >>> resolve("sockhop.test", "MX", server=("127.0.0.1", 5353))      # doctest: +SKIP
    [<DNS IN MX rdata: 10 mail.sockhop.test.>]

dnspython encodes and decodes the messages; the sockets are ours.
"""

from __future__ import annotations

import dataclasses
import secrets
import select
import socket
import ssl
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from sockhop.errors import AddressError, SockhopError, UsageError
from sockhop.net.addresses import check_host, format_address
from sockhop.tlsclient import CACertError, client_context, describe_certificate_error

Rcode = dns.rcode.Rcode
RESOLV_CONF = Path("/etc/resolv.conf")
DNS_PORT = 53
DOT_PORT = 853  # DNS over TLS, RFC 7858
UDP_RECEIVE = 65535
EDNS_PAYLOAD = 1232

#: Where to ask: ``("127.0.0.1", 5353)``, ``"127.0.0.1"``, ``"127.0.0.1:5353"``, ``"[::1]:5353"``, a host name,
#: a list of those, or None for the nameservers of /etc/resolv.conf.
ServerSpec = tuple[str, int] | str | Sequence[tuple[str, int] | str] | None


# -- errors ---------------------------------------------------------------------------------------------------------
class ResolveError(SockhopError):
    """The question could not be answered."""


class NoSuchName(ResolveError):
    """No such name (NXDOMAIN)."""


class Refused(ResolveError):
    """The server refused to answer (REFUSED)."""


class ServerFailure(ResolveError):
    """The server failed to answer."""


class Timeout(ResolveError):
    """No reply from the server."""


class MalformedReply(ResolveError):
    """The server's reply could not be read."""


class BadQuestion(ResolveError):
    """That is not a question that can be asked."""


class CertificateError(ResolveError):
    """DNS over TLS: the server's certificate was not trusted (untrusted issuer, wrong name, expired)."""


# -- what comes back ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    """One reply, accepted: the message, who sent it, how, and how long it took."""

    message: dns.message.Message
    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType
    server: tuple[str, int]
    transport: str  # "udp", "tcp" or "tls"
    elapsed: float  # seconds
    size: int  # bytes received
    server_name: str = ""  # the server as it was named (after @), which dig shows beside its address

    def records(self) -> list[dns.rdata.Rdata]:
        """The data asked for: the RRsets of the asked type at the end of any CNAME chain in the answer."""
        name = self.name
        answer = self.message.answer
        for _ in range(len(answer)):
            if self.rdtype == dns.rdatatype.CNAME:
                break
            cname = self.message.get_rrset(answer, name, dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None:
                break
            name = cname[0].target
        if self.rdtype == dns.rdatatype.ANY:
            return [rdata for rrset in self.message.answer if rrset.name == name for rdata in rrset]
        found = self.message.get_rrset(self.message.answer, name, dns.rdataclass.IN, self.rdtype)
        return list(found) if found is not None else []


# -- the API --------------------------------------------------------------------------------------------------------
def resolve(
    name: str | dns.name.Name,
    rdtype: str | int = "A",
    server: ServerSpec = None,
    *,
    tcp: bool = False,
    tls: bool = False,
    cacert: str | None = None,
    insecure: bool = False,
    timeout: float = 2.0,
    tries: int = 3,
) -> list[dns.rdata.Rdata]:
    """The records of type ``rdtype`` for ``name``, CNAMEs followed: for MX, each has ``.preference`` and
    ``.exchange``; for A/AAAA, ``.address``; ``str(record)`` is the zone-file text. An empty list means the name
    exists without such records (NODATA).

    ``tls=True`` asks over DNS over TLS (RFC 7858; port 853 unless the server names another): the certificate must
    be trusted by the system's store (or by ``cacert``, a PEM file) and be for the server's name or address as
    given (``insecure=True`` skips the check, with a warning).

    Raises:
        NoSuchName: NXDOMAIN.
        Refused / ServerFailure: the server would not or could not answer.
        Timeout: no server replied.
        MalformedReply: a reply came but could not be read.
        BadQuestion: ``name`` or ``rdtype`` cannot be asked.
        CertificateError: with ``tls``, the server's certificate is not trusted for its name.
    """
    return query(
        name, rdtype, server, tcp=tcp, tls=tls, cacert=cacert, insecure=insecure, timeout=timeout, tries=tries
    ).records()


def query(
    name: str | dns.name.Name,
    rdtype: str | int = "A",
    server: ServerSpec = None,
    *,
    tcp: bool = False,
    tls: bool = False,
    cacert: str | None = None,
    insecure: bool = False,
    timeout: float = 2.0,
    tries: int = 3,
    port: int | None = None,
    recurse: bool = True,
    dnssec: bool = False,
    edns: bool = True,
    payload: int = EDNS_PAYLOAD,
    context: ssl.SSLContext | None = None,
    rcode_errors: bool = True,
) -> Result:
    """Ask the question and return the accepted reply. Raises as :func:`resolve` does (NXDOMAIN included), unless
    ``rcode_errors`` is false: then a reply with an error rcode is returned as it came, as dig shows it.

    ``port`` is the port of servers given without one; ``recurse`` sets RD, ``dnssec`` the DO bit (with EDNS),
    ``edns`` whether an OPT record goes out at all; ``context``, a client TLS context already made (used for
    ``tls`` instead of one from ``cacert``/``insecure``, so several questions warn about ``-k`` once)."""
    qname, qtype = question(name, rdtype)
    shape = Shape(recurse=recurse, dnssec=dnssec, edns=edns, payload=payload)
    if tls and context is None:
        context = tls_context(cacert, insecure)
    servers = server_targets(server, port or (DOT_PORT if tls else DNS_PORT))
    last: ResolveError = Timeout()
    for address, server_name in servers:
        try:
            if tls:
                assert context is not None
                started = time.monotonic()
                reply, size = ask_tls(shape.make(qname, qtype), address, server_name, context, timeout)
                result = Result(reply, qname, qtype, address, "tls", time.monotonic() - started, size, server_name)
            else:
                result = ask(qname, qtype, address, tcp=tcp, timeout=timeout, tries=tries, shape=shape)
                result = dataclasses.replace(result, server_name=server_name)
        except (Timeout, MalformedReply) as exc:
            last = exc
            continue
        if rcode_errors:
            check(result)
        return result
    raise last


def question(name: str | dns.name.Name, rdtype: str | int) -> tuple[dns.name.Name, dns.rdatatype.RdataType]:
    try:
        qname = name if isinstance(name, dns.name.Name) else dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise BadQuestion(f"{name!r} is not a domain name: {exc}") from None
    try:
        qtype = dns.rdatatype.RdataType.make(rdtype)
    except (dns.exception.DNSException, ValueError):
        raise BadQuestion(f"unknown record type {rdtype!r} (such as A, AAAA, MX, TXT, NS, SOA)") from None
    return qname, qtype


def check(result: Result) -> None:
    """Turn an error rcode into the matching exception, naming the question and the server."""
    rcode = result.message.rcode()
    where = f"{result.name} {dns.rdatatype.to_text(result.rdtype)} from {format_server(result.server)}"
    if rcode == Rcode.NXDOMAIN:
        raise NoSuchName(f"{result.name}: no such name (NXDOMAIN from {format_server(result.server)})")
    if rcode == Rcode.REFUSED:
        raise Refused(f"{where}: the server refused to answer (REFUSED): it is not authoritative for that name")
    if rcode != Rcode.NOERROR:
        raise ServerFailure(f"{where}: the server could not answer ({dns.rcode.to_text(rcode)})")


# -- one server -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """How a query is made: RD (dig's +[no]recurse), EDNS with its payload size (+[no]edns, +bufsize) and DO
    (+dnssec)."""

    recurse: bool = True
    dnssec: bool = False
    edns: bool = True
    payload: int = EDNS_PAYLOAD

    def make(self, qname: dns.name.Name, qtype: int) -> dns.message.QueryMessage:
        """A new query with a random ID."""
        edns = 0 if self.edns or self.dnssec else -1
        message = dns.message.make_query(
            qname, qtype, use_edns=edns, payload=self.payload, want_dnssec=self.dnssec, id=secrets.randbelow(65536)
        )
        message.flags = (message.flags | dns.flags.RD) if self.recurse else (message.flags & ~dns.flags.RD)
        return message


def make_query(qname: dns.name.Name, qtype: int) -> dns.message.QueryMessage:
    return Shape().make(qname, qtype)


def ask(
    qname: dns.name.Name, qtype: int, server: tuple[str, int], *, tcp: bool, timeout: float, tries: int,
    shape: Shape = Shape(),
) -> Result:  # fmt: skip
    """One question to one server: UDP with retries (then TCP if truncated), or TCP alone."""
    started = time.monotonic()
    if not tcp:
        message = shape.make(qname, qtype)
        reply, size = ask_udp(message, server, timeout, tries)
        if not reply.flags & dns.flags.TC:
            return Result(reply, qname, qtype, server, "udp", time.monotonic() - started, size)
    message = shape.make(qname, qtype)
    reply, size = ask_tcp(message, server, timeout)
    return Result(reply, qname, qtype, server, "tcp", time.monotonic() - started, size)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def ask_udp(
    message: dns.message.Message, server: tuple[str, int], timeout: float, tries: int
) -> tuple[dns.message.Message, int]:
    """Send over UDP from a random port and wait for the matching reply; ask again on silence.

    The socket is connected: the kernel then drops datagrams from anyone but the server, and reports the ICMP
    "port unreachable" of a port where nothing listens as ECONNREFUSED -- said at once, not after every try."""
    wire = message.to_wire()
    malformed = False
    with socket.socket(_family(server[0]), socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            sock.connect(server)  # binds a random ephemeral port, as bind(0) would
        except OSError as exc:
            raise Timeout(f"cannot send to {format_server(server)}: {exc.strerror or exc}") from None
        for _ in range(tries):
            try:
                sock.send(wire)
            except ConnectionRefusedError:
                raise refused(server, "udp") from None
            except OSError as exc:
                raise Timeout(f"cannot send to {format_server(server)}: {exc.strerror or exc}") from None
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                try:
                    data, source = sock.recvfrom(UDP_RECEIVE)
                except ConnectionRefusedError:
                    raise refused(server, "udp") from None
                except OSError:  # EAGAIN, EINTR, another ICMP error: wait on
                    continue
                if not same_address(source, server):
                    continue  # not the server asked: ignore
                reply = parse_reply(message, data)
                if reply is None:
                    malformed = malformed or data[:2] == wire[:2]
                    continue
                return reply, len(data)
    if malformed:
        raise MalformedReply(f"{format_server(server)} sent a reply that could not be read")
    raise Timeout(f"no reply from {format_server(server)} (timed out after {tries} tries of {timeout:g}s)")


def refused(server: tuple[str, int], transport: str) -> Timeout:
    """Nothing listens there: a Timeout (no reply will come), said as what it is."""
    return Timeout(f"connection refused: nothing answers on {format_server(server)}/{transport}")


def ask_tcp(message: dns.message.Message, server: tuple[str, int], timeout: float) -> tuple[dns.message.Message, int]:
    return _ask_stream(message, server, timeout, "TCP", lambda sock: sock)


def ask_tls(
    message: dns.message.Message, server: tuple[str, int], server_name: str, context: ssl.SSLContext, timeout: float
) -> tuple[dns.message.Message, int]:
    """DNS over TLS (RFC 7858): TCP's framing inside TLS; the certificate checked against ``server_name``."""
    return _ask_stream(
        message, server, timeout, "TLS", lambda sock: context.wrap_socket(sock, server_hostname=server_name)
    )


def _ask_stream(message, server, timeout, how, wrap) -> tuple[dns.message.Message, int]:
    wire = message.to_wire()
    handshake = how == "TLS"
    try:
        with socket.create_connection(server, timeout=timeout) as raw, wrap(raw) as sock:
            handshake = False
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            (size,) = struct.unpack("!H", recv_exactly(sock, 2))
            data = recv_exactly(sock, size)
    except TimeoutError:
        if handshake:
            raise Timeout(
                f"{format_server(server)}: no TLS handshake within {timeout:g}s (is it a DNS-over-TLS port?)"
            ) from None
        raise Timeout(f"no reply from {format_server(server)} over {how} (timed out after {timeout:g}s)") from None
    except ConnectionRefusedError:
        raise refused(server, "tcp") from None
    except ssl.SSLCertVerificationError as exc:
        raise CertificateError(f"{format_server(server)}: {describe_certificate_error(exc)}") from None
    except ssl.SSLError as exc:
        raise Timeout(f"{format_server(server)} over TLS: {exc.reason or exc} (is it a DNS-over-TLS port?)") from None
    except OSError as exc:
        raise Timeout(f"{format_server(server)} over {how}: {exc.strerror or exc}") from None
    reply = parse_reply(message, data)
    if reply is None:
        raise MalformedReply(f"{format_server(server)} sent a reply over {how} that could not be read")
    return reply, len(data)


def tls_context(cacert: str | None, insecure: bool = False) -> ssl.SSLContext:
    """sockhop's client context (the system's trust store, or only ``cacert``; names checked; TLS 1.2 at least;
    ALPN ``dot``, as kdig offers), a ``cacert`` that cannot be used being a BadQuestion like any bad argument."""
    try:
        return client_context(cacert, insecure=insecure, alpn=("dot",))
    except CACertError as exc:
        raise BadQuestion(str(exc)) from None


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            raise MalformedReply("the server closed the connection in the middle of a reply")
        chunks += chunk
    return bytes(chunks)


def parse_reply(message: dns.message.Message, data: bytes) -> dns.message.Message | None:
    """The reply if it answers ``message`` (same ID, QR set, same question), else None."""
    if len(data) < 12 or data[:2] != message.to_wire()[:2]:
        return None
    try:
        reply = dns.message.from_wire(data)
    except Exception:  # garbage raises many kinds
        return None
    if not message.is_response(reply):
        return None
    return reply


def same_address(source: tuple, server: tuple[str, int]) -> bool:
    return source[1] == server[1] and source[0].split("%")[0] == server[0]


# -- where to ask ---------------------------------------------------------------------------------------------------
def server_addresses(server: ServerSpec, default_port: int = DNS_PORT) -> list[tuple[str, int]]:
    return [address for address, _ in server_targets(server, default_port)]


def server_targets(server: ServerSpec, default_port: int = DNS_PORT) -> list[tuple[tuple[str, int], str]]:
    """Each server to ask as (address, the name it was given by) -- the name is what a TLS certificate must match."""
    if server is None:
        return [((host, default_port), host) for host in nameservers()]
    if isinstance(server, tuple) and len(server) == 2 and isinstance(server[1], int):
        return [((resolve_host(server[0]), server[1]), server[0])]
    if isinstance(server, str):
        host, port = split_server(server, default_port)
        return [((resolve_host(host), port), host)]
    return [target for one in server for target in server_targets(one, default_port)]  # type: ignore[union-attr]


def parse_server(text: str, default_port: int = DNS_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``v6addr`` or ``[v6addr]:port`` (a leading @ allowed, as dig writes it)."""
    host, port = split_server(text, default_port)
    return resolve_host(host), port


def split_server(text: str, default_port: int = DNS_PORT) -> tuple[str, int]:
    """The host as written and the port of a server spec."""
    text = text.removeprefix("@")
    port = default_port
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed:
            raise BadQuestion(f"bad server {text!r}: the IPv6 address needs its closing ], as [::1]:53")
        if ":" not in host:
            raise BadQuestion(f"bad server {text!r}: brackets are for IPv6 addresses, as [::1]:53")
        if rest:
            port = parse_port(rest.removeprefix(":"), text)
    elif text.count(":") == 1:
        host, _, rest = text.partition(":")
        port = parse_port(rest, text)
    else:
        host = text
    return host, port


def parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise BadQuestion(f"bad server {whole!r}: the port must be a number from 1 to 65535")
    return int(text)


def resolve_host(host: str) -> str:
    """A server given by name becomes its first address (the system's resolver finds it, not this one)."""
    if not host:
        raise BadQuestion("no server given after @")
    try:
        check_host(host)  # a malformed name is one line here, and no query for it leaves the machine
    except AddressError as exc:
        raise BadQuestion(f"bad server: {exc}") from None
    try:
        infos = socket.getaddrinfo(host, DNS_PORT, socket.AF_UNSPEC, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise BadQuestion(f"unknown server {host!r}: {exc.strerror}") from None
    return str(infos[0][4][0])


def nameservers(path: Path = RESOLV_CONF) -> list[str]:
    """The ``nameserver`` lines of resolv.conf; none (or no file): 127.0.0.1, as resolv.conf(5) says."""
    found: list[str] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            found.append(words[1].split("%")[0])
    return found or ["127.0.0.1"]


def format_server(server: tuple[str, int]) -> str:
    return format_address(server)


# -- the command line's view: dig's -------------------------------------------------------------------------------
@dataclass
class Display:
    """Which parts of a reply dig prints: ``+[no]cmd``, ``+[no]comments``, ``+[no]question``, ... (``+noall``
    turns every one off, so ``+noall +answer`` prints only the answer's records)."""

    cmd: bool = True
    comments: bool = True
    question: bool = True
    answer: bool = True
    authority: bool = True
    additional: bool = True
    stats: bool = True


@dataclass
class Lookup:
    """What a dig-style command line asks: each question in turn, of the same servers, the same way."""

    questions: list[tuple[str, str]] = field(default_factory=list)  # (name, type), in the order given
    servers: list[str] = field(default_factory=list)  # as written after @; none: /etc/resolv.conf's
    port: int | None = None  # -p: the port of servers written without one
    short: bool = False
    tcp: bool = False
    tls: bool = False
    recurse: bool = True
    dnssec: bool = False
    edns: bool = True
    payload: int = EDNS_PAYLOAD
    timeout: float | None = None  # +time=, else the command's --timeout
    tries: int | None = None  # +tries= / +retry=, else --tries
    display: Display = field(default_factory=Display)


#: dig's +options sockhop knows (each may be shortened to a unique prefix and negated with "no", as in dig).
SWITCHES = ("short", "tcp", "vc", "tls", "recurse", "dnssec", "edns", "all", *vars(Display()))
VALUED = ("time", "tries", "retry", "bufsize")
DASH_OPTIONS = ("-x", "-t", "-q", "-p", "-c")  # each takes a value: -x ADDR, -t TYPE, -q NAME, -p PORT, -c CLASS


def parse_words(words: Sequence[str]) -> Lookup:
    """dig's command line, in dig's order: names, types, @servers, +options and -x/-t/-q/-p/-c in any order.

    A type after a name is that name's; before every name, it is every name's default (as ``-t`` is). ``-x ADDR``
    asks the PTR of ADDR's in-addr.arpa / ip6.arpa name. Several names are asked in turn."""
    lookup = Lookup()
    asked: list[list] = []  # [name, type or None, reverse?]
    default_type: str | None = None
    tokens = iter(words)
    for word in tokens:
        if word.startswith("@"):
            lookup.servers.append(word)
        elif word.startswith("+"):
            plus_option(lookup, word)
        elif word[:2] in DASH_OPTIONS:
            flag, value = word[:2], word[2:] or next(tokens, None)
            if not value:
                raise UsageError(f"{flag} needs a value")
            if flag == "-x":
                asked.append([reverse_name(value), None, True])
            elif flag == "-q":
                asked.append([value, None, False])
            elif flag == "-p":
                lookup.port = parse_port(value, f"-p {value}")
            elif flag == "-c":
                check_class(value)
            elif not is_type(value):
                raise BadQuestion(f"unknown record type {value!r} (such as A, AAAA, MX, TXT, NS, SOA)")
            elif asked:
                asked[-1][1] = value.upper()
            else:
                default_type = value.upper()
        elif word.startswith("-") and len(word) > 1:
            raise UsageError(f"unknown option {word!r}")
        elif is_type(word):  # as dig: a word that names a type is one
            if asked:
                asked[-1][1] = word.upper()
            else:
                default_type = word.upper()
        elif is_class(word):
            check_class(word)
        else:
            asked.append([word, None, False])
    if not asked:
        raise BadQuestion("give a NAME to look up (or -x ADDRESS)")
    lookup.questions = [
        (name, rdtype or default_type or ("PTR" if reverse else "A")) for name, rdtype, reverse in asked
    ]
    for name, rdtype in lookup.questions:
        question(name, rdtype)  # every mistake before the first question goes out
    return lookup


def plus_option(lookup: Lookup, word: str) -> None:
    """One of dig's +options: ``+short``, ``+norec``, ``+time=1``... (a unique prefix will do, as in dig)."""
    text, _, value = word[1:].partition("=")
    text = text.lower()
    negated = text.startswith("no") and text not in SWITCHES
    key = text[2:] if negated else text
    known = SWITCHES if not value else VALUED
    matches = [k for k in (*SWITCHES, *VALUED) if k == key] or [k for k in known if key and k.startswith(key)]
    if len(matches) != 1:
        raise UsageError(f"unknown or unsupported option {word!r}")
    (key,) = matches
    if key in VALUED:
        if negated or not value.isdigit():
            raise UsageError(f"{word!r}: give +{key}=N")
        number = int(value)
        if key == "time":
            lookup.timeout = float(max(number, 1))
        elif key == "tries":
            lookup.tries = max(number, 1)
        elif key == "retry":
            lookup.tries = number + 1
        else:
            lookup.payload = min(number, 65535)
        return
    if value:
        raise UsageError(f"{word!r} takes no value")
    on = not negated
    if key == "all":
        lookup.display = Display(*(on,) * len(vars(Display())))
    elif key in vars(lookup.display):
        setattr(lookup.display, key, on)
    else:
        setattr(lookup, {"vc": "tcp"}.get(key, key), on)


def reverse_name(address: str) -> str:
    """``-x``: the in-addr.arpa (or ip6.arpa) name of an address."""
    try:
        return dns.reversename.from_address(address).to_text()
    except (dns.exception.DNSException, ValueError):
        raise BadQuestion(f"-x {address}: not an IPv4 or IPv6 address") from None


def check_class(word: str) -> None:
    if word.upper() != "IN":
        raise BadQuestion(f"class {word}: sockhop asks only class IN")


def is_type(word: str) -> bool:
    try:
        dns.rdatatype.from_text(word)
    except (dns.exception.DNSException, ValueError):
        return False
    return True


def is_class(word: str) -> bool:
    try:
        dns.rdataclass.from_text(word)
    except (dns.exception.DNSException, ValueError):
        return False
    return True


def format_short(result: Result) -> str:
    """dig +short: the data of every answer record, one per line (nothing for NXDOMAIN or NODATA)."""
    return "\n".join(rdata.to_text() for rrset in result.message.answer for rdata in rrset)


COLUMNS = (24, 32, 40, 48)  # where dig starts TTL, class, type and data


def columns(fields: Sequence[str]) -> str:
    """Fields at dig's tab stops (at least one tab between two)."""
    out, at = fields[0], len(fields[0])
    for to, text in zip(COLUMNS, fields[1:], strict=False):
        tabs = max(1, to // 8 - at // 8)
        out += "\t" * tabs + text
        at = (at // 8 + tabs) * 8 + len(text)
    return out


def record_lines(rrset: dns.rrset.RRset) -> list[str]:
    return [columns(line.split(" ", 4)) for line in rrset.to_text().splitlines()]


def format_dig(result: Result, display: Display | None = None) -> str:
    """dig's sections: header, question, answer, authority, additional, and the statistics -- for NXDOMAIN and
    REFUSED too, as dig shows them. ``display`` leaves parts out, as dig's +noall, +noquestion... do."""
    show = display or Display()
    msg = result.message
    lines: list[str] = []
    if show.cmd:
        server = format_server(result.server)
        lines += ["", f"; <<>> sockhop resolve <<>> {result.name} {dns.rdatatype.to_text(result.rdtype)} @{server}"]
    if show.comments:
        flags = dns.flags.to_text(msg.flags).lower()
        lines += [
            ";; Got answer:",
            f";; ->>HEADER<<- opcode: QUERY, status: {dns.rcode.to_text(msg.rcode())}, id: {msg.id}",
            f";; flags: {flags}; QUERY: {len(msg.question)}, ANSWER: {count(msg.answer)}, "
            f"AUTHORITY: {count(msg.authority)}, ADDITIONAL: {count(msg.additional) + (msg.edns >= 0)}",  # OPT too
        ]
        if msg.flags & dns.flags.RD and not msg.flags & dns.flags.RA:
            lines.append(";; WARNING: recursion requested but not available")
        lines.append("")
        if msg.edns >= 0:
            edns_flags = "".join(f" {flag.lower()}" for flag in dns.flags.edns_to_text(msg.ednsflags).split())
            lines += [";; OPT PSEUDOSECTION:", f"; EDNS: version: {msg.edns}, flags:{edns_flags}; udp: {msg.payload}"]
    if show.question:
        lines += [";; QUESTION SECTION:"] if show.comments else []
        for q in msg.question:
            fields = [f";{q.name}", "", dns.rdataclass.to_text(q.rdclass), dns.rdatatype.to_text(q.rdtype)]
            lines.append(columns(fields))
        lines += [""] if show.comments else []
    sections = (("ANSWER", msg.answer), ("AUTHORITY", msg.authority), ("ADDITIONAL", msg.additional))
    for title, section in sections:
        if section and getattr(show, title.lower()):
            lines += [f";; {title} SECTION:"] if show.comments else []
            lines += [line for rrset in section for line in record_lines(rrset)]
            lines += [""] if show.comments else []
    if show.stats:
        host, port = result.server
        lines += [
            f";; Query time: {result.elapsed * 1000:.0f} msec",
            f";; SERVER: {host}#{port}({result.server_name or host}) ({result.transport.upper()})",
            f";; WHEN: {time.strftime('%a %b %d %H:%M:%S %Z %Y')}",
            f";; MSG SIZE  rcvd: {result.size}",
            "",
        ]
    return "\n".join(lines)


def count(section: list[dns.rrset.RRset]) -> int:
    return sum(len(rrset) for rrset in section)
