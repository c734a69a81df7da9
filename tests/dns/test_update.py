"""Dynamic update (RFC 2136) as a pure function: prerequisites, the update records' checks, the RFC's rules for
the apex, CNAMEs and the SOA, the serial bumped, the difference recorded -- and the journal that keeps it."""

from __future__ import annotations

import io

import dns.exception
import dns.name
import dns.rcode
import dns.rdatatype
import dns.update
import pytest

from sockhop.dns.journal import Journal
from sockhop.dns.update import apply, apply_diff, difference
from sockhop.dns.updatewire import read
from sockhop.dns.zone import read_zone_text
from tests.dns.zones import EXAMPLE

Rcode = dns.rcode.Rcode
A = dns.rdatatype.A


@pytest.fixture
def zone():
    return read_zone_text(EXAMPLE, "example.com.zone")


def update(*prereqs, **changes) -> dns.update.UpdateMessage:
    message = dns.update.UpdateMessage("example.com.")
    for kind, args in prereqs:
        getattr(message, kind)(*args)
    for kind, calls in changes.items():
        for args in calls:
            getattr(message, kind)(*args)
    return read(message.to_wire(), {}, 0)  # as the server reads it (sockhop.dns.updatewire)


def names(zone, name: str):
    return zone.rrsets.get(dns.name.from_text(name), {})


def test_add_and_delete_bump_the_serial_and_record_the_difference(zone):
    outcome = apply(zone, update(add=[("new", 300, "A", "192.0.2.77")], delete=[("www", "AAAA")]))
    assert outcome.rcode == Rcode.NOERROR
    new = outcome.zone
    assert new.serial == zone.serial + 1
    assert [r.to_text() for r in names(new, "new.example.com.")[A]] == ["192.0.2.77"]
    assert dns.rdatatype.AAAA not in names(new, "www.example.com.")
    assert dns.rdatatype.AAAA in names(zone, "www.example.com.")  # the served zone is untouched
    diff = outcome.diff
    assert (diff.old_serial, diff.new_serial) == (zone.serial, zone.serial + 1)
    assert [r.to_text() for r in diff.added] == ["new.example.com. 300 IN A 192.0.2.77"]
    assert [r.to_text() for r in diff.deleted] == ["www.example.com. 3600 IN AAAA 2001:db8::2"]
    assert dns.name.from_text("new.example.com.") in new.names


@pytest.mark.parametrize(
    "prereq, rcode",
    [
        (("present", ("nothere",)), Rcode.NXDOMAIN),
        (("present", ("www", "MX")), Rcode.NXRRSET),
        (("absent", ("www",)), Rcode.YXDOMAIN),
        (("absent", ("www", "A")), Rcode.YXRRSET),
        (("present", ("www", "A", "192.0.2.99")), Rcode.NXRRSET),  # value-dependent: not these records
        (("present", ("www.example.net.",)), Rcode.NOTZONE),
    ],
)
def test_a_failed_prerequisite_changes_nothing(zone, prereq, rcode):
    outcome = apply(zone, update(prereq, add=[("new", 300, "A", "192.0.2.77")]))
    assert outcome.rcode == rcode and outcome.zone is None


def test_prerequisites_that_hold(zone):
    held = [
        ("present", ("www",)),
        ("present", ("www", "A")),
        ("absent", ("nothere",)),
        ("absent", ("www", "MX")),
        ("present", ("www", "A", "192.0.2.2")),
    ]
    assert apply(zone, update(*held, add=[("new", 300, "A", "192.0.2.77")])).rcode == Rcode.NOERROR


