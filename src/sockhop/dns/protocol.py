"""DNS over UDP and over TCP (RFC 1035 section 4.2, RFC 7766): the two framings around one answering core.

UDP: one datagram is one query, answered with at most one datagram. TCP: each message is preceded by its length
in two bytes; a client may send several queries on one connection, and each is answered as soon as it is whole,
in the order they arrived. A zone transfer (AXFR, RFC 5936; IXFR, RFC 1995) is only possible here, and only for
those ``--allow-transfer`` lists (addresses, or TSIG keys): the whole zone, or its changes, as a series of messages
(:mod:`sockhop.dns.transfer`). A dynamic update (RFC 2136) comes by either: over TCP it is applied and written to
its journal here, the journal synced here too while the disk syncs quickly, else in ``Reply.then``, off the event
loop, the connection's next message waiting its turn; a datagram has no later, so over UDP the sync happens before
the reply is returned.

Both protocols are sans-IO: bytes in, bytes out, no socket and no clock.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset

from sockhop.dns import tsig
from sockhop.dns.rrl import SLIP, truncated
from sockhop.dns.server import HEADER, NameServer, header_only
from sockhop.dns.transfer import encode, encode_zone, stamped
from sockhop.dns.tsig import BadTsig
from sockhop.engine.protocol import CLOSE, NOTHING, Address, DatagramProtocol, Reply, Results, StreamProtocol

RdataType = dns.rdatatype.RdataType
Rcode = dns.rcode.Rcode
log = logging.getLogger("sockhop.dns")

LENGTH = struct.Struct("!H")

#: Queries counted by transport and rcode (--admin), UDP and TCP in one counter.
RESULTS = Results("sockhop_dns_queries", "DNS queries answered, by transport and response code", ("proto", "rcode"))
#: The rcode names by the header's four bits.
RCODE_NAMES = tuple(dns.rcode.to_text(code) if code <= 10 else str(code) for code in range(16))
OPT_START = b"\x00\x00\x29"  # the root name, then type 41: an OPT record
UPDATE = dns.opcode.UPDATE


def is_update(message: bytes) -> bool:
    """An UPDATE request (RFC 2136): the opcode, read from the header's bits."""
    return len(message) >= HEADER and not message[2] & 0x80 and (message[2] >> 3) & 0x0F == UPDATE


def rcode_name(reply: bytes) -> str:
    """The response code of an encoded reply: the header's four bits, with the extended ones (BADVERS is 16) from
    the OPT record where this server writes it -- last, without options: root name, type 41, class, a TTL whose
    first byte is the extension, empty data. Read from the bytes: parsing the reply would cost more than it did."""
    code = reply[3] & 0x0F
    if reply[-11:-8] == OPT_START and reply[-6] and reply[-2:] == b"\x00\x00" and reply[10:12] != b"\x00\x00":
        return dns.rcode.to_text((reply[-6] << 4) | code)
    return RCODE_NAMES[code]


class DnsDatagram(DatagramProtocol):
    """DNS over UDP: each datagram a query, each answered with one datagram or dropped -- or, past the response
    rate limit, dropped or slipped (counted as ``limited`` and ``slipped``)."""

    results = RESULTS

    def __init__(self, server: NameServer) -> None:
        self.server = server

    def tick(self, now: float) -> None:
        self.server.tick(now)

    def datagram_received(self, data: bytes, peer: Address) -> list[bytes]:
        server = self.server
        hit = server.snapshot.udp_cache.entries.get(data[2:])  # the hot path, inlined: a repeated question
        if hit is not None and server.query_log is None:
            rrl = server.rrl
            if rrl is not None:
                verdict = rrl.check(peer[0], hit[2])
                if verdict:
                    return self._limited(data, verdict)
            if self.on_result is not None:
                self.on_result("udp", RCODE_NAMES[hit[0][1] & 0x0F])  # the cached reply starts after the ID
            return [data[:2] + hit[0]]
        if is_update(data):
            return [self._update(data, peer)]
        reply, answer_class = server.respond_classed(data, peer)
        if reply is None:
            return []
        if answer_class is not None and server.rrl is not None:
            verdict = server.rrl.check(peer[0], answer_class)
            if verdict:
                return self._limited(data, verdict)
        if self.on_result is not None:
            self.on_result("udp", rcode_name(reply))
        return [reply]

    def _update(self, data: bytes, peer: Address) -> bytes:
        """An update over UDP, applied and synced before the answer. A datagram has no later: the sync happens
        here, on this thread (over TCP, as nsupdate -v sends them, a slow disk's sync goes off the event loop)."""
        work = self.server.update(data, peer)
        reply, summary = work if isinstance(work, tuple) else work()
        if self.server.query_log is not None:
            self.server.query_log(peer, "udp", summary)
        if self.on_result is not None:
            self.on_result("udp", rcode_name(reply))
        return reply

    def _limited(self, data: bytes, verdict: int) -> list[bytes]:
        """Past the rate: nothing, or (slipped) the question back with TC set."""
        if verdict == SLIP:
            slipped = truncated(data)
            if slipped is not None:
                if self.on_result is not None:
                    self.on_result("udp", "slipped")
                return [slipped]
        if self.on_result is not None:
            self.on_result("udp", "limited")
        return []


