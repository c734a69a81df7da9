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
    out = b"".join(reply.send)
    while reply.then is not None:  # a version's first transfer is encoded off the event loop
        reply = reply.then()
        out += b"".join(reply.send)
    return out


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


def framed_messages(messages: list[bytes]) -> bytes:
    return b"".join(struct.pack("!H", len(wire)) + wire for wire in messages)


def axfr_messages(query: dns.message.Message) -> list[bytes]:
    """The big zone's AXFR as sockhop encodes it, unsigned, answering ``query`` (several messages)."""
    from sockhop.dns import transfer as encoding

    plain = request(ORIGIN, None)
    plain.id = query.id
    zone = big_zone()
    return encoding.stamped(encoding.encode(zone.origin, dns.rdatatype.AXFR, zone.transfer_order()), plain)


def signed_axfr(query: dns.message.Message, sign: list[bool], tamper: bool = False) -> bytes:
    """The AXFR, signed as dnspython's multi-message TSIG does -- each signature over the messages since the last
    -- but only the messages ``sign`` says (RFC 8945 section 5.3.1 lets up to 99 go unsigned between);
    ``tamper``: the second message's last byte changed once signed."""
    import time

    import dns.rdataclass
    import dns.rdtypes.ANY.TSIG
    import dns.tsig

    messages = axfr_messages(query)
    assert len(messages) == len(sign) > 2
    key, ctx, out, now = query.keyring, None, [], int(time.time())
    for wire, signed in zip(messages, sign, strict=True):
        if not signed:
            ctx.update(wire)  # the chain carries the unsigned ones (the first message is always signed)
            out.append(wire)
            continue
        rdata = dns.rdtypes.ANY.TSIG.TSIG(
            dns.rdataclass.ANY, dns.rdatatype.TSIG, key.algorithm, now, 300, b"", query.id, 0, b""
        )
        tsig, ctx = dns.tsig.sign(wire, key, rdata, now, query.mac, ctx, True)
        data = tsig.to_wire()
        record = key.name.to_wire() + struct.pack("!HHIH", dns.rdatatype.TSIG, 255, 0, len(data)) + data
        count = struct.unpack_from("!H", wire, 10)[0] + 1
        out.append(wire[:10] + struct.pack("!H", count) + wire[12:] + record)
    if tamper:
        out[1] = out[1][:-1] + bytes((out[1][-1] ^ 1,))  # an address's last byte: still a message that reads
    return framed_messages(out)


def test_the_wire_reader_keeps_dnspythons_rules():
    """What dns.message would refuse, the leaner reader refuses too: an unsigned message between signed ones is
    in the signature chain (and the zone is whole); a changed byte, a signed answer to an unsigned request, bytes
    after the records, a record whose data overruns it are failures."""
    key = keyring([f"upd:{SECRET}"])[dns.name.from_text("upd")]
    query = request(ORIGIN, None, key)
    framed(query)  # signs it: its MAC starts the chain
    n = len(axfr_messages(query))
    pulled = fed(TransferReader(query, None), signed_axfr(query, [True] + [False] * (n - 2) + [True]))
    assert pulled is not None and sum(map(len, pulled.records)) + 1 == big_zone().record_count()
    with pytest.raises(TransferFailed, match="does not verify"):  # an unsigned message changed: the next says so
        fed(TransferReader(query, None), signed_axfr(query, [True] + [False] * (n - 2) + [True], tamper=True))
    unsigned = request(ORIGIN, None)
    unsigned.id = query.id
    with pytest.raises(TransferFailed, match="TSIG"):  # a signature we did not ask for, with no key to check it
        fed(TransferReader(unsigned, None), signed_axfr(query, [True] * n))
    plain = axfr_messages(unsigned)
    assert fed(TransferReader(unsigned, None), framed_messages(plain)) is not None
    with pytest.raises(TransferFailed, match="cannot be read"):
        TransferReader(unsigned, None).feed(framed_messages([plain[0] + b"\x00"]))  # trailing junk
    overrun = bytearray(plain[0])
    struct.pack_into("!H", overrun, len(overrun) - 6, 5)  # the last record, an A, says 5 bytes of data
    with pytest.raises(TransferFailed, match="cannot be read"):
        TransferReader(unsigned, None).feed(framed_messages([bytes(overrun)]))


def test_owners_in_another_case_are_one_node():
    """A primary may write one owner in two cases; the index holds one node with both RRsets."""
    records = [
        soa(5),
        dns.rrset.from_text(ORIGIN, 300, "IN", "NS", "ns1.example.com."),
        dns.rrset.from_text("WWW.example.com.", 300, "IN", "A", "192.0.2.1"),
        dns.rrset.from_text("www.example.com.", 300, "IN", "TXT", '"t"'),
        dns.rrset.from_text("a.Sub.example.com.", 300, "IN", "A", "192.0.2.2"),
        dns.rrset.from_text("b.sub.example.com.", 300, "IN", "A", "192.0.2.3"),
    ]
    zone = from_records(ORIGIN, records)
    node = zone.rrsets[dns.name.from_text("www.example.com.")]
    assert set(node) == {dns.rdatatype.A, dns.rdatatype.TXT}
    assert len(zone.rrsets) == 4 and dns.name.from_text("sub.example.com.") in zone.names
    assert set(zone.names) == {*zone.rrsets, dns.name.from_text("sub.example.com.")}


def test_the_label_keyed_compression_encodes_as_dnspythons_own(monkeypatch):
    """The transfer's compression table keyed by labels gives the very bytes dnspython's own table gives (the
    same seed for the order dnspython shuffles an RRset's records in)."""
    import random

    from sockhop.dns import transfer as encoding

    zone = big_zone()
    random.seed(17)
    ours = encoding.encode(zone.origin, dns.rdatatype.AXFR, zone.transfer_order())
    monkeypatch.setattr(encoding, "LabelCompression", dict)
    random.seed(17)
    assert ours == encoding.encode(zone.origin, dns.rdatatype.AXFR, zone.transfer_order()) and len(ours) > 1
