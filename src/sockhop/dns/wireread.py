"""Records read straight from the wire, as a secondary loads a large transfer: no dnspython object per record.

dnspython reads a name into a Name and each record's data into an Rdata object, in Python, field by field: reading
a 100,000-record AXFR that way took seconds, most of it making objects the zone's index threw away or never used.
Here a record is a plain tuple -- ``(key, labels, rdtype, rdclass, ttl, data)``: the owner's lower-cased labels
(what the index looks it up by: a tuple of bytes hashes in C), its labels as sent (answers keep the zone's case),
and the record's data as wire bytes -- and dnspython makes an RRset of it only when a query first needs it
(:mod:`sockhop.dns.wirezone`).

Names are decompressed as dnspython does it (RFC 1035 section 4.1.4): a pointer must point before the name it is
read for, and each further pointer before the one followed last, so a loop or a pointer forward is an error, as is
a pointer past the end, a label type other than a length or a pointer, or a name over 255 octets. Each name read is
remembered by its offset, with every suffix, so the owner of the next record -- usually one new label and a
pointer -- costs a dict lookup and a few concatenations.

A record's data is kept as uncompressed wire bytes: as sent for the types whose data holds no name (checked: an A
is 4 bytes, an AAAA 16, a TXT whole strings) and for types dnspython does not know (RFC 3597: opaque, never
compressed); with its names decompressed for the types RFC 3597 section 4 says may be compressed (NS, CNAME, SOA,
PTR, MX, MINFO, MB, MG, MR, MD, MF). Any other type -- SRV, RRSIG, NSEC, DNAME and the rest that hold names --
is read by dnspython itself, compression and all, and kept as its Rdata object.
"""

from __future__ import annotations

import struct

import dns.exception
import dns.name
import dns.rdata
import dns.rdatatype
import dns.rrset

RdataType = dns.rdatatype.RdataType
HEAD = struct.Struct("!HHIH")
IN = 1

#: a name read: (lower-cased labels, labels as sent, its length in octets uncompressed)
Entry = tuple[tuple[bytes, ...], tuple[bytes, ...], int]
#: a record read: (owner's key, owner's labels, type, class, TTL, data: wire bytes or a dnspython Rdata)
WireRecord = tuple[tuple[bytes, ...], tuple[bytes, ...], int, int, int, "bytes | dns.rdata.Rdata"]

ROOT: Entry = ((b"",), (b"",), 1)  # absolute names end with the empty label, as dnspython's
ONE_NAME = frozenset({2, 3, 4, 5, 7, 8, 9, 12})  # NS, MD, MF, CNAME, MB, MG, MR, PTR: the data is one name
SOA, MINFO, MX, A, AAAA, TXT, SPF, TSIG = 6, 14, 15, 1, 28, 16, 99, 250
FIXED = {A: 4, AAAA: 16}


class WireError(dns.exception.FormError):
    """Bytes that are no valid record."""


def name_at(wire: bytes, start: int, cache: dict[int, Entry]) -> tuple[Entry, int]:
    """The name at ``start`` and the offset after its bytes there; every name read on the way is remembered in
    ``cache`` by its offset (a message's pointers can only point at names within it)."""
    labels: list[int] = []  # offsets of the labels read, in order, across pointers
    pos = bound = start
    end = -1
    rest = ROOT
    while True:
        n = wire[pos]
        if n < 64:
            if n == 0:
                if end < 0:
                    end = pos + 1
                break
            labels.append(pos)
            pos += n + 1
        elif n >= 192:
            target = (n & 63) << 8 | wire[pos + 1]
            if end < 0:
                end = pos + 2
            if target >= bound:
                raise WireError("a compression pointer that does not point back")
            bound = pos = target
            found = cache.get(target)
            if found is not None:
                rest = found
                break
        else:
            raise WireError("an unknown label type")
    key, sent, size = rest
    for at in reversed(labels):
        n = wire[at]
        label = wire[at + 1 : at + 1 + n]
        key = (label.lower(), *key)
        sent = (label, *sent)
        size += n + 1
        cache[at] = (key, sent, size)
    if size > 255:
        raise WireError("a name longer than 255 octets")
    return (key, sent, size), end


def wire_form(labels: tuple[bytes, ...]) -> bytes:
    """A name's uncompressed wire form, from its labels (the root's empty one last)."""
    return b"".join([bytes((len(label),)) + label for label in labels])


def _names_only(wire: bytes, pos: int, end: int, count: int, cache: dict[int, Entry], tail: int = 0) -> bytes:
    """The data of a record that is ``count`` names and then ``tail`` bytes, its names decompressed."""
    parts = []
    for _ in range(count):
        entry, pos = name_at(wire, pos, cache)
        parts.append(wire_form(entry[1]))
    if pos + tail != end:
        raise WireError("the record's data is not its names")
    if tail:
        parts.append(wire[pos:end])
    return b"".join(parts)


_dnspython: dict[tuple[int, int], bool] = {}


def _known(rdclass: int, rdtype: int) -> bool:
    """Whether dnspython has a reader of its own for this type (else it is opaque data: RFC 3597)."""
    known = _dnspython.get((rdclass, rdtype))
    if known is None:
        known = _dnspython[(rdclass, rdtype)] = dns.rdata.get_rdata_class(rdclass, rdtype) is not dns.rdata.GenericRdata
    return known