class DnsStream(StreamProtocol):
    """DNS over TCP: two-byte length framing, several queries per connection, answered in order."""

    __slots__ = ("server", "peer", "buffer")
    results = RESULTS

    def __init__(self, server: NameServer) -> None:
        self.server = server
        self.peer: Address = None
        self.buffer = b""

    def connection_made(self, peer: Address, local: Address) -> Reply:
        self.peer = peer
        self.server.connection_opened()
        return NOTHING

    def data_received(self, data: bytes) -> Reply:
        buffer = self.buffer + data if self.buffer else data
        out: list[bytes] = []
        close = False
        while len(buffer) >= 2:
            (size,) = LENGTH.unpack_from(buffer)
            if len(buffer) < 2 + size:
                break
            message, buffer = buffer[2 : 2 + size], buffer[2 + size :]
            if is_update(message):  # a slow disk's sync goes off the event loop; the rest waits its turn
                self.buffer = buffer
                return self._update(message, out)
            replies = self.answer(message)
            if callable(replies):  # a zone version's first transfer: encoded off the event loop; the rest waits
                self.buffer = buffer
                return self._encoded_later(replies, out)
            if replies is None:  # not even a header: nothing sensible can follow on this connection
                close = True
                buffer = b""
                break
            for reply in replies:
                out.append(LENGTH.pack(len(reply)))
                out.append(reply)
        self.buffer = buffer
        if not out:
            return CLOSE if close else NOTHING
        return Reply((b"".join(out),), close)

    def eof_received(self) -> Reply:
        return CLOSE

    def _encoded_later(self, work: Callable[[], list[bytes]], out: list[bytes]) -> Reply:
        """The replies so far now, the transfer's once ``work`` has encoded them (off the event loop)."""

        def encoded() -> Reply:
            framed: list[bytes] = []
            for reply in work():
                framed.append(LENGTH.pack(len(reply)))
                framed.append(reply)
            more = self.data_received(b"") if len(self.buffer) >= 2 else NOTHING
            return Reply((b"".join(framed), *more.send), more.close, more.then)

        return Reply((b"".join(out),) if out else (), then=encoded)

    def _update(self, message: bytes, out: list[bytes]) -> Reply:
        work = self.server.update(message, self.peer)
        if isinstance(work, tuple) or getattr(work, "quick", False):  # nothing to sync, or a quick disk
            out += self._framed_update(*(work if isinstance(work, tuple) else work()))
            more = self.data_received(b"") if len(self.buffer) >= 2 else NOTHING
            return Reply((b"".join(out), *more.send), more.close, more.then)

        def durable() -> Reply:
            reply = self._framed_update(*work())
            more = self.data_received(b"") if len(self.buffer) >= 2 else NOTHING
            return Reply((b"".join(reply), *more.send), more.close, more.then)

        return Reply((b"".join(out),) if out else (), then=durable)

    def _framed_update(self, reply: bytes, summary: str) -> list[bytes]:
        self._log(summary)
        if self.on_result is not None:
            self.on_result("tcp", rcode_name(reply))
        return [LENGTH.pack(len(reply)), reply]

    def stop_requested(self) -> Reply:
        """Between queries a DNS connection is idle: close at once (RFC 7766 lets a server close any time);
        in the middle of one, let it arrive and be answered within the grace period."""
        return CLOSE if not self.buffer else NOTHING

    def answer(self, message: bytes) -> list[bytes] | Callable[[], list[bytes]] | None:
        """The replies to one message: one, several for a zone transfer (or the work that encodes them, see
        :meth:`transfer`), none for a response; None for garbage."""
        if len(message) < HEADER:
            return None
        if len(message) >= HEADER + 5 and not message[2] & 0x80:
            qtype = self._transfer_type(message)
            if qtype is not None:
                return self.transfer(message)
        reply = self.server.respond_classed(message, self.peer, tcp=True)[0]  # TCP is never rate limited
        if reply is None:
            return []
        if self.on_result is not None:
            self.on_result("tcp", rcode_name(reply))
        return [reply]

    @staticmethod
    def _transfer_type(message: bytes) -> int | None:
        """AXFR or IXFR if that is the (single) question's type -- read cheaply, without parsing everything."""
        if message[4:6] != b"\x00\x01":
            return None
        end = HEADER
        while end < len(message) and message[end]:
            end += 1 + message[end]
        if end + 5 > len(message):
            return None
        (qtype,) = LENGTH.unpack_from(message, end + 1)
        return qtype if qtype in (RdataType.AXFR, RdataType.IXFR) else None

    # -- AXFR and IXFR -------------------------------------------------------------------------------------------
    def transfer(self, message: bytes) -> list[bytes] | Callable[[], list[bytes]]:
        """A whole zone (AXFR, RFC 5936), its changes since the client's serial (IXFR, RFC 1995) when the journal
        has them, or one refusal. A signed request (TSIG) gets every message signed, each over the ones before.
        The first transfer of a zone's version is the work that encodes it (a second for 100,000 records), for
        ``Reply.then``: off the event loop, which keeps answering; later ones are stamped from what it kept."""
        server = self.server
        try:
            query = tsig.parse(message, server.keyring)
        except BadTsig as bad:
            self._log(f"transfer {bad.summary} NOTAUTH")
            return self._counted([bad.reply])
        except Exception:  # dnspython raises many kinds for garbage
            self._log("transfer malformed FORMERR")
            return self._counted([header_only(message, Rcode.FORMERR)])
        question = query.question[0]
        zone = server.snapshot.authority.zones.get(question.name)
        response = dns.message.make_response(query)
        summary = f"{question.name} IN {dns.rdatatype.to_text(question.rdtype)}"
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(Rcode.NOTIMP)
        elif zone is None:
            response.set_rcode(Rcode.NOTAUTH)
        elif not server.may_transfer(self.peer, query.keyname if query.had_tsig else None):
            response.set_rcode(Rcode.REFUSED)
        if response.rcode() != Rcode.NOERROR:
            self._log(f"{summary} {dns.rcode.to_text(response.rcode())}")
            return self._counted([response.to_wire()])
        assert zone is not None

        def send() -> list[bytes]:
            messages, what = self._messages(query, zone)
            replies = stamped(messages, query)
            self._log(f"{summary} NOERROR {what}")
            return self._counted(replies)

        return send if zone.signer is None and query.question[0].rdtype not in zone.axfr else send()

    def _messages(self, query: dns.message.Message, zone) -> tuple[list[bytes], str]:
        """What to send, encoded: the changes since the client's SOA (IXFR) if the journal has them, else the whole
        zone -- encoded once per version of the zone (a signed zone's anew, its signatures kept by its signer)."""
        qtype = query.question[0].rdtype
        serial = ixfr_serial(query)
        if serial is not None and zone.signer is None:
            if serial == zone.serial:
                return encode(zone.origin, qtype, [zone.soa]), f"serial {serial} is current"
            journal = self.server.journals.get(zone.origin)
            changes = journal.since(serial, zone.serial) if journal is not None else None
            if changes:
                count = sum(len(r) for change in changes for r in (*change.deleted, *change.added))
                messages = encode(zone.origin, qtype, ixfr_records(zone.soa, changes))
                return messages, f"IXFR {serial} -> {zone.serial}, {count} records"
        if zone.signer is not None:
            return encode(zone.origin, qtype, zone.signer.transfer(zone)), f"{zone.record_count()} records"
        cached = zone.axfr.get(qtype)
        if cached is None:  # the count too: counting 100,000 records costs more than stamping their messages
            cached = zone.axfr[qtype] = encode_zone(zone, qtype)
        return cached[0], f"{cached[1]} records"

    def _counted(self, replies: list[bytes]) -> list[bytes]:
        """A transfer is one query, whatever the number of messages it takes."""
        if self.on_result is not None and replies:
            self.on_result("tcp", rcode_name(replies[0]))
        return replies

    def _log(self, summary: str) -> None:
        if "malformed" in summary:  # a broken transfer or update request: one line, query log or not
            log.warning("dns: %s: %s", format_peer(self.peer), summary)
        if self.server.query_log is not None:
            self.server.query_log(self.peer, "tcp", summary)


def ixfr_serial(query: dns.message.Message) -> int | None:
    """The serial an IXFR request says the client has (its authority section's SOA), or None for AXFR."""
    if query.question[0].rdtype != RdataType.IXFR:
        return None
    for rrset in query.authority:
        if rrset.rdtype == RdataType.SOA and len(rrset):
            return rrset[0].serial
    return None


def ixfr_records(current: dns.rrset.RRset, changes) -> Iterable[dns.rrset.RRset]:
    """RFC 1995 section 4: the current SOA, then per change the old SOA, what went, the new SOA, what came; the
    current SOA again."""
    yield current
    for change in changes:
        yield change.old_soa
        yield from change.deleted
        yield change.new_soa
        yield from change.added
    yield current


def format_peer(peer: Address) -> str:
    try:
        host, port = peer[0], peer[1]  # type: ignore[index]
    except (TypeError, IndexError):
        return str(peer)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