def test_the_apex_soa_ns_and_cname_rules(zone):
    outcome = apply(zone, update(delete=[("@",), ("@", "NS"), ("@", "SOA")]))
    new = outcome.zone
    apex = names(new, "example.com.")
    assert dns.rdatatype.SOA in apex and dns.rdatatype.NS in apex  # never deleted
    assert dns.rdatatype.MX not in apex and dns.rdatatype.TXT not in apex  # deleting the name took the rest
    outcome = apply(zone, update(add=[("www", 300, "CNAME", "mail")]))  # www has A: the CNAME is ignored
    assert outcome.zone is None
    outcome = apply(zone, update(add=[("alias", 300, "A", "192.0.2.5")]))  # alias is a CNAME: no A beside it
    assert outcome.zone is None
    # the SOA replaced by one with a greater serial: taken as is, not bumped again
    outcome = apply(zone, update(add=[("@", 3600, "SOA", "ns1 hostmaster 2030010101 7200 900 1209600 300")]))
    assert outcome.zone.serial == 2030010101
    outcome = apply(zone, update(add=[("@", 3600, "SOA", "ns1 hostmaster 1 7200 900 1209600 300")]))
    assert outcome.zone is None  # an older serial is ignored


def test_bad_update_records_are_formerr_or_refused(zone):
    message = dns.update.UpdateMessage("example.com.")
    message.add("x", 300, "A", "192.0.2.1")
    message.delete("www", "A")
    wire = message.to_wire()
    assert wire.endswith(b"\x00\x01\x00\xff" + bytes(6))  # the deletion last: type A, class ANY, TTL 0, no data
    wire = wire[:-2] + b"\x00\x04\xc0\x00\x02\x02"  # "delete the RRset" with data in it
    with pytest.raises(dns.exception.FormError):  # dnspython refuses it; the server answers FORMERR
        dns.message.from_wire(wire)
    outcome = apply(zone, update(add=[("www.example.net.", 300, "A", "192.0.2.1")]))
    assert outcome.rcode == Rcode.NOTZONE
    outcome = apply(zone, update(add=[("www", 300, "NSEC", "x.example.com. A")]))
    assert outcome.rcode == Rcode.REFUSED


def test_journal_round_trip_and_torn_tail(zone, tmp_path):
    journal = Journal(tmp_path / "example.com.zone.jnl", zone.origin)
    first = apply(zone, update(add=[("new", 300, "A", "192.0.2.77"), ("txt", 60, "TXT", '"a b; c"')]))
    second = apply(first.zone, update(delete=[("new", "A", "192.0.2.77")]))
    journal.append(first.diff)
    journal.append(second.diff)
    with open(journal.path, "a") as handle:
        handle.write("$CHANGE 2024010103 2024010104\n+ torn.example.com. 300 IN A")  # a crash mid-write
    again = Journal(journal.path, zone.origin)
    changes = again.read()
    assert [(c.old_serial, c.new_serial) for c in changes] == [(2024010101, 2024010102), (2024010102, 2024010103)]
    assert journal.path.read_text().endswith("$END\n")  # the torn block is cut off
    replayed = apply_diff(apply_diff(zone, changes[0]), changes[1])
    assert not difference(second.zone, replayed).added and not difference(second.zone, replayed).deleted
    assert replayed.serial == second.zone.serial
    assert names(replayed, "txt.example.com.")[dns.rdatatype.TXT][0].to_text() == '"a b; c"'
    for rrset in (*changes[0].added, changes[0].new_soa):  # names read back absolute: they go on the wire
        rrset.to_wire(io.BytesIO())
    journal.changes = changes
    assert journal.since(2024010101, 2024010103) == changes
    assert journal.since(2024010102, 2024010103) == changes[1:]
    assert journal.since(2020010101, 2024010103) is None


