"""Transfers read from the wire (wireread.py), indexed without a dnspython object per record (wirezone.py), and
kept as an AXFR stream (axfrfile.py): the index a transfer builds is the one dnspython's own reading builds, and
every malformed name or record fails the transfer."""

from __future__ import annotations

import ipaddress
import struct

import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import pytest

from sockhop.dns import transfer as encoding
from sockhop.dns.authority import Authority
from sockhop.dns.pull import TransferFailed, TransferReader, request
from sockhop.dns.wirezone import WireNodes
from sockhop.dns.zone import Zone, from_records, from_wire, read_zone_text
from tests.dns.zones import EXAMPLE

ORIGIN = dns.name.from_text("example.com")
A = dns.rdatatype.A
ODD = (
    EXAMPLE
    + """\
UPPER.Case IN A 192.0.2.77
odd IN TXT "\\000\\255\\"\\\\;x" "" "end"
unk IN TYPE65400 \\# 3 010203
mi IN TYPE14 \\# 40 05726d61696c076578616d706c6503636f6d0007656d61696c6278076578616d706c6503636f6d00
deep.x.y.z IN MX 5 mail
srv IN SRV 0 0 53 ns.sub
"""
)


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text, ORIGIN)


def messages(zone: Zone, query: dns.message.Message) -> list[bytes]:
    """The zone's AXFR as sockhop's primary sends it (dnspython's renderer: owners compressed against names in
    earlier records' data too)."""
    return encoding.stamped(encoding.encode(zone.origin, dns.rdatatype.AXFR, zone.transfer_order()), query)


def framed(wires: list[bytes]) -> bytes:
    return b"".join(struct.pack("!H", len(wire)) + wire for wire in wires)


def pulled(wires: list[bytes], query: dns.message.Message):
    reader = TransferReader(query, None)
    result = None
    for wire in wires:
        result = reader.feed(framed([wire]))
    return result


def dnspython_index(wires: list[bytes]) -> Zone:
    """The index built from dnspython's own reading of the messages, as a transfer was read before."""
    rrsets = []
    for wire in wires:
        rrsets += dns.message.from_wire(wire, xfr=True, origin=None, one_rr_per_rrset=True).answer
    return from_records(ORIGIN, rrsets[:-1])  # the last SOA closes the transfer


def assert_same_index(ours: Zone, theirs: Zone) -> None:
    assert isinstance(ours.rrsets, WireNodes)
    assert set(ours.rrsets) == set(theirs.rrsets) and len(ours.rrsets) == len(theirs.rrsets)
    for owner, node in theirs.rrsets.items():
        mine = ours.rrsets[owner]
        assert set(mine) == set(node), owner
        for rdtype, rrset in node.items():
            assert mine[rdtype] == rrset and mine[rdtype].ttl == rrset.ttl, (owner, rdtype)
            assert mine[rdtype].name.labels == rrset.name.labels  # the zone's own case
    assert set(ours.names) == set(theirs.names) and len(ours.names) == len(theirs.names)
    assert set(ours.cuts) == set(theirs.cuts) and ours.owners(dns.rdatatype.DNAME) == theirs.owners(dns.rdatatype.DNAME)
    assert ours.record_count() == theirs.record_count() and ours.serial == theirs.serial


@pytest.fixture(scope="module")
def transferred():
    zone = read_zone_text(ODD, "odd")
    query = request(ORIGIN, None)
    wires = messages(zone, query)
    return zone, query, wires


def test_the_wire_index_is_dnspythons_index(transferred):
    """Pointers into names inside record data too (an MX's exchange, a CNAME's target, the SOA's names), a TXT with
    odd bytes, a type dnspython does not know, MINFO and SRV, uppercase owners, wildcards, empty non-terminals,
    a delegation, DNAMEs: the same index either way."""
    zone, query, wires = transferred
    result = pulled(wires, query)
    assert result is not None and result.kind == "axfr"
    ours = from_wire(ORIGIN, result.wire, "wire")
    assert_same_index(ours, dnspython_index(wires))
    assert ours.rrsets[name("odd")][dns.rdatatype.TXT][0].strings == (b'\x00\xff"\\;x', b"", b"end")
    assert ours.rrsets[name("unk")][65400][0].data == b"\x01\x02\x03"
    assert ours.rrsets[name("mi")][dns.rdatatype.MINFO][0].data.endswith(b"\x07emailbx\x07example\x03com\x00")


