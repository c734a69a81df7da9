"""A dynamic update (RFC 2136) read from the wire and answered on it, without building a dnspython message.

An update is small -- a zone, a prerequisite or two, a few records, a TSIG -- yet reading it through dns.message,
checking its signature there and writing and signing the answer the same way took a quarter of a millisecond, most
of what an update cost besides its fsync. :func:`read` takes the sections apart with dnspython's own name and rdata
readers into the RRsets ``dns.update.UpdateMessage`` would hold (one per record, in order), checks the TSIG with
hmac (:class:`sockhop.dns.tsig.WireKey`), and :meth:`WireUpdate.reply` writes the answer -- header, zone section,
TSIG -- as bytes. What it does not read itself (EDNS, a zone section that is not one SOA, a signature that does not
check, anything malformed) it leaves to dns.message (:class:`ParsedUpdate`), so every refusal and error answer is
the one it always was.
"""

from __future__ import annotations

import struct

import dns.message
import dns.name
import dns.opcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.wire

from sockhop.dns.tsig import WireKey

RdataType = dns.rdatatype.RdataType
RdataClass = dns.rdataclass.RdataClass
ANY = dns.rdataclass.ANY
NONE = dns.rdataclass.NONE
SPECIAL = (RdataType.OPT, RdataType.TSIG)  # dns.message reads these (and refuses them outside the additional section)
HEADER = struct.Struct("!HHHHHH")
QUESTION = struct.Struct("!HH")
QR_UPDATE = 0x8000 | (dns.opcode.UPDATE << 11)
RD = 0x0100


class WireUpdate:
    """An update read from the wire: its zone, its key (None: unsigned), its prerequisites and updates as RRsets."""

    __slots__ = ("data", "zone", "zone_class", "prerequisite", "update", "signer", "mac", "now")

    def __init__(self, data: bytes, zone: dns.name.Name, zone_class: int, prerequisite: list[dns.rrset.RRset],
                 update: list[dns.rrset.RRset], signer: WireKey | None, mac: bytes, now: int) -> None:  # fmt: skip
        self.data = data
        self.zone: dns.name.Name | None = zone
        self.zone_class = zone_class
        self.prerequisite = prerequisite
        self.update = update
        self.signer = signer
        self.mac = mac
        self.now = now

    @property
    def key(self) -> dns.name.Name | None:
        return self.signer.key.name if self.signer is not None else None

    def reply(self, rcode: int) -> bytes:
        """The answer, as dns.message.make_response writes it: the ID, opcode and RD, QR and ``rcode``, the zone
        section, signed with the request's key over its MAC when it came signed."""
        qid, flags = struct.unpack_from("!HH", self.data)
        assert self.zone is not None
        header = HEADER.pack(qid, QR_UPDATE | (flags & RD) | (rcode & 0x0F), 1, 0, 0, 0)
        wire = b"".join((header, self.zone.to_wire(), QUESTION.pack(RdataType.SOA, self.zone_class)))
        return self.signer.sign(wire, self.mac, self.now) if self.signer is not None else wire


class ParsedUpdate:
    """An update dns.message read (checking its TSIG against the keyring), with :class:`WireUpdate`'s face."""

    __slots__ = ("message", "zone", "key", "prerequisite", "update")

    def __init__(self, message: dns.message.Message) -> None:
        self.message = message
        zone_section = message.question
        one_soa = len(zone_section) == 1 and zone_section[0].rdtype == RdataType.SOA
        self.zone = zone_section[0].name if one_soa else None  # None: a FORMERR (RFC 2136 section 3.1.1)
        self.key = message.keyname if message.had_tsig else None
        self.prerequisite = getattr(message, "prerequisite", [])
        self.update = getattr(message, "update", [])

    def reply(self, rcode: int) -> bytes:
        response = dns.message.make_response(self.message)
        response.set_rcode(rcode)
        return response.to_wire()


def read(data: bytes, keys: dict[dns.name.Name, WireKey], now: int, names: Names | None = None) -> WireUpdate | None:
    """The update in ``data``, its TSIG (if any) checked against ``keys`` at time ``now`` (seconds); None for what
    dns.message must read instead: anything unusual, malformed or wrongly signed. ``names`` keeps the zone's, the
    key's and the algorithm's names as they come, so the next update finds them rather than reading them again."""
    try:
        return _read(data, keys, now, names if names is not None else {})
    except Exception:  # dnspython's readers raise many kinds for garbage: dns.message will say which
        return None