def test_the_server_answers_from_the_updated_zone_dname_included(zone, tmp_path):
    """Through NameServer.update (what both transports call): the change is answered, DNAMEs found where they now
    are, the names in between existing."""
    import ipaddress

    from sockhop.dns.server import NameServer
    from sockhop.dns.tsig import Acl

    journal = Journal(tmp_path / "j.jnl", zone.origin)
    server = NameServer([zone], journals={zone.origin: journal}, allow_update=Acl([ipaddress.ip_network("127.0.0.1")]))
    message = dns.update.UpdateMessage("example.com.")
    message.add("moved", 300, "DNAME", "example.net.")
    message.add("a.b.deep", 300, "A", "192.0.2.61")
    reply, summary = server.update(message.to_wire(), ("127.0.0.1", 5000))()
    assert dns.message.from_wire(reply).rcode() == Rcode.NOERROR and "serial 2024010101 -> 2024010102" in summary
    answer = server.snapshot.authority.answer(dns.name.from_text("www.moved.example.com."), A)
    assert [r.rdtype for r in answer.answer] == [dns.rdatatype.DNAME, dns.rdatatype.CNAME]
    assert server.snapshot.authority.answer(dns.name.from_text("b.deep.example.com."), A).rcode == Rcode.NOERROR
    refused, _ = server.update(message.to_wire(), ("192.0.2.1", 5000))  # not listed: refused at once
    assert dns.message.from_wire(refused).rcode() == Rcode.REFUSED
    assert len(journal.read()) == 1


def test_updates_share_a_large_zone_and_keep_its_names_and_cuts_exact():
    """An update costs what it changes: the new version layers its changes over the old one's index (no copy of a
    large zone), and after many updates -- adds, deletions, delegations, names below names -- the names and cuts
    are what counting the whole zone again gives, and so are the ones replayed from the journal's diffs."""
    from sockhop.dns.layered import LayeredDict
    from sockhop.dns.update import rebuilt

    text = EXAMPLE + "".join(f"h{i} 3600 IN A 10.0.{i >> 8}.{i & 255}\n" for i in range(3000))
    zone = first = read_zone_text(text, "example.com.zone")
    replayed = zone
    steps = [
        update(add=[("a.b.c", 300, "A", "192.0.2.1")]),
        update(add=[("sub", 300, "NS", "ns.sub")], delete=[("h1",)]),
        update(add=[("x.sub", 300, "A", "192.0.2.2"), ("h2", 60, "TXT", '"t"')]),
        update(delete=[("sub", "NS")]),
        update(delete=[("a.b.c",)]),
        *(update(add=[(f"u{i}", 300, "A", "192.0.2.3")]) for i in range(150)),
    ]
    for message in steps:
        outcome = apply(zone, message)
        assert outcome.rcode == Rcode.NOERROR and outcome.zone is not None
        replayed = apply_diff(replayed, outcome.diff)
        zone = outcome.zone
    assert isinstance(apply(zone, update(add=[("z", 300, "A", "192.0.2.4")])).zone.rrsets, (LayeredDict, dict))
    assert isinstance(apply(first, update(add=[("z", 300, "A", "192.0.2.4")])).zone.rrsets, LayeredDict)
    recounted = rebuilt(zone, dict(zone.rrsets.items()))
    for version in (zone, replayed):
        assert dict(version.rrsets.items()) == dict(recounted.rrsets.items())
        assert set(version.names) == set(recounted.names) and set(version.cuts) == set(recounted.cuts)
    assert dns.name.from_text("b.c.example.com.") not in zone.names  # gone with a.b.c, as empty non-terminals do
    assert dns.name.from_text("sub.example.com.") in zone.names and not zone.cuts
    assert len(first.rrsets) == 3000 + len(read_zone_text(EXAMPLE, "example.com.zone").rrsets)  # untouched