def test_answers_from_the_wire_index(transferred):
    """Lower-case questions find upper-case owners and answer in the zone's case; an empty non-terminal is NODATA,
    a name under a delegation a referral, a wildcard answers under the name asked."""
    zone, query, wires = transferred
    authority = Authority([from_wire(ORIGIN, pulled(wires, query).wire, "wire")])
    upper = authority.answer(name("upper.case"), A)
    assert upper.rcode == 0 and upper.answer[0].name.labels[:2] == (b"UPPER", b"Case")
    assert authority.answer(name("UPPER.CASE"), A).answer[0][0].address == "192.0.2.77"
    for empty in ("c", "b.c", "x.y.z", "Y.z"):
        found = authority.answer(name(empty), A)
        assert found.rcode == 0 and not found.answer and found.authority[0].rdtype == dns.rdatatype.SOA, empty
    assert authority.answer(name("nothere.c"), A).rcode == dns.rcode.NXDOMAIN
    referral = authority.answer(name("host.sub"), A)
    assert not referral.authoritative and referral.authority[0].rdtype == dns.rdatatype.NS
    assert referral.additional[0][0].address == "192.0.2.53"  # glue
    wild = authority.answer(name("anything.wild"), A)
    assert wild.answer[0].name == name("anything.wild") and wild.answer[0][0].address == "192.0.2.9"
    dname = authority.answer(name("x.old"), A)
    assert [rrset.rdtype for rrset in dname.answer][:2] == [dns.rdatatype.DNAME, dns.rdatatype.CNAME]


def one_message(query: dns.message.Message, answer: bytes, count: int) -> bytes:
    """A message answering ``query`` whose answer section is ``answer`` (``count`` records), the question at 12."""
    question = ORIGIN.to_wire() + struct.pack("!HH", dns.rdatatype.AXFR, 1)
    return struct.pack("!HHHHHH", query.id, 0x8400, 1, count, 0, 0) + question + answer


SOA_DATA = b"\x03ns1\xc0\x0c\x0ahostmaster\xc0\x0c" + struct.pack("!IIIII", 5, 3600, 600, 86400, 60)


def record(owner: bytes, rdtype: int, data: bytes, ttl: int = 300) -> bytes:
    return owner + struct.pack("!HHIH", rdtype, 1, ttl, len(data)) + data


def test_pointers_into_record_data_and_what_fails():
    """A hand-made message: an owner that points at a name inside an MX's data, a CNAME whose target points there
    too; then a pointer to itself, one forward (a loop's only way), one past the end, a cut-off pointer, a record
    whose data runs past the message, a record cut in its fixed fields, an unknown label type, an A of 5 bytes."""
    query = request(ORIGIN, None)
    soa = record(b"\xc0\x0c", dns.rdatatype.SOA, SOA_DATA)
    ns = record(b"\xc0\x0c", dns.rdatatype.NS, b"\x03ns1\xc0\x0c")
    head = 12 + len(ORIGIN.to_wire()) + 4
    mx = record(b"\xc0\x0c", dns.rdatatype.MX, b"\x00\x0a\x04mail\xc0\x0c")
    mail_at = head + len(soa) + len(ns) + len(mx) - 7  # "mail" inside the MX's data
    pointer = struct.pack("!H", 0xC000 | mail_at)
    mail = record(pointer, A, b"\xc0\x00\x02\x07")
    alias = record(b"\x05alias\xc0\x0c", dns.rdatatype.CNAME, pointer)
    minfo = record(b"\x02mi\xc0\x0c", dns.rdatatype.MINFO, b"\xc0\x0c" + pointer)  # RFC 3597: may be compressed
    answer = soa + ns + mx + mail + alias + minfo + soa
    result = TransferReader(query, None).feed(framed([one_message(query, answer, 7)]))
    zone = from_wire(ORIGIN, result.wire, "hand")
    assert zone.get(name("mail"), A)[0].address == "192.0.2.7"
    assert zone.get(name("alias"), dns.rdatatype.CNAME)[0].target == name("mail")
    assert zone.get(ORIGIN, dns.rdatatype.MX)[0].exchange == name("mail")
    assert zone.get(name("mi"), dns.rdatatype.MINFO)[0].data == ORIGIN.to_wire() + name("mail").to_wire()
    at = head + len(soa)  # where a bad record goes, after the SOA
    bad = {
        "itself": record(struct.pack("!H", 0xC000 | at), A, b"\x01\x02\x03\x04"),
        "forward": record(struct.pack("!H", 0xC000 | (at + 40)), A, b"\x01\x02\x03\x04") + soa,
        "past the end": record(b"\x01x\xff\xf0", A, b"\x01\x02\x03\x04"),
        "label type": record(b"\x41x\xc0\x0c", A, b"\x01\x02\x03\x04"),
        "a of 5 bytes": record(b"\x01x\xc0\x0c", A, b"\x01\x02\x03\x04\x05"),
        "cname overruns": record(b"\x01x\xc0\x0c", dns.rdatatype.CNAME, b"\x01x\xc0\x0c\x00"),
        "txt short": record(b"\x01x\xc0\x0c", dns.rdatatype.TXT, b"\x05abc"),
        "tsig in the answer": record(b"\x03key\x00", dns.rdatatype.TSIG, b"\x00" * 20),
        "long name": record(b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3f" + b"d" * 63
                            + b"\xc0\x0c", A, b"\x01\x02\x03\x04"),
    }  # fmt: skip
    for what, piece in bad.items():
        with pytest.raises(TransferFailed, match="cannot be read"):
            TransferReader(query, None).feed(framed([one_message(query, soa + piece + soa, 3)]))
            raise AssertionError(what)
    cut = {  # the message ends inside the record
        "cut pointer": b"\xc0",
        "data past the end": b"\xc0\x0c" + struct.pack("!HHIH", A, 1, 300, 40) + b"\x01\x02",
        "cut fields": b"\xc0\x0c" + struct.pack("!HH", A, 1),
        "cut label": b"\x05ab",
    }
    for what, piece in cut.items():
        with pytest.raises(TransferFailed, match="ends inside a record|runs past the message"):
            TransferReader(query, None).feed(framed([one_message(query, soa + piece, 2)]))
            raise AssertionError(what)


