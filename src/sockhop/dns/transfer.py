"""The messages of a zone transfer (AXFR, IXFR): encoded once, then stamped for each client.

A transfer of a large zone is mostly encoding: each RRset once, into messages of about ``CHUNK`` bytes, with
dnspython's renderer (which compresses names and rolls back an RRset that does not fit, so nothing is encoded
twice). The messages of a whole zone are kept with the zone (``Zone.axfr``: a zone changes by being replaced, so
they never go stale) and a later AXFR only stamps them: the client's ID and RD bit, an OPT record if it sent one,
and a TSIG record on each message when the request was signed (RFC 8945 section 5.3.1: the first over the request's
MAC, each next over the one before).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.renderer
import dns.rrset
import dns.tsig

CHUNK = 16_000  # bytes per message: well under 64 KiB, few messages
QR_AA = 0x8400
FUDGE = 300
TSIG_HEAD = struct.Struct("!HHIH")


def encode_zone(zone, qtype: int) -> tuple[list[bytes], int]:
    """A whole zone's messages (AXFR, or IXFR answered AXFR-style) and its record count. A zone a transfer brought
    is encoded from the wire records it keeps (:mod:`sockhop.dns.axfrfile`): making 100,000 nodes' RRsets only
    for dnspython's renderer to take them apart again tripled the first AXFR out of a secondary."""
    from sockhop.dns import axfrfile

    if axfrfile.fast(zone):
        return axfrfile.messages(zone.origin, qtype, axfrfile.records_of(zone))
    return encode(zone.origin, qtype, zone.transfer_order()), zone.record_count()


def encode(origin: dns.name.Name, qtype: int, records: Iterable[dns.rrset.RRset]) -> list[bytes]:
    """The messages carrying ``records``, ID 0, QR and AA set; the question (``origin``, ``qtype``) in the first
    only (RFC 5936 section 2.2)."""
    messages: list[bytes] = []
    renderer = _renderer(origin, qtype, first=True)
    empty = True
    for rrset in records:
        try:
            renderer.add_rrset(dns.renderer.ANSWER, rrset)
            empty = False
            continue
        except dns.exception.TooBig:
            if empty:  # an RRset bigger than a chunk: a message of its own, up to 64 KiB
                renderer = _renderer(origin, qtype, first=not messages, size=65535)
                renderer.add_rrset(dns.renderer.ANSWER, rrset)
                empty = False
                continue
        renderer.write_header()
        messages.append(renderer.get_wire())
        renderer = _renderer(origin, qtype, first=False)
        try:
            renderer.add_rrset(dns.renderer.ANSWER, rrset)
        except dns.exception.TooBig:
            renderer = _renderer(origin, qtype, first=False, size=65535)
            renderer.add_rrset(dns.renderer.ANSWER, rrset)
        empty = False
    if not empty or not messages:
        renderer.write_header()
        messages.append(renderer.get_wire())
    return messages


class LabelCompression(dict):
    """A renderer's compression table keyed by a name's labels rather than the Name: dnspython looks up every
    suffix of every name written, and a Name hashes (and compares) in Python, character by character, where a
    tuple of bytes does it in C -- most of the time of encoding a large zone. A name differing only in case is
    just not compressed against another (the message is as valid; the two are the same name to any reader)."""

    __slots__ = ()

    def get(self, name: dns.name.Name, default: object = None) -> object:  # type: ignore[override]
        return dict.get(self, name.labels, default)

    def __setitem__(self, name: dns.name.Name, offset: int) -> None:
        dict.__setitem__(self, name.labels, offset)


def _renderer(origin: dns.name.Name, qtype: int, first: bool, size: int = CHUNK) -> dns.renderer.Renderer:
    renderer = dns.renderer.Renderer(id=0, flags=QR_AA, max_size=size)
    renderer.compress = LabelCompression()
    if first:
        renderer.add_question(origin, qtype, dns.rdataclass.IN)
    return renderer


def stamped(messages: list[bytes], query: dns.message.Message) -> list[bytes]:
    """The messages as the answer to ``query``: its ID and RD bit, an OPT record in the first if it had EDNS, each
    signed if it was."""
    head = struct.pack("!H", query.id)
    rd = 0x01 if query.flags & dns.flags.RD else 0x00
    out = []
    for i, wire in enumerate(messages):
        wire = head + bytes((wire[2] | rd,)) + wire[3:]
        if i == 0 and query.edns >= 0:
            wire = _with_additional(wire, b"\x00" + TSIG_HEAD.pack(dns.rdatatype.OPT, 1232, 0, 0))
        out.append(wire)
    if query.had_tsig:
        out = _signed(out, query)
    return out


def _with_additional(wire: bytes, record: bytes) -> bytes:
    (count,) = struct.unpack_from("!H", wire, 10)
    return wire[:10] + struct.pack("!H", count + 1) + wire[12:] + record


def _signed(messages: list[bytes], query: dns.message.Message) -> list[bytes]:
    key: dns.tsig.Key = query.keyring  # the key that verified the request
    owner = key.name.to_wire()
    ctx = None
    request_mac = query.mac
    now = int(time.time())
    out = []
    for wire in messages:
        rdata = dns.rdtypes.ANY.TSIG.TSIG(
            dns.rdataclass.ANY, dns.rdatatype.TSIG, key.algorithm, now, FUDGE, b"", query.id, 0, b""
        )
        tsig, ctx = dns.tsig.sign(wire, key, rdata, now, request_mac, ctx, True)
        data = tsig.to_wire()
        record = owner + TSIG_HEAD.pack(dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(data)) + data
        out.append(_with_additional(wire, record))
    return out
