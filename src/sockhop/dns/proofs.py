"""DNSSEC answers from a pre-signed zone (RFC 4035 section 3.1, RFC 5155 section 7.2): the signatures of every
RRset in a reply, and the NSEC or NSEC3 records that prove what does not exist.

The authority notes what each answer must prove as it finds it (:attr:`Answer.proofs`); this module turns those
notes into records, all taken from the zone file as its signer wrote them -- nothing here signs or hashes but
NSEC3's name hash, which dnspython computes. A zone signed online (:mod:`sockhop.dns.signer`) is handed to its
signer instead.
"""

from __future__ import annotations

import bisect
import warnings

import dns.name
import dns.rdatatype
import dns.rdtypes.ANY.RRSIG
import dns.rrset

from sockhop.dns.authority import Answer
from sockhop.dns.zone import Zone

RdataType = dns.rdatatype.RdataType
HASHES_KEPT = 10_000  # NSEC3 hashes remembered per zone; forgotten all at once past this

with warnings.catch_warnings():  # dnspython imports cryptography's DSA, which warns it is deprecated
    warnings.simplefilter("ignore")
    import dns.dnssec


def secure(zone: Zone, result: Answer) -> None:
    """Add the denial records and every signature a DO query's answer needs."""
    if zone.signer is not None:
        zone.signer.secure(zone, result)  # type: ignore[attr-defined]
        return
    wildcards: dict[dns.name.Name, dns.name.Name] = {}
    denial = Denial(zone)
    for proof in result.proofs:
        kind, name = proof[0], proof[1]
        if kind == "nxdomain":
            denial.nxdomain(name, proof[2])
        elif kind == "nodata":
            denial.nodata(name)
        elif kind == "wildcard":
            wildcards[name] = proof[2]
            denial.wildcard(name, proof[2])
        elif kind == "wildcard_nodata":
            denial.wildcard_nodata(name, proof[2])
        elif kind == "referral":
            denial.referral(name)
    present = {(rrset.name, rrset.rdtype) for rrset in result.authority}
    for rrset in denial.records:
        if (rrset.name, rrset.rdtype) not in present:
            present.add((rrset.name, rrset.rdtype))
            result.authority.append(rrset)
    result.answer = signed(zone, result.answer, wildcards)
    result.authority = signed(zone, result.authority, wildcards)
    result.additional = signed(zone, result.additional, wildcards)


def signed(
    zone: Zone, section: list[dns.rrset.RRset], wildcards: dict[dns.name.Name, dns.name.Name]
) -> list[dns.rrset.RRset]:
    """The section with each RRset followed by its RRSIGs (a wildcard's, under the name asked, for a synthesized
    one)."""
    out: list[dns.rrset.RRset] = []
    for rrset in section:
        out.append(rrset)
        sig = signature(zone, rrset.name, rrset.rdtype)
        if sig is None and rrset.name in wildcards:
            sig = signature(zone, wildcards[rrset.name], rrset.rdtype)
            if sig is not None:
                sig = renamed(sig, rrset.name)
        if sig is not None:
            if sig.ttl > rrset.ttl:  # a negative answer's SOA, its TTL lowered to the minimum: so is its RRSIG's
                sig = renamed(sig, sig.name)
                sig.ttl = rrset.ttl
            out.append(sig)
    return out


def signature(zone: Zone, name: dns.name.Name, rdtype: int) -> dns.rrset.RRset | None:
    node = zone.sigs.get(name)
    return None if node is None else node.get(rdtype)


def renamed(rrset: dns.rrset.RRset, name: dns.name.Name) -> dns.rrset.RRset:
    copy = dns.rrset.RRset(name, rrset.rdclass, rrset.rdtype, rrset.covers)
    copy.update(rrset)
    return copy


def next_closer(name: dns.name.Name, encloser: dns.name.Name) -> dns.name.Name:
    """The name one label longer than the closest encloser on the way to ``name`` (RFC 5155 section 1.3)."""
    depth = len(encloser) + 1
    return name if len(name) == depth else name.split(depth)[1]


def wildcard_of(encloser: dns.name.Name) -> dns.name.Name:
    return dns.name.Name((b"*", *encloser.labels))