def test_records_outside_the_zone_or_a_first_record_not_the_soa_fail():
    query = request(ORIGIN, None)
    soa = record(b"\xc0\x0c", dns.rdatatype.SOA, SOA_DATA)
    outside = record(b"\x03www\x07example\x03net\x00", A, b"\x01\x02\x03\x04")
    suffix = record(b"\x0bxexample\x03com\x00"[:0] + b"\x08xexample\x03com\x00", A, b"\x01\x02\x03\x04")
    for piece in (outside, suffix):
        with pytest.raises(TransferFailed, match="outside the zone"):
            TransferReader(query, None).feed(framed([one_message(query, soa + piece + soa, 3)]))
    with pytest.raises(TransferFailed, match="does not begin"):
        TransferReader(query, None).feed(framed([one_message(query, outside + soa, 2)]))


def test_a_signed_zone_is_indexed_as_dnspython_objects(tmp_path):
    """RRSIG, NSEC3: the zone goes the eager way, its signatures sorted out as from a file."""
    from sockhop.dns.zone import read_zone_file
    from tests.dns.signed import sign

    zone = read_zone_file(sign(tmp_path, nsec3=True)[0])
    query = request(zone.origin, None)
    wires = encoding.stamped(encoding.encode(zone.origin, dns.rdatatype.AXFR, zone.transfer_order()), query)
    result = TransferReader(query, None).feed(framed(wires))
    ours = from_wire(zone.origin, result.wire, "signed")
    assert not isinstance(ours.rrsets, WireNodes) and ours.presigned
    assert ours.record_count() == zone.record_count() and set(ours.sigs) == set(zone.sigs)


def test_kept_as_a_stream_and_read_back(transferred, tmp_path):
    """--data's copy: the same index read back; after an IXFR's changes (a layered zone) too; a damaged or foreign
    file is refused, so the zone is transferred again."""
    from sockhop.dns.axfrfile import MAGIC, decode
    from sockhop.dns.secondary import keep, load_kept, zone_path
    from sockhop.dns.update import Diff, apply_diff, bumped

    zone, query, wires = transferred
    ours = from_wire(ORIGIN, pulled(wires, query).wire, "wire")
    path = zone_path(tmp_path, ORIGIN)
    keep(path, ours)
    back, age = load_kept(path, ORIGIN)
    assert age < 60
    assert_same_index(back, dnspython_index(wires))
    added = dns.rrset.from_text("new.x.example.com.", 60, "IN", "A", "192.0.2.250")
    deleted = dns.rrset.from_text("www.example.com.", 3600, "IN", "A", "192.0.2.2")
    changed = apply_diff(ours, Diff(ours.soa, bumped(ours.soa), [deleted], [added]))
    assert name("x") in changed.names and changed.get(name("www"), A) is None
    keep(path, changed)
    again = load_kept(path, ORIGIN)[0]
    assert again.serial == ours.serial + 1 and again.get(name("new.x"), A)[0].address == "192.0.2.250"
    assert again.get(name("www"), A) is None and again.get(name("www"), dns.rdatatype.AAAA) is not None
    assert again.record_count() == ours.record_count()
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes((data[-1] ^ 1,)))
    assert load_kept(path, ORIGIN) is None  # damaged: transferred again
    with pytest.raises(Exception, match="not a zone kept"):
        decode(b"$ORIGIN example.com.\n", ORIGIN, "text")
    with pytest.raises(Exception, match="outside|answers another"):
        decode(data, dns.name.from_text("example.org"), "other")
    assert data.startswith(MAGIC)