#: names by their wire form, uncompressed, exactly as sent (see :func:`known_name`)
Names = dict[bytes, dns.name.Name]
NAMES_KEPT = 256  # names a Names keeps: zones, keys and algorithms are few, and a client may send any


def known_name(parser: dns.wire.Parser, names: Names) -> dns.name.Name:
    """The name at the parser, from ``names`` if it was seen before (one slice and a dict probe, where reading it
    costs a Name made and checked; and the same object again, which a dict keyed by names finds without comparing
    labels). Compressed ones are read as usual."""
    data = parser.wire
    start = end = parser.current
    while data[end]:
        if data[end] >= 64:  # a pointer (or a bad label type): dnspython's reader
            return dns.name.from_wire_parser(parser)
        end += data[end] + 1
    raw = data[start : end + 1]
    name = names.get(raw)
    if name is None:
        name = dns.name.from_wire_parser(parser)
        if len(names) < NAMES_KEPT:
            names[raw] = name
    else:
        parser.get_bytes(len(raw))
    return name


def _read(data: bytes, keys: dict[dns.name.Name, WireKey], now: int, names: Names) -> WireUpdate | None:
    parser = dns.wire.Parser(data)
    _, _, zones, prerequisites, updates, additional = parser.get_struct("!HHHHHH")
    if zones != 1 or additional > 1:
        return None
    zone = known_name(parser, names)
    rdtype, zone_class = parser.get_struct("!HH")
    if rdtype != RdataType.SOA or dns.rdataclass.is_metaclass(zone_class):
        return None
    prerequisite = _records(parser, prerequisites, zone_class, True)
    update = _records(parser, updates, zone_class, False)
    if prerequisite is None or update is None:
        return None
    signer, mac = None, b""
    if additional:
        start = parser.current
        owner = known_name(parser, names)
        rdtype, rdclass, _, size = parser.get_struct("!HHIH")
        end = parser.current + size
        if rdtype != RdataType.TSIG or rdclass != ANY:
            return None
        algorithm = known_name(parser, names)
        high, low, fudge, mac_size = parser.get_struct("!HIHH")
        mac = parser.get_bytes(mac_size)
        original_id, error, other_size = parser.get_struct("!HHH")
        other = parser.get_bytes(other_size)
        signer = keys.get(owner)
        if parser.current != end or signer is None:
            return None
        if not signer.verified(data, start, algorithm, high << 32 | low, fudge, mac, original_id, error, other, now):
            return None
    if parser.current != len(data):
        return None
    return WireUpdate(data, zone, zone_class, prerequisite, update, signer, mac, now)


def _records(parser: dns.wire.Parser, count: int, zone_class: int, prerequisites: bool) -> list | None:
    """One section's records, each an RRset of its own and in order, as ``dns.update.UpdateMessage`` reads them: class
    ANY or NONE marks a deletion (or a prerequisite) and is read as the zone's class, and such a record of a
    prerequisite, or a deletion of class ANY, has no data (RFC 2136 sections 2.4 and 2.5)."""
    rrsets = []
    for _ in range(count):
        name = dns.name.from_wire_parser(parser)
        rdtype, rdclass, ttl, size = parser.get_struct("!HHIH")
        if rdtype in SPECIAL:
            return None
        deleting = None
        if rdclass in (ANY, NONE):
            deleting, rdclass = RdataClass.make(rdclass), zone_class
            if deleting == ANY or prerequisites:
                if size:
                    return None
                empty = dns.rrset.RRset(name, RdataClass.make(rdclass), RdataType.make(rdtype), deleting=deleting)
                rrsets.append(empty)
                continue
        with parser.restrict_to(size):
            rdata = dns.rdata.from_wire_parser(rdclass, rdtype, parser, None)
        rrset = dns.rrset.RRset(name, rdata.rdclass, rdata.rdtype, rdata.covers(), deleting)
        rrset.items = {rdata: None}  # what RRset.add makes of one record, without hashing it twice
        rrset.ttl = 0 if ttl > 0x7FFFFFFF else ttl
        rrsets.append(rrset)
    return rrsets
