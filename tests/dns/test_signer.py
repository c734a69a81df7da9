"""Online signing (serve dns --sign) as a user runs it: sockhop dns keygen and ds, a zone file without signatures
served signed, judged by Unbound (the DS as its trust anchor; AD on answers, NXDOMAIN and NODATA for names never
asked before) and by ldns-verify-zone on an AXFR; key files that cannot be used stop start-up with one line; and
sans-IO, with a clock handed in, signatures renewed before they expire."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.update
import pytest

from sockhop.dns import keys
from sockhop.dns.journal import Journal
from sockhop.dns.protocol import DnsDatagram, DnsStream
from sockhop.dns.server import RENEW_REPLIES, NameServer
from sockhop.dns.signer import RENEW, VALIDITY, attach
from sockhop.dns.tsig import Acl
from sockhop.dns.zone import read_zone_text
from tests.dns.signed import ZONE, start_unbound, validated
from tests.support import end_process, require_tool

with warnings.catch_warnings():  # dnspython imports cryptography's DSA, which warns it is deprecated
    warnings.simplefilter("ignore")
    import dns.dnssec

PEER = ("127.0.0.1", 5300)


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sockhop", *args], capture_output=True, text=True, timeout=30, cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip


def test_keygen_writes_a_private_key_and_ds_prints_its_ds(tmp_path):
    done = run("dns", "keygen", "example.com", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "example.com.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = keys.load(path)
    ds = run("dns", "ds", "example.com", cwd=tmp_path)
    assert ds.returncode == 0 and ds.stdout.strip() == key.ds_text()
    assert ds.stdout.strip() in done.stdout
    assert ds.stdout.split()[3:6] == ["DS", str(key.tag), "13"]
    again = run("dns", "keygen", "example.com", cwd=tmp_path)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "already exists" in again.stderr
    ed = run("dns", "keygen", "example.com", "-a", "ed25519", "--key", str(tmp_path / "ed.key"))
    assert ed.returncode == 0 and keys.load(tmp_path / "ed.key").dnskey.algorithm == 15
    wrong = run("dns", "ds", "example.org", "--key", str(path))
    assert wrong.returncode == 1 and "is for example.com." in wrong.stderr and "Traceback" not in wrong.stderr


@pytest.mark.parametrize(
    "content, mode, words",
    [
        ("not a key\n", 0o600, "not a sockhop key file"),
        (
            "; zone example.com.\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            0o600,
            "cannot be read",
        ),
        (None, 0o644, "readable by others"),
        (None, 0o600, "which no zone file here holds"),
    ],
)
def test_a_key_file_that_does_not_load_stops_start_up_with_one_line(tmp_path, content, mode, words):
    (tmp_path / "example.com").write_text(ZONE)
    path = tmp_path / "k.key"
    if content is None:
        keys.save(keys.generate("example.org" if "zone file" in words else "example.com"), path)
    else:
        path.write_text(content)
    path.chmod(mode)
    done = run("serve", "dns", str(tmp_path / "example.com"), "--sign", str(path), "--listen", "127.0.0.1:0")
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
    missing = run("serve", "dns", str(tmp_path / "example.com"), "--sign", str(tmp_path / "no.key"))
    assert missing.returncode != 0 and "no such key file" in missing.stderr and missing.stderr.count("\n") == 1


QUESTIONS = [
    ("www.example.com", "A", dns.rcode.NOERROR),
    ("example.com", "DNSKEY", dns.rcode.NOERROR),
    ("www.example.com", "MX", dns.rcode.NOERROR),  # NODATA
    ("b.c.example.com", "A", dns.rcode.NOERROR),  # an empty non-terminal
    ("x.wild.example.com", "A", dns.rcode.NOERROR),
    ("x.wild.example.com", "MX", dns.rcode.NOERROR),
    ("foo.cwild.example.com", "A", dns.rcode.NOERROR),
    ("alias.example.com", "A", dns.rcode.NOERROR),
    ("secure.example.com", "DS", dns.rcode.NOERROR),
    ("sub.example.com", "DS", dns.rcode.NOERROR),  # an insecure delegation
    ("never-asked-1.example.com", "A", dns.rcode.NXDOMAIN),
    ("a.b.never-asked-2.example.com", "AAAA", dns.rcode.NXDOMAIN),
    ("Zz.example.com", "TXT", dns.rcode.NXDOMAIN),
    ("x.*.example.com", "A", dns.rcode.NXDOMAIN),  # one white lie denies the name and the wildcard
    ("[.example.com", "A", dns.rcode.NXDOMAIN),
]


@pytest.mark.interop
@pytest.mark.parametrize("algorithm", ["ECDSAP256SHA256", "ED25519"])
def test_unbound_validates_the_online_signed_zone_and_ldns_verifies_its_axfr(sockhop_server, tmp_path, algorithm):
    verify = require_tool("ldns-verify-zone")
    (tmp_path / "example.com").write_text(ZONE)
    assert run("dns", "keygen", "example.com", "-a", algorithm, cwd=tmp_path).returncode == 0
    ds = run("dns", "ds", "example.com", cwd=tmp_path).stdout.strip()
    server = sockhop_server(
        ["serve", "dns", str(tmp_path / "example.com"), "--sign", str(tmp_path / "example.com.key"),
         "--listen", "127.0.0.1:0", "--allow-transfer", "127.0.0.1"],
        announce=2,
    )  # fmt: skip
    port = server.address("dns", "udp")[1]
    proc, resolver = start_unbound(tmp_path / "unbound", ds, port)
    try:
        for name, rdtype, rcode in QUESTIONS:
            reply = validated(resolver, name, rdtype)
            assert reply.rcode() == rcode and reply.flags & dns.flags.AD, (name, rdtype, reply)
    finally:
        end_process(proc)
    transfer = dns.query.tcp(dns.message.make_query("example.com", "AXFR"), "127.0.0.1", port=port, timeout=10)
    records = "".join(rrset.to_text() + "\n" for rrset in transfer.answer[:-1])  # the closing SOA once is enough
    (tmp_path / "axfr.zone").write_text(records)
    done = subprocess.run([verify, str(tmp_path / "axfr.zone")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Zone is verified and complete" in done.stdout, done.stdout + done.stderr


# -- sans-IO: the clock handed in -------------------------------------------------------------------------------------
class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_signatures_are_kept_then_renewed_before_they_expire():
    clock = Clock(1_800_000_000.0)
    zone = read_zone_text(ZONE, "example.com")
    attach([zone], [keys.generate("example.com")], clock)
    server = NameServer([zone])
    server.tick(clock.now)
    proto = DnsDatagram(server)

    def rrsig():
        query = dns.message.make_query("www.example.com", "A", want_dnssec=True)
        (reply,) = proto.datagram_received(query.to_wire(), PEER)
        (sig,) = [r for r in dns.message.from_wire(reply).answer if r.rdtype == dns.rdatatype.RRSIG]
        return sig[0]

    first = rrsig()
    assert first.inception <= clock.now and first.expiration == int(clock.now) + VALIDITY
    clock.now += RENEW_REPLIES + 1
    server.tick(clock.now)
    assert rrsig() == first  # the encoded replies renewed, the signature kept: not yet due
    clock.now += RENEW
    server.tick(clock.now)
    renewed = rrsig()
    assert renewed.expiration == int(clock.now) + VALIDITY and renewed.expiration - clock.now > RENEW


def test_over_tcp_alone_the_replies_are_renewed_by_the_signers_clock():
    """--tcp-only: no datagram brings the engine's clock, so a new connection renews by the signer's."""
    clock = Clock(1_800_000_000.0)
    zone = read_zone_text(ZONE, "example.com")
    attach([zone], [keys.generate("example.com")], clock)
    server = NameServer([zone])
    query = dns.message.make_query("www.example.com", "A", want_dnssec=True).to_wire()

    def expiration() -> int:
        stream = DnsStream(server)
        stream.connection_made(PEER, ("127.0.0.1", 53))
        out = b"".join(stream.data_received(len(query).to_bytes(2, "big") + query).send)
        (sig,) = [r for r in dns.message.from_wire(out[2:]).answer if r.rdtype == dns.rdatatype.RRSIG]
        return sig[0].expiration

    first = expiration()
    clock.now += RENEW + RENEW_REPLIES + 1
    assert expiration() == int(clock.now) + VALIDITY != first


# -- sans-IO: every signature an answer carries verifies ---------------------------------------------------------------
def covered(reply: dns.message.Message, rrsig) -> list:
    """The RRsets of a reply's answer and authority that an RRSIG RRset covers (same owner, the covered type)."""
    return [
        rrset
        for rrset in reply.answer + reply.authority
        if rrset.name == rrsig.name and rrset.rdtype == rrsig.covers and rrset.rdtype != dns.rdatatype.RRSIG
    ]


