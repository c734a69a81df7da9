"""A zone kept as the AXFR stream that would carry it: what a secondary writes in ``--data`` (BIND keeps its
secondary zones in its "raw" masterfile-format for the same reason).

Writing 100,000 records as a master file made a dnspython RRset of every node and text of every record, and reading
it back on a restart parsed that text again: seconds either way. Here the file is a short header, a CRC-32 of the
rest, and then the framed DNS messages of an AXFR -- the SOA first and last, owners compressed against the origin
named in each message's question, every record's data as wire bytes -- so a restart reads it with the transfer
reader itself (:mod:`sockhop.dns.pull`, :mod:`sockhop.dns.wireread`) into the same index a transfer builds
(:mod:`sockhop.dns.wirezone`), and writing it is mostly concatenating the bytes the transfer brought.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator

import dns.exception
import dns.name
import dns.rdatatype

from sockhop.dns.layered import GONE, LayeredDict
from sockhop.dns.wireread import HEAD, key_of
from sockhop.dns.wirezone import WireNodes
from sockhop.dns.zone import Zone, ZoneError, from_wire, read_zone_file

MAGIC = b"sockhop zone as AXFR, version 1\n"
CRC = struct.Struct("!I")
HEADER = struct.Struct("!HHHHHH")
LENGTH = struct.Struct("!H")
CHUNK = 16_000  # bytes of records per message, as sockhop's own transfers
QR_AA = 0x8400
AXFR, IN, SOA = int(dns.rdatatype.AXFR), 1, int(dns.rdatatype.SOA)
#: a record to write: (owner's labels, type, class, TTL, data as wire bytes or a dnspython Rdata)
Plain = tuple[tuple[bytes, ...], int, int, int, object]


def records_of(zone: Zone) -> Iterator[Plain]:
    """Every record of the zone, the SOA first: straight from the wire records of a zone a transfer brought and
    nothing changed since, else from its RRsets."""
    nodes = zone.rrsets
    layer: dict = {}
    if isinstance(nodes, LayeredDict) and isinstance(nodes.base, WireNodes):  # changed by IXFR since
        layer, nodes = nodes.layer, nodes.base
    if isinstance(nodes, WireNodes) and not zone.presigned:
        soa = zone.soa
        yield soa.name.labels, SOA, soa.rdclass, soa.ttl, soa[0]
        changed = {key_of(name) for name in layer}
        for key, records in nodes.raw.items():
            if key not in changed:
                for record in records:
                    if record[2] != SOA:
                        yield record[1], record[2], record[3], record[4], record[5]
        for node in layer.values():
            if node is not GONE:
                for rrset in node.values():
                    if rrset.rdtype != SOA:
                        for rdata in rrset:
                            yield rrset.name.labels, rrset.rdtype, rrset.rdclass, rrset.ttl, rdata
        return
    rrsets = list(zone.transfer_order())
    for rrset in rrsets[:-1]:  # the SOA is last again: encode closes the stream with it
        for rdata in rrset:
            yield rrset.name.labels, rrset.rdtype, rrset.rdclass, rrset.ttl, rdata


def messages(origin: dns.name.Name, qtype: int, records: Iterable[Plain]) -> tuple[list[bytes], int]:
    """The messages of a transfer carrying ``records`` (the SOA first; it closes the transfer again), ID 0, QR and
    AA set, each with the question (``origin``, ``qtype``: RFC 5936 section 2.2.1 lets later messages copy it),
    against which owners are compressed; and how many records they carry, the closing SOA not counted."""
    origin_labels = origin.labels
    depth = len(origin_labels)
    question = origin.to_wire() + struct.pack("!HH", qtype, IN)
    out: list[bytes] = []
    body: list[bytes] = []
    size = count = total = 0
    first = None

    def flush() -> None:
        nonlocal size, count
        wire = HEADER.pack(0, QR_AA, 1, count, 0, 0) + question + b"".join(body)
        if len(wire) > 65535:
            raise ZoneError(f"{origin}: a record too large for a message")
        out.append(wire)
        body.clear()
        size = count = 0

    for record in records:
        if first is None:
            first = record
        labels, rdtype, rdclass, ttl, data = record
        if type(data) is not bytes:
            data = data.to_wire()  # type: ignore[attr-defined]  # uncompressed
        if labels[len(labels) - depth :] == origin_labels:  # the usual: compressed against the question's name
            owner = b"".join([bytes((len(label),)) + label for label in labels[: len(labels) - depth]]) + b"\xc0\x0c"
        else:  # the origin in another case: written whole, to keep it
            owner = b"".join([bytes((len(label),)) + label for label in labels])
        piece = owner + HEAD.pack(rdtype, rdclass, ttl, len(data)) + data  # type: ignore[arg-type]
        if body and size + len(piece) > CHUNK:
            flush()
        body.append(piece)
        size += len(piece)
        count += 1
        total += 1
    if first is None:
        raise ZoneError(f"{origin}: no records")
    labels, rdtype, rdclass, ttl, data = first  # the SOA again closes the transfer
    data = data if type(data) is bytes else data.to_wire()  # type: ignore[attr-defined]
    piece = b"".join([bytes((len(label),)) + label for label in labels]) + HEAD.pack(rdtype, rdclass, ttl, len(data))
    if body and size + len(piece) + len(data) > CHUNK:
        flush()
    body.append(piece + data)
    count += 1
    flush()
    return out, total


def encode(origin: dns.name.Name, records: Iterable[Plain]) -> bytes:
    """The file's bytes: the header, the CRC, the framed messages of the AXFR."""
    stream = b"".join(LENGTH.pack(len(wire)) + wire for wire in messages(origin, AXFR, records)[0])
    return MAGIC + CRC.pack(zlib.crc32(stream)) + stream


