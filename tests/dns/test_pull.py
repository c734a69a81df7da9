"""The transfer reader, sans-IO: sockhop's own server answers a transfer request, and the reader is fed the bytes in
small pieces -- whole, signed across several messages, an IXFR's changes, and what it must refuse."""

from __future__ import annotations

import functools
import struct

import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import dns.tsigkeyring
import pytest

from sockhop.dns.protocol import DnsStream
from sockhop.dns.pull import TransferFailed, TransferReader, framed, request
from sockhop.dns.server import NameServer
from sockhop.dns.tsig import Acl, keyring
from sockhop.dns.zone import from_records, read_zone_text
from tests.dns.zones import EXAMPLE

ORIGIN = dns.name.from_text("example.com")
SECRET = "c29ja2hvcCBkeW5hbWljIHVwZGF0ZSBrZXkgISEhISE="
BIG = EXAMPLE + "".join(f"h{i} IN A 10.0.{i >> 8}.{i & 255}\n" for i in range(2500))  # several messages


@functools.cache
def big_zone():
    return read_zone_text(BIG, "big")


def transfer(query: dns.message.Message) -> bytes:
    """What sockhop's TCP protocol answers to ``query``, as the bytes on the wire."""
    ring = keyring([f"upd:{SECRET}"])
    server = NameServer([big_zone()], allow_transfer=Acl(keys={dns.name.from_text("upd")}), keyring=ring)
    stream = DnsStream(server)
    stream.peer = ("127.0.0.1", 5)
    reply = stream.data_received(framed(query))
    return b"".join(reply.send)


def fed(reader: TransferReader, data: bytes, piece: int = 1000):
    result = None
    for i in range(0, len(data), piece):
        result = reader.feed(data[i : i + piece])
        if result is not None:
            assert i + piece >= len(data)
    return result


def test_a_signed_axfr_over_several_messages():
    key = keyring([f"upd:{SECRET}"])[dns.name.from_text("upd")]
    query = request(ORIGIN, None, key)
    data = transfer(query)
    reader = TransferReader(query, None)
    pulled = fed(reader, data)
    assert pulled is not None and pulled.kind == "axfr" and reader.messages > 1
    zone = from_records(ORIGIN, [pulled.soa, *pulled.records])
    assert zone.record_count() == big_zone().record_count()


def test_a_cut_or_tampered_transfer_is_never_whole():
    key = keyring([f"upd:{SECRET}"])[dns.name.from_text("upd")]
    query = request(ORIGIN, None, key)
    data = transfer(query)
    assert TransferReader(query, None).feed(data[: len(data) - 1]) is None  # cut: never whole
    (first,) = struct.unpack_from("!H", data)
    tampered = bytearray(data)
    tampered[2 + first + 200] ^= 0xFF  # a byte of the second message's records
    with pytest.raises(TransferFailed):
        fed(TransferReader(query, None), bytes(tampered))
    unsigned = request(ORIGIN, None)
    with pytest.raises(TransferFailed, match="REFUSED"):  # no key: not on the list
        fed(TransferReader(unsigned, None), transfer(unsigned))


def soa(serial: int) -> dns.rrset.RRset:
    return dns.rrset.from_text(
        ORIGIN, 3600, "IN", "SOA", f"ns1.example.com. hostmaster.example.com. {serial} 7200 900 1209600 300"
    )


def ixfr_reply(query: dns.message.Message, records: list) -> bytes:
    response = dns.message.make_response(query)
    response.answer = records
    wire = response.to_wire()
    return struct.pack("!H", len(wire)) + wire


def test_ixfr_changes_in_order_and_an_answer_that_says_current():
    query = request(ORIGIN, 1)
    a = dns.rrset.from_text("a.example.com.", 300, "IN", "A", "192.0.2.1")
    b = dns.rrset.from_text("b.example.com.", 300, "IN", "A", "192.0.2.2")
    records = [soa(3), soa(1), a, soa(2), b, soa(2), b, soa(3), a, soa(3)]
    pulled = fed(TransferReader(query, 1), ixfr_reply(query, records), piece=7)
    assert pulled.kind == "ixfr" and [(d.old_serial, d.new_serial) for d in pulled.diffs] == [(1, 2), (2, 3)]
    assert pulled.diffs[0].deleted[0].name == a.name and pulled.diffs[0].added[0].name == b.name
    assert TransferReader(query, 1).feed(ixfr_reply(query, [soa(1)])).kind == "current"
    with pytest.raises(TransferFailed, match="begin at serial"):
        TransferReader(query, 1).feed(ixfr_reply(query, [soa(3), soa(2), soa(3), soa(3)]))
    with pytest.raises(TransferFailed, match="does not begin"):
        TransferReader(query, 1).feed(ixfr_reply(query, [a, soa(3)]))