def record_data(wire: bytes, pos: int, end: int, rdtype: int, rdclass: int, cache: dict[int, Entry]):
    """A record's data at ``pos:end``: uncompressed wire bytes, or dnspython's Rdata for the types it reads."""
    if rdclass == IN:
        size = FIXED.get(rdtype)
        if size is not None:
            if end - pos != size:
                raise WireError("an address of the wrong length")
            return wire[pos:end]
        if rdtype in ONE_NAME:
            return _names_only(wire, pos, end, 1, cache)
        if rdtype == SOA:
            return _names_only(wire, pos, end, 2, cache, 20)
        if rdtype == MX:
            if end - pos < 3:
                raise WireError("an MX too short")
            return wire[pos : pos + 2] + _names_only(wire, pos + 2, end, 1, cache)
        if rdtype == MINFO:
            return _names_only(wire, pos, end, 2, cache)
        if rdtype in (TXT, SPF):
            at = pos
            while at < end:
                at += wire[at] + 1
            if at != end or end == pos:
                raise WireError("a TXT whose strings do not fill it")
            return wire[pos:end]
    if not _known(rdclass, rdtype):
        return wire[pos:end]
    return dns.rdata.from_wire(rdclass, rdtype, wire, pos, end - pos)


def read_records(
    wire: bytes, pos: int, count: int, cache: dict[int, Entry], out: list, skip: frozenset[int] = frozenset()
) -> int:
    """Read ``count`` records from ``pos`` into ``out``; return the offset after them. Records of a type in
    ``skip`` are left out (their data unread); a TSIG record is an error (it is only ever the last of a message, in
    its additional section). Raises :class:`WireError` (or IndexError for bytes that end too soon)."""
    unpack = HEAD.unpack_from
    size = len(wire)
    append = out.append
    for _ in range(count):
        n = wire[pos]
        if n >= 192:  # the owner is a pointer: a name read before
            target = (n & 63) << 8 | wire[pos + 1]
            if target >= pos:
                raise WireError("a compression pointer that does not point back")
            owner = cache.get(target) or name_at(wire, target, cache)[0]
            pos += 2
        elif 0 < n < 64 and wire[pos + n + 1] >= 192:  # one label, then a pointer: the common case
            after = pos + n + 1
            target = (wire[after] & 63) << 8 | wire[after + 1]
            if target >= pos:
                raise WireError("a compression pointer that does not point back")
            key, sent, length = cache.get(target) or name_at(wire, target, cache)[0]
            length += n + 1
            if length > 255:
                raise WireError("a name longer than 255 octets")
            label = wire[pos + 1 : after]
            owner = cache[pos] = ((label.lower(), *key), (label, *sent), length)
            pos = after + 2
        else:
            owner, pos = name_at(wire, pos, cache)
        rdtype, rdclass, ttl, rdlen = unpack(wire, pos)
        pos += 10
        end = pos + rdlen
        if end > size:
            raise WireError("a record's data runs past the message")
        if rdtype == A and rdlen == 4 and rdclass == IN:  # the most common, inlined
            append((owner[0], owner[1], rdtype, rdclass, ttl if ttl < 0x80000000 else 0x7FFFFFFF, wire[pos:end]))
        elif rdtype not in skip:
            if rdtype == TSIG:
                raise WireError("a TSIG record that is not the last")
            data = record_data(wire, pos, end, rdtype, rdclass, cache)
            append((owner[0], owner[1], rdtype, rdclass, ttl if ttl < 0x80000000 else 0x7FFFFFFF, data))
        pos = end
    return pos


def to_rdata(record: WireRecord) -> dns.rdata.Rdata:
    """A record's data as dnspython's Rdata."""
    data = record[5]
    if type(data) is bytes:
        return dns.rdata.from_wire(record[3], record[2], data, 0, len(data))
    return data  # type: ignore[return-value]


def owner_name(record: WireRecord) -> dns.name.Name:
    return dns.name.Name(record[1])


def key_of(name: dns.name.Name) -> tuple[bytes, ...]:
    """What a name is looked up by: its labels in lower case (as dnspython compares names: ASCII case only)."""
    return tuple(map(bytes.lower, name.labels))


def rrsets_of(records: list[WireRecord], join: bool = True) -> list[dns.rrset.RRset]:
    """dnspython RRsets of records as read, in the order of their first records; ``join``: one per owner, type and
    covered type (an RRset a primary split, or sent in pieces, is one again), else one per record (an IXFR's
    changes, in order). Owners differing only in case stay apart here; a zone's index joins them."""
    out: list[dns.rrset.RRset] = []
    groups: dict[tuple, dns.rrset.RRset] = {}
    for record in records:
        _, labels, rdtype, rdclass, ttl, _ = record
        rdata = to_rdata(record)
        covers = rdata.covers() if rdtype == RdataType.RRSIG else 0
        key = (labels, rdtype, covers)
        rrset = groups.get(key) if join else None
        if rrset is None or rrset.rdclass != rdclass:
            rrset = dns.rrset.RRset(dns.name.Name(labels), rdclass, RdataType.make(rdtype), covers)
            rrset.ttl = ttl
            if join:
                groups[key] = rrset
            out.append(rrset)
        elif ttl < rrset.ttl:
            rrset.ttl = ttl
        rrset.items[rdata] = None
    return out