def fast(zone: Zone) -> bool:
    """Whether :func:`records_of` reads the zone's wire records (a transfer's, changed or not since) rather than
    its RRsets: then :func:`messages` is the quicker way to encode its AXFR too."""
    nodes = zone.rrsets
    if isinstance(nodes, LayeredDict):
        nodes = nodes.base
    return isinstance(nodes, WireNodes) and not zone.presigned and zone.signer is None


def decode(data: bytes, origin: dns.name.Name, source: str) -> Zone:
    """The zone a file holds, indexed as a transfer is. Raises ZoneError for a file that is not one, is damaged,
    or holds another zone."""
    from sockhop.dns.pull import TransferFailed, TransferReader, request

    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + CRC.size:
        raise ZoneError(f"{source}: not a zone kept by sockhop")
    stream = memoryview(data)[len(MAGIC) + CRC.size :]
    if CRC.unpack_from(data, len(MAGIC))[0] != zlib.crc32(stream):
        raise ZoneError(f"{source}: damaged (its checksum does not match)")
    query = request(origin, None)
    query.id = 0
    reader = TransferReader(query, None)
    try:
        pulled = reader.feed(bytes(stream))
    except TransferFailed as exc:
        raise ZoneError(f"{source}: {exc}") from None
    if pulled is None:
        raise ZoneError(f"{source}: cut short")
    return from_wire(origin, pulled.wire, source)


def read(path: str) -> Zone:
    """The zone a kept file holds (its origin the question of its first message), or a master file's
    (``sockhop dns show``). Raises ZoneError for a file that cannot be read."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ZoneError(f"{path}: {exc.strerror}") from None
    if not data.startswith(MAGIC):
        return read_zone_file(path)
    try:
        origin, _ = dns.name.from_wire(data, len(MAGIC) + CRC.size + LENGTH.size + HEADER.size)
    except dns.exception.DNSException:
        raise ZoneError(f"{path}: damaged (its first message cannot be read)") from None
    return decode(data, origin, path)
