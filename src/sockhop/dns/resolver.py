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

import secrets
import select
import socket
import ssl
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from sockhop.errors import AddressError, SockhopError
from sockhop.net.addresses import check_host
from sockhop.tlsclient import client_context, describe_certificate_error

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
) -> Result:
    """Ask the question and return the accepted reply. Raises as :func:`resolve` does (NXDOMAIN included)."""
    qname, qtype = question(name, rdtype)
    context = tls_context(cacert, insecure) if tls else None
    servers = server_targets(server, DOT_PORT if tls else DNS_PORT)
    last: ResolveError = Timeout()
    for address, server_name in servers:
        try:
            if context is not None:
                started = time.monotonic()
                reply, size = ask_tls(make_query(qname, qtype), address, server_name, context, timeout)
                result = Result(reply, qname, qtype, address, "tls", time.monotonic() - started, size)
            else:
                result = ask(qname, qtype, address, tcp=tcp, timeout=timeout, tries=tries)
        except (Timeout, MalformedReply) as exc:
            last = exc
            continue
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
def make_query(qname: dns.name.Name, qtype: int) -> dns.message.QueryMessage:
    message = dns.message.make_query(qname, qtype, use_edns=0, payload=EDNS_PAYLOAD, id=secrets.randbelow(65536))
    message.flags |= dns.flags.RD
    return message


def ask(qname: dns.name.Name, qtype: int, server: tuple[str, int], *, tcp: bool, timeout: float, tries: int) -> Result:
    """One question to one server: UDP with retries (then TCP if truncated), or TCP alone."""
    started = time.monotonic()
    if not tcp:
        message = make_query(qname, qtype)
        reply, size = ask_udp(message, server, timeout, tries)
        if not reply.flags & dns.flags.TC:
            return Result(reply, qname, qtype, server, "udp", time.monotonic() - started, size)
    message = make_query(qname, qtype)
    reply, size = ask_tcp(message, server, timeout)
    return Result(reply, qname, qtype, server, "tcp", time.monotonic() - started, size)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def ask_udp(
    message: dns.message.Message, server: tuple[str, int], timeout: float, tries: int
) -> tuple[dns.message.Message, int]:
    """Send over UDP from a random port and wait for the matching reply; ask again on silence."""
    wire = message.to_wire()
    malformed = False
    with socket.socket(_family(server[0]), socket.SOCK_DGRAM) as sock:
        sock.bind(("::" if sock.family == socket.AF_INET6 else "0.0.0.0", 0))  # a random ephemeral port
        sock.setblocking(False)
        for _ in range(tries):
            try:
                sock.sendto(wire, server)
            except OSError as exc:
                raise Timeout(f"cannot send to {format_server(server)}: {exc.strerror}") from None
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                try:
                    data, source = sock.recvfrom(UDP_RECEIVE)
                except ConnectionRefusedError:
                    raise Timeout(f"{format_server(server)}: connection refused (no server on that port)") from None
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
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
        raise Timeout(f"{format_server(server)}: connection refused (nothing listens on TCP there)") from None
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
    """sockhop's client context (the system's trust store, or only ``cacert``; names checked; TLS 1.2 at least),
    with a missing or unreadable ``cacert`` said in one line."""
    try:
        return client_context(cacert, insecure=insecure)
    except FileNotFoundError:
        raise BadQuestion(f"cannot read {cacert}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise BadQuestion(f"cannot use {cacert} as CA certificates: {getattr(exc, 'reason', None) or exc}") from None


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
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the command line's view ----------------------------------------------------------------------------------------
def parse_words(words: Sequence[str]) -> tuple[str, str, str | None]:
    """dig's argument order, loosely: NAME [TYPE] [@SERVER[:PORT]], in any order."""
    name: str | None = None
    rdtype: str | None = None
    server: str | None = None
    for word in words:
        if word.startswith("@"):
            if server is not None:
                raise BadQuestion("give one @SERVER")
            server = word
        elif name is not None and rdtype is None and is_type(word):
            rdtype = word.upper()
        elif name is None:
            name = word
        elif rdtype is None:
            raise BadQuestion(f"unknown record type {word!r} (such as A, AAAA, MX, TXT, NS, SOA)")
        else:
            raise BadQuestion(f"unexpected {word!r}: give NAME [TYPE] [@SERVER[:PORT]]")
    if name is None:
        raise BadQuestion("give a NAME to look up")
    return name, rdtype or "A", server


def is_type(word: str) -> bool:
    try:
        dns.rdatatype.from_text(word)
    except (dns.exception.DNSException, ValueError):
        return False
    return True


def format_short(result: Result) -> str:
    """dig +short: the data of every answer record, one per line."""
    return "\n".join(rdata.to_text() for rrset in result.message.answer for rdata in rrset)


def format_dig(result: Result) -> str:
    """dig's sections: header, question, answer, authority, additional, and the footer."""
    msg = result.message
    flags = dns.flags.to_text(msg.flags).lower()
    lines = [
        f"; <<>> sockhop resolve <<>> {result.name} {dns.rdatatype.to_text(result.rdtype)} "
        f"@{format_server(result.server)}",
        f";; ->>HEADER<<- opcode: QUERY, status: {dns.rcode.to_text(msg.rcode())}, id: {msg.id}",
        f";; flags: {flags}; QUERY: {len(msg.question)}, ANSWER: {count(msg.answer)}, "
        f"AUTHORITY: {count(msg.authority)}, ADDITIONAL: {count(msg.additional) + (msg.edns >= 0)}",  # OPT too
    ]
    if msg.edns >= 0:
        lines += ["", ";; OPT PSEUDOSECTION:", f"; EDNS: version: {msg.edns}, flags:; udp: {msg.payload}"]
    lines += ["", ";; QUESTION SECTION:"]
    lines += [
        f";{q.name}\t\t{dns.rdataclass.to_text(q.rdclass)}\t{dns.rdatatype.to_text(q.rdtype)}" for q in msg.question
    ]
    for title, section in (("ANSWER", msg.answer), ("AUTHORITY", msg.authority), ("ADDITIONAL", msg.additional)):
        if section:
            lines += ["", f";; {title} SECTION:"]
            lines += [rrset_line for rrset in section for rrset_line in rrset.to_text().splitlines()]
    lines += [
        "",
        f";; Query time: {result.elapsed * 1000:.0f} msec",
        f";; SERVER: {result.server[0]}#{result.server[1]}({result.transport})",
        f";; MSG SIZE  rcvd: {result.size}",
    ]
    return "\n".join(lines)


def count(section: list[dns.rrset.RRset]) -> int:
    return sum(len(rrset) for rrset in section)
