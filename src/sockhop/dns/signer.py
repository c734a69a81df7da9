"""Online signing (``serve dns --sign KEYFILE``): a zone file without signatures served as a signed zone, as BIND's
and Knot's online signers serve it.

The DNSKEY is published at the apex; each RRset is signed the first time an answer needs it and the signature is
kept (by owner, type and TTL) until it is due for renewal: signatures are valid from an hour ago (clocks disagree)
to ``VALIDITY`` ahead, and renewed once ``RENEW`` of that has passed -- the server also drops its encoded replies
then (:meth:`NameServer.tick`), and a reload starts afresh. Names that do not exist are denied by minimally
covering NSEC records (RFC 4470's "white lies"): an NSEC from just before the name to just after it, signed on the
spot, so the zone's names cannot be walked and nothing needs to be precomputed; each is kept with its RRSIG by the
name it denies, until due for renewal too (a name's A and AAAA questions come together; the NSEC denying the
wildcard under an existing name serves every name under it), and those at names a dynamic update changed are
forgotten with their signatures. A zone transfer gets the whole zone signed with a complete NSEC chain, as a
secondary or a zone checker (ldns-verify-zone) expects.

Answers are signed where the time goes, once per query for a name never asked before: the data to sign is put
together from bytes made once per zone (RFC 4034 section 3.1.8.1: the RRSIG's fields, the signer's name, the
records in canonical form), the key object dnspython wraps around the private key signs it, and the RRSIG and the
white-lie NSEC go into the answer as wire records (:class:`WireRecord`): their owner names compressed by dnspython's
renderer like any other, the rest bytes. Neither is ever made into dnspython objects, which would only be turned
back into the same bytes. A zone transfer gets real RRsets, made from the same bytes.

The clock is handed in by the service (``clock``); signing is the only thing here that needs one.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rrset

from sockhop.dns.authority import Answer
from sockhop.dns.keys import SigningKey
from sockhop.dns.proofs import next_closer, wildcard_of
from sockhop.dns.zone import Zone

with warnings.catch_warnings():  # dnspython imports cryptography's DSA, which warns it is deprecated
    warnings.simplefilter("ignore")
    import dns.dnssec

RdataType = dns.rdatatype.RdataType
VALIDITY = 14 * 86400  # how long a signature holds
RENEW = 7 * 86400  # signatures older than this are made again
SKEW = 3600  # inception this far in the past, for resolvers whose clocks are behind
SIGS_KEPT = 200_000  # signatures of the zone's RRsets kept; forgotten all at once past this (a huge zone's)
DENIALS_KEPT = 50_000  # white lies kept with their signatures; likewise (names asked at random are many)
IN = dns.rdataclass.IN
RRSIG_FIELDS = struct.Struct("!HBBIIIH")  # type covered, algorithm, labels, original TTL, expiration, inception, tag
RR_FIXED = struct.Struct("!HHI")  # type, class, TTL
COMPRESSED = struct.Struct("!H")  # a pointer to a name earlier in the message (RFC 1035 section 4.1.4)


class WireRecord:
    """Records of an answer at one owner already in wire form: the owner name, rendered (and compressed) by
    dnspython's message renderer as any owner is, then type, class, TTL, length and RDATA as bytes -- and any more
    records at that owner (an NSEC's RRSIG) after a pointer to it. Stands in for an RRset in an answer's sections
    (the renderer asks only ``to_wire``; the answer's code ``name`` and ``rdtype``, the first record's)."""

    __slots__ = ("name", "rdtype", "wire", "more")

    def __init__(self, name: dns.name.Name, rdtype: int, ttl: int, rdata: bytes) -> None:
        self.name = name
        self.rdtype = rdtype
        self.wire = RR_FIXED.pack(rdtype, IN, ttl) + len(rdata).to_bytes(2, "big") + rdata
        self.more: tuple[bytes, ...] = ()

    @property
    def ttl(self) -> int:
        return int.from_bytes(self.wire[4:8], "big")

    @property
    def rdata(self) -> bytes:
        return self.wire[10:]

    def renamed(self, name: dns.name.Name) -> WireRecord:
        record = WireRecord.__new__(WireRecord)
        record.name, record.rdtype, record.wire, record.more = name, self.rdtype, self.wire, self.more
        return record

    def followed_by(self, other: WireRecord) -> WireRecord:
        """These records and then ``other`` at the same owner, rendered as one (its owner a pointer to theirs)."""
        record = self.renamed(self.name)
        record.more = (*self.more, other.wire, *other.more)
        return record

    def to_rrset(self) -> dns.rrset.RRset:
        """The first record as dnspython's RRset (a zone transfer, a test)."""
        rdata = dns.rdata.from_wire(IN, self.rdtype, self.rdata, 0, len(self.rdata))
        return dns.rrset.from_rdata(self.name, self.ttl, rdata)

    def to_wire(self, file: Any, compress: dict | None = None, origin: dns.name.Name | None = None, **kw: Any) -> int:
        at = compress.get(self.name) if compress is not None else None
        if at is None:
            at = file.tell()
            self.name.to_wire(file, compress, origin)
        else:  # the owner is in the message already (the SOA's, for its RRSIG): the pointer dnspython would write
            file.write(COMPRESSED.pack(0xC000 + at))
        file.write(self.wire)
        for wire in self.more:
            if at <= 0x3FFF and compress is not None:
                file.write(COMPRESSED.pack(0xC000 + at))
            else:  # too far into the message for a pointer
                self.name.to_wire(file, compress, origin)
            file.write(wire)
        return 1 + len(self.more)

    def __repr__(self) -> str:
        return f"<WireRecord {self.to_rrset()}{f' and {len(self.more)} more' if self.more else ''}>"


def bitmap(types: Iterator[int] | list[int]) -> bytes:
    """An NSEC type bitmap in wire form: the types given, RRSIG and NSEC."""
    out = io.BytesIO()
    dns.rdtypes.ANY.NSEC.Bitmap.from_rdtypes(sorted({*types, RdataType.RRSIG, RdataType.NSEC})).to_wire(out)
    return out.getvalue()


class Signer:
    """Signs one zone's RRsets with one key, and makes its denial records."""

    def __init__(self, zone: Zone, key: SigningKey, clock: Callable[[], float]) -> None:
        self.origin = zone.origin
        self.key = key
        self.clock = clock
        #: RRSIGs of the zone's RRsets, by owner, type, TTL (and an NSEC's next name), until due for renewal
        self.sigs: dict[tuple, tuple[WireRecord, float]] = {}
        #: white lies and their RRSIGs, by ("cover", "match" or "wildcard", the name), until due for renewal
        self.denials: dict[tuple, tuple[WireRecord, float]] = {}
        self.lock = threading.Lock()
        soa = zone.soa
        self.negative_ttl = min(soa.ttl, soa[0].minimum)
        self.dnskey = dns.rrset.from_rdata(zone.origin, soa.ttl, key.dnskey)
        # dnspython's own key object, made once (sign() would wrap the key anew each time), and no policy check
        # per signature: the algorithms keygen makes are the ones RFC 8624 recommends
        self.private = dns.dnssec.get_algorithm_cls_from_dnskey(key.dnskey)(key=key.private)
        # what every signature repeats, made once: the key tag (a checksum of the DNSKEY), the signer's name as
        # signed (lower case) and as sent
        self.algorithm = key.dnskey.algorithm
        self.key_tag = key.tag
        self.signer_digest = zone.origin.to_digestable()
        self.signer_wire = zone.origin.to_wire()
        self.cover_bitmap = bitmap([])  # a covering white lie's types: RRSIG and NSEC

    # -- signatures ----------------------------------------------------------------------------------------------
    def rrsig(
        self, name: dns.name.Name, rdtype: int, ttl: int, rdatas: list[bytes], now: float, owner: dns.name.Name
    ) -> WireRecord:
        """A new RRSIG, under ``owner``, of the records at ``name`` of one type whose RDATAs in canonical form are
        ``rdatas`` (RFC 4034 section 3.1.8.1; the name's own labels, less a wildcard's ``*``)."""
        labels = len(name) - 1 - (1 if name.is_wild() else 0)
        fields = RRSIG_FIELDS.pack(
            rdtype, self.algorithm, labels, ttl, int(now) + VALIDITY, int(now) - SKEW, self.key_tag
        )
        head = name.to_digestable() + RR_FIXED.pack(rdtype, IN, ttl)
        data = [fields, self.signer_digest]
        for rdata in sorted(rdatas):
            data += (head, len(rdata).to_bytes(2, "big"), rdata)
        signature = self.private.sign(b"".join(data), False, False)
        return WireRecord(owner, RdataType.RRSIG, ttl, fields + self.signer_wire + signature)

    def signature(self, rrset: dns.rrset.RRset, owner: dns.name.Name | None = None) -> WireRecord:
        """The RRSIG of ``rrset`` (kept, until due for renewal), under ``owner`` if given (a wildcard's signature
        under the name asked)."""
        # an NSEC's content varies (a zone transfer's chain): its next name is in the key
        key = (rrset.name, rrset.rdtype, rrset.ttl, rrset[0].next if rrset.rdtype == RdataType.NSEC else None)
        now = self.clock()
        found = self.sigs.get(key)
        if found is None or now >= found[1]:
            rdatas = [rdata.to_digestable(self.origin) for rdata in rrset]
            found = (self.rrsig(rrset.name, rrset.rdtype, rrset.ttl, rdatas, now, rrset.name), now + RENEW)
            with self.lock:
                if len(self.sigs) > SIGS_KEPT:
                    self.sigs.clear()
                self.sigs[key] = found
        sig = found[0]
        return sig if owner is None or owner == sig.name else sig.renamed(owner)

    def sign(self, rrset: dns.rrset.RRset, owner: dns.name.Name | None = None) -> dns.rrset.RRset:
        """The RRSIG of ``rrset`` as dnspython's RRset (see :meth:`signature`)."""
        return self.signature(rrset, owner).to_rrset()

    def forget(self, names: set[dns.name.Name]) -> None:
        """Drop the signatures kept for RRsets at these names (a dynamic update changed them) and the apex's (its
        SOA serial changed), and the white lies about them."""
        names = names | {self.origin}
        with self.lock:
            self.sigs = {key: found for key, found in self.sigs.items() if key[0] not in names}
            self.denials = {key: found for key, found in self.denials.items() if key[1] not in names}

    def signs(self, zone: Zone, rrset: dns.rrset.RRset) -> bool:
        """Whether the zone is authoritative for this RRset: not glue, not a delegation's NS."""
        name = rrset.name
        if rrset.rdtype == RdataType.RRSIG or not name.is_subdomain(self.origin):
            return False
        if not zone.cuts:
            return True
        if len(zone.cuts) <= 8:  # a few delegations: compare, rather than build every ancestor's name
            cut = next((cut for cut in zone.cuts if name.is_subdomain(cut)), None)
            return cut is None or (cut == name and rrset.rdtype in (RdataType.DS, RdataType.NSEC))
        for labels in range(len(self.origin) + 1, len(name) + 1):
            above = name.split(labels)[1]
            if above in zone.cuts:
                return above == name and rrset.rdtype in (RdataType.DS, RdataType.NSEC)
        return True

    # -- answers -------------------------------------------------------------------------------------------------
    def secure(self, zone: Zone, result: Answer) -> None:
        """Every RRSIG, then the denial records for the answer's notes (see proofs.secure for the pre-signed
        kind)."""
        wildcards: dict[dns.name.Name, dns.name.Name] = {}
        denial: list[WireRecord | dns.rrset.RRset] = []  # white lies with their RRSIGs, or a DS to sign
        for proof in result.proofs:
            kind, name = proof[0], proof[1]
            if kind == "nxdomain":
                closer = next_closer(name, proof[2])
                denial.append(self.covering(closer))
                if closer[0] != b"*":  # else that NSEC denies the wildcard too
                    denial.append(self.covering_wildcard(proof[2]))
            elif kind == "nodata":
                denial.append(self.matching(zone, name))
            elif kind == "wildcard":
                wildcards[name] = proof[2]
                denial.append(self.covering(next_closer(name, proof[2].parent())))
            elif kind == "wildcard_nodata":
                denial.append(self.covering(next_closer(name, proof[2].parent())))
                denial.append(self.matching(zone, proof[2]))
            elif kind == "referral":
                ds = zone.get(name, RdataType.DS)
                denial.append(ds if ds is not None else self.matching(zone, name))
        result.answer = self.signed(zone, result.answer, wildcards)
        authority = self.signed(zone, result.authority, wildcards)
        added: list = []  # the first record of each denial added: one NSEC may prove two notes of a CNAME chain
        for records in denial:
            if any(other.rdtype == records.rdtype and other.name == records.name for other in added):
                continue
            added.append(records)
            authority.extend(self.signed(zone, [records], {}) if isinstance(records, dns.rrset.RRset) else [records])
        result.authority = authority
        result.additional = self.signed(zone, result.additional, wildcards)

    def signed(self, zone: Zone, section: list[dns.rrset.RRset], wildcards: dict[dns.name.Name, dns.name.Name]) -> list:
        out: list = []
        for rrset in section:
            out.append(rrset)
            if not self.signs(zone, rrset):
                continue
            wildcard = wildcards.get(rrset.name) if wildcards else None
            source = zone.get(wildcard, rrset.rdtype) if wildcard is not None else None
            if source is not None and source.ttl == rrset.ttl:
                out.append(self.signature(source, owner=rrset.name))  # the wildcard's own signature (its label count)
            else:
                out.append(self.signature(rrset))
        return out

    def nsec(self, owner: dns.name.Name, next_name: dns.name.Name, types: Iterator[int] | list[int]) -> dns.rrset.RRset:
        windows = dns.rdtypes.ANY.NSEC.Bitmap.from_rdtypes(sorted({*types, RdataType.RRSIG, RdataType.NSEC}))
        rdata = dns.rdtypes.ANY.NSEC.NSEC(IN, RdataType.NSEC, next_name, windows)
        return dns.rrset.from_rdata(owner, self.negative_ttl, rdata)

    def white_lie(self, key: tuple, make: Callable[[], tuple[dns.name.Name, dns.name.Name, bytes]]) -> WireRecord:
        """An NSEC followed by its RRSIG, in wire form, kept by ``key`` until due for renewal; ``make()`` gives its
        owner, its next name and its type bitmap. The next name goes in lower case: RFC 4034 signs it so and RFC 6840 as
        sent, which then agree."""
        now = self.clock()
        found = self.denials.get(key)
        if found is None or now >= found[1]:
            owner, next_name, types = make()
            rdata = next_name.to_digestable() + types
            ttl = self.negative_ttl
            nsec = WireRecord(owner, RdataType.NSEC, ttl, rdata)
            found = (nsec.followed_by(self.rrsig(owner, RdataType.NSEC, ttl, [rdata], now, owner)), now + RENEW)
            with self.lock:
                if len(self.denials) > DENIALS_KEPT:
                    self.denials.clear()
                self.denials[key] = found
        return found[0]

    def matching(self, zone: Zone, name: dns.name.Name) -> WireRecord:
        """An NSEC at an existing name (or empty non-terminal) listing its types, its next name just after it."""
        return self.white_lie(("match", name), lambda: (name, successor(name), bitmap(list(zone.rrsets.get(name, {})))))

    def covering_wildcard(self, encloser: dns.name.Name) -> WireRecord:
        """The covering NSEC of the ``*`` child of ``encloser`` (kept by the encloser: the wildcard's name is made only
        when its NSEC is)."""
        return self.white_lie(("wildcard", encloser), lambda: self.covering_parts(wildcard_of(encloser)))

    def covering(self, name: dns.name.Name) -> WireRecord:
        """An NSEC from just before ``name`` to just after it and everything under it: nothing else is between."""
        return self.white_lie(("cover", name), lambda: self.covering_parts(name))

    def covering_parts(self, name: dns.name.Name) -> tuple[dns.name.Name, dns.name.Name, bytes]:
        return predecessor(name, self.origin), sibling_after(name), self.cover_bitmap

    # -- a zone transfer -----------------------------------------------------------------------------------------
    def transfer(self, zone: Zone) -> Iterator[dns.rrset.RRset]:
        """The whole zone signed, with a complete NSEC chain: SOA first and last."""
        owners = sorted(name for name in zone.rrsets if self._authoritative_owner(zone, name))
        soa = zone.soa
        yield soa
        yield self.sign(soa)
        for i, name in enumerate(owners):
            node = zone.rrsets[name]
            for rdtype, rrset in sorted(node.items()):
                if name == self.origin and rdtype == RdataType.SOA:
                    continue
                yield rrset
                if self.signs(zone, rrset):
                    yield self.sign(rrset)
            nsec = self.nsec(name, owners[(i + 1) % len(owners)], list(node))
            yield nsec
            yield self.sign(nsec)
        for name, node in sorted(zone.rrsets.items()):  # glue, below the cuts
            if name not in owners:
                yield from (rrset for _, rrset in sorted(node.items()))
        yield soa

    def _authoritative_owner(self, zone: Zone, name: dns.name.Name) -> bool:
        return all(name.split(labels)[1] not in zone.cuts for labels in range(len(self.origin) + 1, len(name)))


# -- RFC 4470's epsilon functions ------------------------------------------------------------------------------------
def successor(name: dns.name.Name) -> dns.name.Name:
    """The first name after ``name`` in canonical order: ``\\000.name`` (or the next sibling, if too long)."""
    try:
        return dns.name.Name((b"\x00", *name.labels))
    except dns.name.NameTooLong:
        return sibling_after(name)


def sibling_after(name: dns.name.Name) -> dns.name.Name:
    """A name after ``name`` and all names under it: its first label with a zero byte added (RFC 4034's order
    puts a name's descendants before its next sibling)."""
    label = name[0].lower()
    if len(label) < 63:
        return dns.name.Name((label + b"\x00", *name.labels[1:]))
    return dns.name.Name((label[:-1] + bytes([min(label[-1] + 1, 255)]), *name.labels[1:]))


def predecessor(name: dns.name.Name, origin: dns.name.Name) -> dns.name.Name:
    """A name just before ``name`` (and before anything under its predecessor sibling that exists in practice): the
    first label's last byte one less, then ``\\xff``; the apex's own is never needed (the apex exists)."""
    if name == origin:
        return origin
    label = name[0].lower()
    last = label[-1]
    if last == 0:
        shorter = label[:-1]
        return dns.name.Name((shorter, *name.labels[1:])) if shorter else name.parent()
    last -= 1
    if 0x41 <= last <= 0x5A:  # an upper-case letter would sort as its lower case, after the name
        last = 0x40
    label = label[:-1] + bytes([last])
    if len(label) < 63:
        label += b"\xff"
    return dns.name.Name((label, *name.labels[1:]))


def attach(zones: list[Zone], keys: list[SigningKey], clock: Callable[[], float]) -> list[Zone]:
    """Give each zone with a key its signer: the DNSKEY published, the file's own DNSSEC records set aside."""
    by_zone = {key.zone: key for key in keys}
    for zone in zones:
        key = by_zone.get(zone.origin)
        if key is None:
            continue
        zone.sigs, zone.nsec3, zone.nsec3_hashes, zone.nsec_owners = {}, {}, [], []
        for node in zone.rrsets.values():
            for rdtype in (RdataType.NSEC, RdataType.NSEC3PARAM):
                node.pop(rdtype, None)
        signer = Signer(zone, key, clock)
        zone.rrsets[zone.origin][RdataType.DNSKEY] = signer.dnskey
        zone.signer = signer
    return zones
