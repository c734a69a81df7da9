"""Online signing (``serve dns --sign KEYFILE``): a zone file without signatures served as a signed zone, as BIND's
and Knot's online signers serve it.

The DNSKEY is published at the apex; each RRset is signed the first time an answer needs it and the signature is
kept (by owner, type and TTL) until it is due for renewal: signatures are valid from an hour ago (clocks disagree)
to ``VALIDITY`` ahead, and renewed once ``RENEW`` of that has passed -- the server also drops its encoded replies
then (:meth:`NameServer.tick`), and a reload starts afresh. Names that do not exist are denied by minimally
covering NSEC records (RFC 4470's "white lies"): an NSEC from just before the name to just after it, signed on the
spot, so the zone's names cannot be walked and nothing needs to be precomputed. A zone transfer gets the whole zone
signed with a complete NSEC chain, as a secondary or a zone checker (ldns-verify-zone) expects.

The clock is handed in by the service (``clock``); signing is the only thing here that needs one.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rrset

from sockhop.dns.authority import Answer
from sockhop.dns.keys import SigningKey
from sockhop.dns.proofs import closest_encloser, next_closer, wildcard_of
from sockhop.dns.zone import Zone

with warnings.catch_warnings():  # dnspython imports cryptography's DSA, which warns it is deprecated
    warnings.simplefilter("ignore")
    import dns.dnssec

RdataType = dns.rdatatype.RdataType
VALIDITY = 14 * 86400  # how long a signature holds
RENEW = 7 * 86400  # signatures older than this are made again
SKEW = 3600  # inception this far in the past, for resolvers whose clocks are behind
SIGS_KEPT = 200_000  # signatures kept; forgotten all at once past this (names asked at random are many)
IN = dns.rdataclass.IN


class Signer:
    """Signs one zone's RRsets with one key, and makes its denial records."""

    def __init__(self, zone: Zone, key: SigningKey, clock: Callable[[], float]) -> None:
        self.origin = zone.origin
        self.key = key
        self.clock = clock
        self.sigs: dict[tuple, tuple[dns.rrset.RRset, float]] = {}
        self.lock = threading.Lock()
        soa = zone.soa
        self.negative_ttl = min(soa.ttl, soa[0].minimum)
        self.dnskey = dns.rrset.from_rdata(zone.origin, soa.ttl, key.dnskey)
        # dnspython's own key object, made once (sign() would wrap the key anew each time), and no policy check
        # per signature: the algorithms keygen makes are the ones RFC 8624 recommends
        self.private = dns.dnssec.get_algorithm_cls_from_dnskey(key.dnskey)(key=key.private)

    # -- signatures ----------------------------------------------------------------------------------------------
    def sign(self, rrset: dns.rrset.RRset, owner: dns.name.Name | None = None) -> dns.rrset.RRset:
        """The RRSIG of ``rrset`` (kept, until due for renewal), under ``owner`` if given (a wildcard's signature
        under the name asked)."""
        # an NSEC's content varies (a zone transfer's chain, an answer's white lie): its next name is in the key
        key = (rrset.name, rrset.rdtype, rrset.ttl, rrset[0].next if rrset.rdtype == RdataType.NSEC else None)
        now = self.clock()
        found = self.sigs.get(key)
        if found is None or now >= found[1]:
            rrsig = dns.dnssec.sign(
                rrset, self.private, self.origin, self.key.dnskey, inception=int(now) - SKEW,
                expiration=int(now) + VALIDITY, deterministic=False, policy=dns.dnssec.allow_all_policy,
            )  # fmt: skip
            found = (dns.rrset.from_rdata(rrset.name, rrset.ttl, rrsig), now + RENEW)
            with self.lock:
                if len(self.sigs) > SIGS_KEPT:
                    self.sigs.clear()
                self.sigs[key] = found
        sig = found[0]
        if owner is not None and owner != sig.name:
            copy = dns.rrset.RRset(owner, sig.rdclass, sig.rdtype, sig.covers)
            copy.update(sig)
            copy.ttl = sig.ttl
            return copy
        return sig

    def forget(self, names: set[dns.name.Name]) -> None:
        """Drop the signatures kept for RRsets at these names (a dynamic update changed them) and the apex's (its
        SOA serial changed)."""
        names = names | {self.origin}
        with self.lock:
            self.sigs = {key: found for key, found in self.sigs.items() if key[0] not in names}

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
        """Denial records for the answer's notes, then every RRSIG (see proofs.secure for the pre-signed kind)."""
        wildcards: dict[dns.name.Name, dns.name.Name] = {}
        denial: list[dns.rrset.RRset] = []
        for proof in result.proofs:
            kind, name = proof[0], proof[1]
            if kind == "nxdomain":
                encloser = closest_encloser(zone, name)
                denial.append(self.covering(next_closer(name, encloser)))
                denial.append(self.covering(wildcard_of(encloser)))
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
        present = {(rrset.name, rrset.rdtype) for rrset in result.authority}
        for rrset in denial:
            if (rrset.name, rrset.rdtype) not in present:
                present.add((rrset.name, rrset.rdtype))
                result.authority.append(rrset)
        result.answer = self.signed(zone, result.answer, wildcards)
        result.authority = self.signed(zone, result.authority, wildcards)
        result.additional = self.signed(zone, result.additional, wildcards)

    def signed(
        self, zone: Zone, section: list[dns.rrset.RRset], wildcards: dict[dns.name.Name, dns.name.Name]
    ) -> list[dns.rrset.RRset]:
        out: list[dns.rrset.RRset] = []
        for rrset in section:
            out.append(rrset)
            if not self.signs(zone, rrset):
                continue
            wildcard = wildcards.get(rrset.name)
            source = zone.get(wildcard, rrset.rdtype) if wildcard is not None else None
            if source is not None and source.ttl == rrset.ttl:
                out.append(self.sign(source, owner=rrset.name))  # the wildcard's own signature (its label count)
            else:
                out.append(self.sign(rrset))
        return out

    def nsec(self, owner: dns.name.Name, next_name: dns.name.Name, types: Iterator[int] | list[int]) -> dns.rrset.RRset:
        windows = dns.rdtypes.ANY.NSEC.Bitmap.from_rdtypes(sorted({*types, RdataType.RRSIG, RdataType.NSEC}))
        rdata = dns.rdtypes.ANY.NSEC.NSEC(IN, RdataType.NSEC, next_name, windows)
        return dns.rrset.from_rdata(owner, self.negative_ttl, rdata)

    def matching(self, zone: Zone, name: dns.name.Name) -> dns.rrset.RRset:
        """An NSEC at an existing name (or empty non-terminal) listing its types, its next name just after it."""
        return self.nsec(name, successor(name), list(zone.rrsets.get(name, {})))

    def covering(self, name: dns.name.Name) -> dns.rrset.RRset:
        """An NSEC from just before ``name`` to just after it and everything under it: nothing else is between."""
        return self.nsec(predecessor(name, self.origin), sibling_after(name), [])

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
