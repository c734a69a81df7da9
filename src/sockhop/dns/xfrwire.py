"""One message of a zone transfer's answer, read with dnspython's low-level pieces rather than dns.message.

A 100,000-record AXFR spent most of its time in dns.message's generality: an RRset object per record (a transfer
is read one record per RRset, for IXFR's order), enum conversions and section bookkeeping per record, all thrown
away once the zone is indexed. Here dnspython still does the wire format -- names (``dns.name.from_wire_parser``,
compression included), each record's data (the rdata class's own ``from_wire_parser``) and the TSIG check
(``dns.tsig.validate``, chained across messages as RFC 8945 section 5.3.1 says, exactly as dns.message does it) --
and a record is kept as a plain tuple, ``(name, rdtype, covers, ttl, rdata)``, for the caller to group.

What dns.message would reject is rejected (raising its exceptions): a short header, trailing bytes, a TSIG record
that is not the last one, a signature that does not verify, a signed answer to an unsigned request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.wire

RdataType = dns.rdatatype.RdataType
OPT, TSIG, RRSIG = RdataType.OPT, RdataType.TSIG, RdataType.RRSIG
#: a record as read: owner, type, covered type (RRSIG), TTL, data
Record = tuple[dns.name.Name, int, int, int, dns.rdata.Rdata]


@dataclass
class XfrMessage:
    """What a transfer reader needs of one message."""

    id: int
    flags: int
    rcode: int
    question: list[tuple[dns.name.Name, int, int]]  # (name, rdtype, rdclass)
    answer: list[Record] = field(default_factory=list)
    had_tsig: bool = False
    tsig_ctx: object = None


_classes: dict[tuple[int, int], tuple] = {}


def _rdata_class(rdclass: int, rdtype: int) -> tuple:
    """The rdata class that reads this type, and the type and class as dnspython's enums -- made once per pair."""
    found = _classes.get((rdclass, rdtype))
    if found is None:
        klass, kind = dns.rdataclass.RdataClass.make(rdclass), RdataType.make(rdtype)
        found = _classes[(rdclass, rdtype)] = (dns.rdata.get_rdata_class(klass, kind), klass, kind)
    return found


def read(wire: bytes, key: dns.tsig.Key | None, request_mac: bytes, ctx: object) -> XfrMessage:
    """One message of the answer to a transfer request signed with ``key`` (None: unsigned) whose MAC is
    ``request_mac``; ``ctx`` is the TSIG chain the message before left (None for the first)."""
    parser = dns.wire.Parser(wire)
    if parser.remaining() < 12:
        raise dns.message.ShortHeader
    ident, flags, qdcount, ancount, nscount, arcount = parser.get_struct("!HHHHHH")
    from_wire = dns.name.from_wire_parser
    question = []
    for _ in range(qdcount):
        name = from_wire(parser)
        rdtype, rdclass = parser.get_struct("!HH")
        question.append((name, rdtype, rdclass))
    message = XfrMessage(ident, flags, flags & 0x000F, question)
    answer = message.answer
    rcode_high = 0
    tsig: tuple | None = None
    for section, count in ((1, ancount), (2, nscount), (3, arcount)):
        for i in range(count):
            start = parser.current
            name = from_wire(parser)
            rdtype, rdclass, ttl, rdlen = parser.get_struct("!HHIH")
            if rdtype == OPT:
                rcode_high = ttl >> 24
                parser.seek(parser.current + rdlen)  # its options mean nothing to a transfer
                if parser.remaining() < 0:
                    raise dns.exception.FormError
                continue
            if rdtype == TSIG and (section != 3 or i != count - 1):
                raise dns.exception.FormError("a TSIG record that is not the last")
            reader, klass, kind = _rdata_class(rdclass, rdtype)
            with parser.restrict_to(rdlen):
                rdata = reader.from_wire_parser(klass, kind, parser, None)
            if rdtype == TSIG:
                tsig = (name, rdata, start)
            elif section == 1:
                answer.append((name, kind, rdata.covers() if rdtype == RRSIG else 0, min(ttl, 0x7FFFFFFF), rdata))
    if parser.remaining() != 0:
        raise dns.message.TrailingJunk
    message.rcode |= rcode_high << 4
    if tsig is not None:
        if key is None:
            raise dns.message.UnknownTSIGKey("got signed message without keyring")
        owner, rdata, start = tsig
        message.tsig_ctx = dns.tsig.validate(wire, key, owner, rdata, int(time.time()), request_mac, start, ctx, True)
        message.had_tsig = True
    elif ctx is not None:
        ctx.update(wire)  # type: ignore[attr-defined]  # an unsigned message between signed ones: in the chain
        message.tsig_ctx = ctx
    return message