def test_an_update_that_removes_a_name_makes_no_node_of_the_others(transferred):
    """A change that takes a name away finds which of its ancestors are left empty from the owners' labels
    (sockhop.dns.update): no other node of the wire index is made, let alone its RRsets."""
    from sockhop.dns.update import Diff, apply_diff, bumped

    zone, query, wires = transferred
    ours = from_wire(ORIGIN, pulled(wires, query).wire, "wire")
    gone = dns.rrset.from_text("a.b.c.example.com.", 3600, "IN", "A", "192.0.2.10")
    changed = apply_diff(ours, Diff(ours.soa, bumped(ours.soa), [gone], []))
    assert name("a.b.c") not in changed.names and name("b.c") not in changed.names and name("c") not in changed.names
    assert name("sub") in changed.cuts and name("x.y.z") in changed.names
    assert Authority([changed]).answer(name("b.c"), A).rcode == dns.rcode.NXDOMAIN
    assert len(ours.rrsets.made) <= 3  # the apex, and what changed


def test_a_transferred_zone_is_transferred_on_from_its_wire_records(transferred):
    """A secondary's AXFR out is encoded from the records it keeps (a question in every message, as RFC 5936 lets
    it): read by dnspython and by sockhop's own reader, it is the same zone again -- after an IXFR's change too."""
    from sockhop.dns.protocol import DnsStream
    from sockhop.dns.server import NameServer
    from sockhop.dns.tsig import Acl
    from sockhop.dns.update import Diff, apply_diff, bumped

    zone, query, wires = transferred
    ours = from_wire(ORIGIN, pulled(wires, query).wire, "wire")
    added = dns.rrset.from_text("more.example.com.", 60, "IN", "A", "192.0.2.251")
    for version in (ours, apply_diff(ours, Diff(ours.soa, bumped(ours.soa), [], [added]))):
        server = NameServer([version], allow_transfer=Acl(networks=[ipaddress.ip_network("127.0.0.0/8")]))
        stream = DnsStream(server)
        stream.peer = ("127.0.0.1", 5)
        ask = request(ORIGIN, None)
        reply = stream.data_received(framed([ask.to_wire()]))
        out = b"".join(reply.send)
        while reply.then is not None:  # a version's first transfer is encoded off the event loop
            reply = reply.then()
            out += b"".join(reply.send)
        answers, at = [], 0
        while at < len(out):
            (size,) = struct.unpack_from("!H", out, at)
            answers.append(out[at + 2 : at + 2 + size])
            at += 2 + size
        theirs = dnspython_index(answers)
        assert theirs.record_count() == version.record_count() and theirs.serial == version.serial
        again = from_wire(ORIGIN, pulled(answers, ask).wire, "again")
        assert_same_index(again, theirs)


def test_sockhop_dns_show_prints_a_kept_zone_as_text(transferred, tmp_path):
    """``sockhop dns show FILE``: the kept stream as a master file that reads back to the same zone; a zone file
    too; a missing or damaged file is one line, no traceback."""
    import subprocess
    import sys

    from sockhop.dns.secondary import keep, zone_path

    zone, query, wires = transferred
    path = zone_path(tmp_path, ORIGIN)
    kept = from_wire(ORIGIN, pulled(wires, query).wire, "wire")
    keep(path, kept)

    def show(target) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sockhop", "dns", "show", str(target)], capture_output=True,
                              text=True, timeout=30)  # fmt: skip

    done = show(path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("$ORIGIN example.com.\nexample.com. ")
    assert_same_index(kept, read_zone_text(done.stdout, "shown"))
    text = tmp_path / "example.com.zone"
    text.write_text(done.stdout)
    assert show(text).stdout == done.stdout
    damaged = tmp_path / "damaged.axfr"
    damaged.write_bytes(path.read_bytes()[:-3])
    for target, words in ((tmp_path / "none.axfr", "No such file"), (damaged, "damaged")):
        failed = show(target)
        assert failed.returncode == 1 and failed.stderr.count("\n") == 1 and words in failed.stderr, failed.stderr