def test_records_added_to_and_deleted_from_an_rrset_and_a_new_ttl(zone):
    """The difference of an RRset that stays: the records that came or went (found by the hashes the RRsets keep,
    none made again), or all of it when the TTL changed; the bumped SOA hashes and compares as dnspython's own."""
    import dns.rdata
    import dns.rdataclass

    outcome = apply(zone, update(add=[("www", 3600, "A", "192.0.2.20"), ("www", 3600, "A", "192.0.2.2")]))
    www = names(outcome.zone, "www.example.com.")[A]
    assert sorted(r.to_text() for r in www) == ["192.0.2.2", "192.0.2.20"] and www.ttl == 3600
    assert [r.to_text() for r in outcome.diff.added] == ["www.example.com. 3600 IN A 192.0.2.20"]
    assert not outcome.diff.deleted
    outcome = apply(outcome.zone, update(add=[("www", 60, "A", "192.0.2.21")]))  # a new TTL for all of them
    (gone,), (came,) = outcome.diff.deleted, outcome.diff.added
    assert (gone.ttl, sorted(r.to_text() for r in gone)) == (3600, ["192.0.2.2", "192.0.2.20"])
    assert (came.ttl, sorted(r.to_text() for r in came)) == (60, ["192.0.2.2", "192.0.2.20", "192.0.2.21"])
    outcome = apply(zone, update(delete=[("@", "NS", "ns2.example.net."), ("www", "A", "192.0.2.99")]))
    assert [r.to_text() for r in names(outcome.zone, "example.com.")[dns.rdatatype.NS]] == ["ns1.example.com."]
    assert [r.to_text() for r in outcome.diff.deleted] == ["example.com. 3600 IN NS ns2.example.net."]
    soa = outcome.zone.soa[0]
    plain = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, soa.to_text())
    assert type(soa) is not type(plain) and hash(soa) == hash(plain) and soa == plain and plain in outcome.zone.soa


def test_updates_written_before_a_sync_are_served_by_it_in_order(zone, tmp_path):
    """Over TCP an update is applied and written on the event loop and synced later, on another thread: the next
    update builds on the version not yet synced, and one sync serves every version written before it, in order --
    also when the work that would have synced the first never runs (its connection gone first)."""
    import ipaddress

    from sockhop.dns.server import NameServer
    from sockhop.dns.tsig import Acl

    journal = Journal(tmp_path / "j.jnl", zone.origin)
    server = NameServer([zone], journals={zone.origin: journal}, allow_update=Acl([ipaddress.ip_network("127.0.0.1")]))
    peer = ("127.0.0.1", 5000)

    def add(name: str) -> bytes:
        message = dns.update.UpdateMessage("example.com.")
        message.add(name, 300, "A", "192.0.2.50")
        return message.to_wire()

    first = server.update(add("one"), peer)  # applied and written, not synced
    second = server.update(add("two"), peer)  # on top of it
    served = server.snapshot.authority.zones[zone.origin]
    assert served.serial == 2024010101 and dns.name.from_text("one.example.com.") not in served.names
    reply, summary = second()  # syncs both: "one" was written first
    assert summary.endswith("NOERROR serial 2024010102 -> 2024010103") and dns.message.from_wire(reply).rcode() == 0
    served = server.snapshot.authority.zones[zone.origin]
    assert served.serial == 2024010103 and {"one", "two"} <= {n.labels[0].decode() for n in served.names}
    assert [c.new_serial for c in journal.changes] == [2024010102, 2024010103]  # IXFR's, in order
    reply, summary = first()  # late: already served by the sync after it
    assert summary.endswith("NOERROR serial 2024010101 -> 2024010102")
    assert server.snapshot.authority.zones[zone.origin].serial == 2024010103
    assert len(journal.changes) == 2 and len(Journal(journal.path, zone.origin).read()) == 2
    journal.close()


def test_the_journal_stays_open_and_follows_its_name(zone, tmp_path):
    """The journal is kept open between changes; removed or replaced by hand, the next change makes it anew."""
    journal = Journal(tmp_path / "j.jnl", zone.origin)
    first = apply(zone, update(add=[("one", 300, "A", "192.0.2.1")]))
    second = apply(first.zone, update(add=[("two", 300, "A", "192.0.2.2")]))
    journal.append(first.diff)
    journal.path.unlink()
    journal.append(second.diff)
    assert [c.new_serial for c in Journal(journal.path, zone.origin).read()] == [second.zone.serial]
    journal.append(apply(second.zone, update(add=[("three", 300, "A", "192.0.2.3")])).diff)
    assert len(Journal(journal.path, zone.origin).read()) == 2 and journal.fd is not None
    journal.close()
    assert journal.fd is None