@pytest.mark.parametrize("algorithm", ["ECDSAP256SHA256", "ED25519"])
def test_every_rrsig_in_answers_and_transfer_verifies_with_dnspython(algorithm):
    """The signing path builds what it signs from bytes of its own: dnspython's validator checks every signature of
    every kind of answer (names in odd case, wildcards, white lies, delegations) and of the whole zone's transfer."""
    from tests.dns.signed import QUESTIONS as KINDS

    zone = read_zone_text(ZONE, "example.com")
    key = keys.generate("example.com", algorithm)
    attach([zone], [key], Clock(1_800_000_000.0))
    server = NameServer([zone])
    keyring = {zone.origin: zone.signer.dnskey}
    now = 1_800_000_000.0 + 60
    extra = [(name, rdtype) for name, rdtype, _ in QUESTIONS]  # names never asked before, in odd case too
    questions = [*KINDS, *extra, ("WwW.ExAmPlE.CoM", "A"), ("WWW.example.COM", "MX"), ("Nx.Never.EXAMPLE.com", "TXT")]
    checked = 0
    for name, rdtype in questions:
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        reply = dns.message.from_wire(server.respond(query.to_wire(), PEER, tcp=True))
        for rrsig in [rrset for rrset in reply.answer + reply.authority if rrset.rdtype == dns.rdatatype.RRSIG]:
            (rrset,) = covered(reply, rrsig)
            dns.dnssec.validate(rrset, rrsig, keyring, now=now)  # raises ValidationFailure if not
            checked += 1
    assert checked > len(questions)  # one at least in every answer, most have more
    records = list(zone.signer.transfer(zone))
    signatures = [rrset for rrset in records if rrset.rdtype == dns.rdatatype.RRSIG]
    for rrsig in signatures:
        (rrset,) = [r for r in records if r.name == rrsig.name and r.rdtype == rrsig.covers][:1]
        dns.dnssec.validate(rrset, rrsig, keyring, now=now)
    assert len(signatures) > 20