class Denial:
    """The NSEC or NSEC3 records (with their signatures added later) that prove the notes of one answer."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.records: list[dns.rrset.RRset] = []
        self.nsec3 = bool(zone.nsec3)

    def add(self, rrset: dns.rrset.RRset | None) -> None:
        if rrset is not None and all(rrset is not other for other in self.records):
            self.records.append(rrset)

    # -- NSEC (RFC 4035 section 3.1.3) ---------------------------------------------------------------------------
    def nsec_at_or_before(self, name: dns.name.Name) -> dns.rrset.RRset | None:
        """The NSEC whose owner is ``name`` or, if none, the one that covers it (the last owner before it)."""
        owners = self.zone.nsec_owners
        if not owners:
            return None
        at = bisect.bisect_right(owners, name) - 1
        return self.zone.rrsets[owners[at]][RdataType.NSEC]

    # -- NSEC3 (RFC 5155 section 7.2) ----------------------------------------------------------------------------
    def hashed(self, name: dns.name.Name) -> str:
        zone = self.zone
        memo = zone.nsec3_memo
        found = memo.get(name)
        if found is None:
            first = zone.nsec3[zone.nsec3_hashes[0]][0]
            if len(memo) > HASHES_KEPT:
                memo.clear()
            found = memo[name] = dns.dnssec.nsec3_hash(name, first.salt, first.iterations, first.algorithm).lower()
        return found

    def nsec3_matching(self, name: dns.name.Name) -> dns.rrset.RRset | None:
        return self.zone.nsec3.get(self.hashed(name))

    def nsec3_covering(self, name: dns.name.Name) -> dns.rrset.RRset:
        hashes = self.zone.nsec3_hashes
        at = bisect.bisect_left(hashes, self.hashed(name)) - 1  # the last hash before it, wrapping to the last
        return self.zone.nsec3[hashes[at]]

    def encloser_proof(self, name: dns.name.Name) -> dns.name.Name:
        """The closest (provable) encloser proof: the NSEC3 matching the closest encloser and the one covering the
        next closer name. Returns the encloser."""
        encloser = name.parent()
        while self.nsec3_matching(encloser) is None and len(encloser) > len(self.zone.origin):
            encloser = encloser.parent()
        self.add(self.nsec3_matching(encloser))
        self.add(self.nsec3_covering(next_closer(name, encloser)))
        return encloser

    # -- what each kind of answer needs --------------------------------------------------------------------------
    def nxdomain(self, name: dns.name.Name, encloser: dns.name.Name) -> None:
        if self.nsec3:
            self.add(self.nsec3_matching(encloser))
            self.add(self.nsec3_covering(next_closer(name, encloser)))
            self.add(self.nsec3_covering(wildcard_of(encloser)))
        else:
            self.add(self.nsec_at_or_before(name))
            self.add(self.nsec_at_or_before(wildcard_of(encloser)))

    def nodata(self, name: dns.name.Name) -> None:
        if not self.nsec3:
            self.add(self.nsec_at_or_before(name))
            return
        matching = self.nsec3_matching(name)
        if matching is not None:
            self.add(matching)
        else:  # a DS question at an opt-out delegation: the closest provable encloser and the opt-out span
            self.encloser_proof(name)

    def wildcard(self, name: dns.name.Name, wildcard: dns.name.Name) -> None:
        if self.nsec3:
            self.add(self.nsec3_covering(next_closer(name, wildcard.parent())))
        else:
            self.add(self.nsec_at_or_before(name))

    def wildcard_nodata(self, name: dns.name.Name, wildcard: dns.name.Name) -> None:
        encloser = wildcard.parent()
        if self.nsec3:
            self.add(self.nsec3_matching(encloser))
            self.add(self.nsec3_covering(next_closer(name, encloser)))
            self.add(self.nsec3_matching(wildcard))
        else:
            self.add(self.nsec_at_or_before(name))
            self.add(self.nsec_at_or_before(wildcard))

    def referral(self, cut: dns.name.Name) -> None:
        """A signed delegation carries its DS; an unsigned one the proof that it has none."""
        ds = self.zone.get(cut, RdataType.DS)
        if ds is not None:
            self.add(ds)
        elif self.nsec3:
            self.nodata(cut)
        else:
            self.add(self.nsec_at_or_before(cut))


def problems(zone: Zone, now: float) -> list[str]:
    """What is wrong with a pre-signed zone's DNSSEC, one line per problem: it is served anyway (a validator will
    answer SERVFAIL for what it cannot verify; the operator re-signs), but the operator must hear of it."""
    if not zone.presigned or zone.signer is not None:
        return []
    found: list[str] = []
    where = f"{zone.source or zone.origin}"
    sigs = [rdata for node in zone.sigs.values() for rrset in node.values() for rdata in rrset]
    expired = [rdata.expiration for rdata in sigs if rdata.expiration < now]
    if expired:
        found.append(
            f"{where}: {len(expired)} of {len(sigs)} signatures have expired (the first on "
            f"{dns.rdtypes.ANY.RRSIG.posixtime_to_sigtime(min(expired))}): re-sign the zone"
        )
    early = [rdata.inception for rdata in sigs if rdata.inception > now]
    if early:
        found.append(f"{where}: {len(early)} signatures are not valid yet (a clock ahead, or signed for later)")
    dnskeys = zone.get(zone.origin, RdataType.DNSKEY)
    if dnskeys is None:
        found.append(f"{where}: signed, but has no DNSKEY at {zone.origin}: nothing can verify its signatures")
        return found
    tags = {(dns.dnssec.key_id(key), key.algorithm) for key in dnskeys}
    unknown = sorted({rdata.key_tag for rdata in sigs if (rdata.key_tag, rdata.algorithm) not in tags})
    if unknown:
        listed = ", ".join(str(tag) for tag in unknown)
        found.append(f"{where}: signatures by key tag {listed}, which no DNSKEY of the zone has (the wrong DNSKEY?)")
    keyset = signature(zone, zone.origin, RdataType.DNSKEY)
    if keyset is not None and not unknown:
        try:
            dns.dnssec.validate(dnskeys, keyset, {zone.origin: dnskeys}, now=keyset[0].inception + 1)
        except dns.dnssec.ValidationFailure:
            found.append(f"{where}: the DNSKEY RRset's signature does not verify with the zone's DNSKEY")
    return found
