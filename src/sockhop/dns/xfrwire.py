"""One message of a zone transfer's answer, read with :mod:`sockhop.dns.wireread` rather than dns.message.

A 100,000-record AXFR spent seconds in dns.message's generality -- and then in dnspython's own name and rdata
readers, an object per name and per record, all thrown away once the zone was indexed. Here the records of the
answer section are plain tuples of wire bytes (:data:`~sockhop.dns.wireread.WireRecord`), names decompressed with a
cache of the message's names by offset; dnspython still checks the TSIG (``dns.tsig.validate``, over the whole
message, chained across messages as RFC 8945 section 5.3.1 says, exactly as dns.message does it).

What dns.message would reject is rejected: a short header, trailing bytes, a bad compression pointer, a record whose
data overruns it or does not read, a TSIG record that is not the last one, a signature that does not verify, a
signed answer to an unsigned request.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdatatype
import dns.tsig

from sockhop.dns.wireread import HEAD, WireError, WireRecord, name_at, read_records, record_data

RdataType = dns.rdatatype.RdataType
OPT, TSIG = int(RdataType.OPT), int(RdataType.TSIG)
HEADER = struct.Struct("!HHHHHH")
SKIPPED = frozenset({OPT})  # in the answer section it means nothing to a transfer
#: a record as read: see sockhop.dns.wireread
Record = WireRecord


@dataclass
class XfrMessage:
    """What a transfer reader needs of one message."""

    id: int
    flags: int
    rcode: int
    question: list[tuple[tuple[bytes, ...], int, int]]  # (the name's lower-cased labels, rdtype, rdclass)
    answer: list[WireRecord] = field(default_factory=list)
    had_tsig: bool = False
    tsig_ctx: object = None


def read(wire: bytes, key: dns.tsig.Key | None, request_mac: bytes, ctx: object) -> XfrMessage:
    """One message of the answer to a transfer request signed with ``key`` (None: unsigned) whose MAC is
    ``request_mac``; ``ctx`` is the TSIG chain the message before left (None for the first)."""
    try:
        return _read(wire, key, request_mac, ctx)
    except (IndexError, struct.error):
        raise WireError("the message ends inside a record") from None


def _read(wire: bytes, key: dns.tsig.Key | None, request_mac: bytes, ctx: object) -> XfrMessage:
    if len(wire) < 12:
        raise dns.message.ShortHeader
    ident, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(wire)
    cache: dict = {}
    pos = 12
    question = []
    for _ in range(qdcount):
        entry, pos = name_at(wire, pos, cache)
        rdtype, rdclass = struct.unpack_from("!HH", wire, pos)
        pos += 4
        question.append((entry[0], rdtype, rdclass))
    message = XfrMessage(ident, flags, flags & 0x000F, question)
    pos = read_records(wire, pos, ancount, cache, message.answer, SKIPPED)
    rcode_high = 0
    tsig: tuple | None = None
    rest = nscount + arcount
    for i in range(rest):  # authority and additional: an OPT's rcode bits, the TSIG; the rest only checked
        start = pos
        owner, pos = name_at(wire, pos, cache)
        rdtype, rdclass, ttl, rdlen = HEAD.unpack_from(wire, pos)
        pos += 10
        end = pos + rdlen
        if end > len(wire):
            raise WireError("a record's data runs past the message")
        if rdtype == OPT:
            rcode_high = ttl >> 24
        elif rdtype == TSIG:
            if i != rest - 1 or i < nscount:
                raise dns.exception.FormError("a TSIG record that is not the last")
            rdata = dns.rdata.from_wire(rdclass, rdtype, wire, pos, rdlen)
            tsig = (dns.name.Name(owner[1]), rdata, start)
        else:
            record_data(wire, pos, end, rdtype, rdclass, cache)
        pos = end
    if pos != len(wire):
        raise dns.message.TrailingJunk
    message.rcode |= rcode_high << 4
    if tsig is not None:
        if key is None:
            raise dns.message.UnknownTSIGKey("got signed message without keyring")
        owner_name, rdata, start = tsig
        message.tsig_ctx = dns.tsig.validate(
            wire, key, owner_name, rdata, int(time.time()), request_mac, start, ctx, True
        )
        message.had_tsig = True
    elif ctx is not None:
        ctx.update(wire)  # type: ignore[attr-defined]  # an unsigned message between signed ones: in the chain
        message.tsig_ctx = ctx
    return message