def test_a_tcp_update_syncs_on_the_loop_until_a_sync_is_slow(zone, tmp_path, monkeypatch):
    """Over TCP the journal is synced on the event loop while syncs are quick (a hand-off cost more); once one
    took longer than QUICK_SYNC the next update's sync is handed to the deferred thread (Reply.then), and the
    answers are the same either way."""
    import ipaddress
    import struct

    from sockhop.dns import journal as journals
    from sockhop.dns.protocol import DnsStream
    from sockhop.dns.server import NameServer
    from sockhop.dns.tsig import Acl

    journal = Journal(tmp_path / "j.jnl", zone.origin)
    server = NameServer([zone], journals={zone.origin: journal}, allow_update=Acl([ipaddress.ip_network("127.0.0.1")]))
    stream = DnsStream(server)
    stream.connection_made(("127.0.0.1", 5000), ("127.0.0.1", 53))

    def send(name: str):
        message = dns.update.UpdateMessage("example.com.")
        message.add(name, 300, "A", "192.0.2.51")
        wire = message.to_wire()
        return stream.data_received(struct.pack("!H", len(wire)) + wire)

    def rcode(reply) -> int:
        return dns.message.from_wire(b"".join(reply.send)[2:]).rcode()

    monkeypatch.setattr(journals, "QUICK_SYNC", 60.0)  # every sync is quick (whatever this disk's load)
    quick = send("one")  # the first sync is tried on the loop: answered at once
    assert quick.then is None and rcode(quick) == 0 and journal.quick
    monkeypatch.setattr(journals, "QUICK_SYNC", 0.0)  # every sync is slow from now on
    slow = send("two")  # synced on the loop still (the last sync was quick), and found slow
    assert slow.then is None and rcode(slow) == 0 and not journal.quick
    deferred = send("three")
    assert deferred.then is not None and not deferred.send  # the sync goes to the deferred thread
    assert dns.name.from_text("three.example.com.") not in server.snapshot.authority.zones[zone.origin].names
    assert rcode(deferred.then()) == 0
    assert dns.name.from_text("three.example.com.") in server.snapshot.authority.zones[zone.origin].names
    assert len(Journal(journal.path, zone.origin).read()) == 3
    journal.close()


def test_a_name_taken_away_takes_the_empty_non_terminals_left_above_it(zone):
    """Deleting every record of a name: it leaves, and so do its ancestors that nothing is below any more -- found
    without counting the zone again (one pass over the owners' labels, case-insensitively); after each step the
    names and cuts are what counting the whole zone gives."""
    from sockhop.dns.update import rebuilt

    def check(message) -> object:
        nonlocal zone
        outcome = apply(zone, message)
        assert outcome.rcode == Rcode.NOERROR and outcome.zone is not None
        zone = outcome.zone
        recounted = rebuilt(zone, dict(zone.rrsets.items()))
        assert set(zone.names) == set(recounted.names) and len(zone.names) == len(recounted.names)
        assert set(zone.cuts) == set(recounted.cuts)
        return zone

    def has(name: str) -> bool:
        return dns.name.from_text(name, dns.name.from_text("example.com.")) in zone.names

    check(update(add=[("d.b.c", 300, "A", "192.0.2.1"), ("X.Y.C", 300, "A", "192.0.2.2")]))
    check(update(delete=[("a.b.c",)]))  # b.c still has d.b.c below it
    assert not has("a.b.c") and has("b.c") and has("c")
    check(update(delete=[("d.b.c",)]))  # b.c is empty now; c still has X.Y.C (another case) below it
    assert not has("d.b.c") and not has("b.c") and has("c") and has("y.c")
    check(update(add=[("e.f", 300, "A", "192.0.2.3")], delete=[("x.y.c",)]))  # in one update: one goes, one comes
    assert not has("x.y.c") and not has("y.c") and not has("c") and has("e.f") and has("f")
    check(update(add=[("f", 300, "TXT", '"owner"')]))
    check(update(delete=[("e.f",)]))  # f owns a record: it stays
    assert not has("e.f") and has("f")
    check(update(delete=[("sub", "NS"), ("ns.sub",)]))  # a delegation and its glue go
    assert not has("sub") and not has("ns.sub") and not zone.cuts