def test_a_nodata_proof_lists_the_types_a_dynamic_update_added():
    """The white lies are kept by the name they deny, so a change at that name must drop them: the NSEC proving
    there is no A at an empty non-terminal lists the MX an update adds there; www's, untouched, stays as it was."""
    clock = Clock(1_800_000_000.0)
    zone = read_zone_text(ZONE, "example.com")
    attach([zone], [keys.generate("example.com")], clock)

    def nsec_types(server, name: str, rdtype: str) -> set[str]:
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        reply = dns.message.from_wire(server.respond(query.to_wire(), PEER, tcp=True))
        assert reply.rcode() == dns.rcode.NOERROR and not reply.answer, reply
        (nsec,) = [rrset for rrset in reply.authority if rrset.rdtype == dns.rdatatype.NSEC]
        return set(nsec[0].to_text().split()[1:])

    with tempfile.TemporaryDirectory() as folder:
        journal = Journal(Path(folder) / "j.jnl", zone.origin)
        server = NameServer([zone], journals={zone.origin: journal}, allow_update=Acl([ipaddress.ip_network(PEER[0])]))
        assert nsec_types(server, "www.example.com", "TXT") == {"A", "AAAA", "RRSIG", "NSEC"}
        assert nsec_types(server, "b.c.example.com", "A") == {"RRSIG", "NSEC"}  # an empty non-terminal
        message = dns.update.UpdateMessage("example.com.")
        message.add("b.c", 300, "MX", "10 mail.example.com.")
        reply, _ = server.update(message.to_wire(), PEER)()
        assert dns.message.from_wire(reply).rcode() == dns.rcode.NOERROR
        assert nsec_types(server, "b.c.example.com", "A") == {"MX", "RRSIG", "NSEC"}
        assert nsec_types(server, "www.example.com", "TXT") == {"A", "AAAA", "RRSIG", "NSEC"}
