"""Where a domain's mail goes, asked without blocking: the same questions as :func:`sockhop.mail.mx.mail_hops` (MX in
preference order, an implicit MX, a null MX refused, the port from an ``_smtp._tcp`` SRV record, every address of
every exchanger), each sent as a UDP datagram through the engine's handle (``handle.connect(..., udp=True)``) and
answered through the stub resolver's own pieces (the query it makes, the reply it accepts, the rcode it turns
into an error) -- so the queue runner's loop never waits on DNS and no thread is spent on it. A truncated reply is
asked again over TCP, as the stub resolver does.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from sockhop.engine.protocol import ClientProtocol, Close, Reply

from .mx import SMTP_PORT, NoSuchDomain, NullMX, RoutingError

DNS_TIMEOUT = 2.0  # per try, as the stub resolver
DNS_TRIES = 3

Answer = Callable[[object], None]  # called once with a list of rdata, or the ResolveError


class DNSQuery(ClientProtocol):
    """One question to one server over UDP (or TCP, with its two-byte length), answered once through ``done``."""

    def __init__(self, message, qname, qtype, server: tuple[str, int], done: Answer, *, tcp: bool = False) -> None:
        self.message, self.qname, self.qtype, self.server = message, qname, qtype, server
        self.done, self.tcp = done, tcp
        self.buffer = b""
        self.answered = False

    def connection_made(self, peer, local) -> Reply:
        wire = self.message.to_wire()
        return Reply((struct.pack("!H", len(wire)) + wire if self.tcp else wire,), alarm=DNS_TIMEOUT)

    def data_received(self, data: bytes) -> Reply:
        from sockhop.dns.resolver import parse_reply

        if self.tcp:
            self.buffer += data
            if len(self.buffer) < 2 or len(self.buffer) < 2 + struct.unpack("!H", self.buffer[:2])[0]:
                return Reply()
            data = self.buffer[2 : 2 + struct.unpack("!H", self.buffer[:2])[0]]
        reply = parse_reply(self.message, data)
        if reply is None:
            return Reply()  # not ours, or unreadable: wait on (the alarm ends it)
        self._answer(reply)
        return Reply(close=Close.AT_ONCE)

    def timed_out(self) -> Reply:
        from sockhop.dns.resolver import Timeout

        self._give(Timeout(f"no reply from {self.server[0]}:{self.server[1]}"))
        return Reply(close=Close.AT_ONCE)

    def connection_failed(self, error: Exception) -> None:
        self._lost(error)

    def connection_lost(self) -> None:
        self._lost(self.handle.error)

    def _lost(self, error: BaseException | None) -> None:
        from sockhop.dns.resolver import Timeout

        reason = getattr(error, "strerror", None) or error or "closed"
        self._give(Timeout(f"no reply from {self.server[0]}:{self.server[1]}: {reason}"))

    def _answer(self, reply) -> None:
        import dns.flags

        from sockhop.dns.resolver import ResolveError, Result, check

        if reply.flags & dns.flags.TC and not self.tcp:
            self._give("truncated")
            return
        result = Result(reply, self.qname, self.qtype, self.server, "tcp" if self.tcp else "udp", 0.0, 0)
        try:
            check(result)
            self._give(result.records())
        except ResolveError as exc:
            self._give(exc)

    def _give(self, answer: object) -> None:
        if not self.answered:
            self.answered = True
            self.done(answer)


def ask(handle, name: str, rdtype: str, servers: list[tuple[str, int]], done: Answer) -> None:
    """Ask ``servers`` in turn (each up to DNS_TRIES times on silence) until one answers; ``done`` once with the
    records (a list; empty for NODATA) or the ResolveError (NXDOMAIN's is NoSuchName)."""
    from sockhop.dns.resolver import BadQuestion, Timeout, make_query, question

    try:
        qname, qtype = question(name, rdtype)
    except BadQuestion as exc:
        done(exc)
        return
    plan = [(server, try_) for server in servers for try_ in range(DNS_TRIES)]
    last: list[object] = [Timeout("no DNS server to ask")]

    def next_try(tcp_server: tuple[str, int] | None = None) -> None:
        if tcp_server is not None:
            query = DNSQuery(make_query(qname, qtype), qname, qtype, tcp_server, settle, tcp=True)
            handle.connect(tcp_server, query, timeout=DNS_TIMEOUT)
            return
        if not plan:
            done(last[0])
            return
        server, _ = plan.pop(0)
        query = DNSQuery(make_query(qname, qtype), qname, qtype, server, lambda answer: settle(answer, server))
        handle.connect(server, query, udp=True, timeout=DNS_TIMEOUT)

    def settle(answer: object, server: tuple[str, int] | None = None) -> None:
        if answer == "truncated" and server is not None:
            next_try(server)
        elif isinstance(answer, Timeout):
            last[0] = answer
            if "refused" in str(answer).lower():  # nothing listens there: no use asking it again
                plan[:] = [(s, t) for s, t in plan if s != server]
            next_try()
        else:
            done(answer)

    next_try()


def find_hops(handle, domain: str, servers: list[tuple[str, int]], port: int | None, done: Answer) -> None:
    """(address, port, exchanger) for ``domain``, best first, or the RoutingError (NoSuchDomain, NullMX)."""
    from sockhop.dns.resolver import NoSuchName, ResolveError

    found: dict[str, object] = {}

    def got_mx(answer: object) -> None:
        if isinstance(answer, NoSuchName):
            done(NoSuchDomain(f"{domain}: no such domain"))
            return
        if isinstance(answer, ResolveError):
            done(RoutingError(f"{domain}: MX lookup failed: {answer}"))
            return
        records = [(rr.preference, str(rr.exchange).rstrip(".").lower() or ".") for rr in answer]  # type: ignore[attr-defined]
        if len(records) == 1 and records[0][1] == ".":
            done(NullMX(f"{domain}: the domain accepts no mail (null MX)"))
            return
        hosts = [h for _, h in sorted(records, key=lambda r: r[0]) if h != "."] if records else [domain]
        found["hosts"] = hosts
        wanted = [(host, rdtype) for host in hosts for rdtype in ("AAAA", "A")]
        found["left"] = len(wanted) + (0 if port is not None else 1)
        if port is None:
            ask(handle, f"_smtp._tcp.{domain}", "SRV", servers, lambda a: got("srv", a))
        for host, rdtype in wanted:
            ask(handle, host, rdtype, servers, lambda a, key=(host, rdtype): got(key, a))

    def got(key: object, answer: object) -> None:
        found[key] = answer  # type: ignore[index]
        found["left"] = found["left"] - 1  # type: ignore[operator]
        if found["left"]:
            return
        ports: dict[str, int] = {}
        srv = found.get("srv")
        if isinstance(srv, list):
            for rr in sorted(srv, key=lambda r: (r.priority, -r.weight)):
                ports.setdefault(str(rr.target).rstrip(".").lower(), rr.port)
        hops = []
        for host in found["hosts"]:  # type: ignore[union-attr]
            for rdtype in ("AAAA", "A"):
                records = found.get((host, rdtype))
                if isinstance(records, list):
                    hop_port = port or ports.get(host, SMTP_PORT)
                    hops += [(rr.address, hop_port, host) for rr in records]
        done(hops)

    ask(handle, domain, "MX", servers, got_mx)
