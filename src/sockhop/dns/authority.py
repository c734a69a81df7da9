"""The authoritative answer to one question (RFC 1034 section 4.3.2), from the zones this server holds.

Pure: a question in, sections and an rcode out. No wire format, no sockets, no cache -- :mod:`sockhop.dns.server`
wraps it in those. The kinds of answer, each a branch below:

* the RRset asked for (AA set), with in-zone addresses of MX, SRV and NS targets in the additional section;
* a CNAME, followed while its target stays inside the zone (at most ``MAX_CHAIN`` links);
* a DNAME (RFC 6672) above the name: the DNAME, a CNAME synthesized from it, and that CNAME followed;
* for a question without RD (a resolver's, not a stub's), a positive answer carries the zone's NS RRset in the
  authority section and their addresses in additional -- what NSD always and BIND then does (BIND's default
  ``minimal-responses no-auth-recursive``); both sections go first if the reply would not fit;
* a wildcard match (RFC 4592): the closest encloser's ``*`` child answers, under the name asked;
* NODATA (the name exists, the type does not) and NXDOMAIN, each with the SOA in the authority section so the
  answer can be cached for the SOA's negative TTL (RFC 2308);
* a referral below a delegation: no AA, the NS RRset in authority, glue addresses in additional;
* REFUSED for a name in none of the zones; SERVFAIL for one in a zone this server is secondary for and cannot serve
  (never transferred, or expired);
* ANY answered minimally (RFC 8482): one RRset over UDP, where the reply could be used for amplification; all
  RRsets over TCP, where the client has proven its address.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.name
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rrset

from sockhop.dns.zone import Zone

RdataType = dns.rdatatype.RdataType
Rcode = dns.rcode.Rcode

MAX_CHAIN = 8  # CNAME links followed before answering with what there is
ADDRESS_TYPES = (RdataType.A, RdataType.AAAA)


@dataclass
class Answer:
    """What to put in a response: the sections, the rcode, and whether it is authoritative."""

    rcode: int = Rcode.NOERROR
    authoritative: bool = True
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    #: authority and additional hold only extras (NS, addresses) a reply may leave out rather than truncate
    extras_optional: bool = False
    #: the zone that answered (None: refused)
    zone: dns.name.Name | None = None
    #: what a DNSSEC answer must prove, as the lookup met it: ("nxdomain", name, closest encloser), ("nodata", name),
    #: ("wildcard", name, wildcard), ("wildcard_nodata", name, wildcard), ("referral", cut)
    proofs: list[tuple] = field(default_factory=list)

    @classmethod
    def refused(cls) -> Answer:
        return cls(rcode=Rcode.REFUSED, authoritative=False)


class Authority:
    """The zones one server answers for. Immutable once built: a reload builds a new one."""

    def __init__(self, zones: Iterable[Zone], down: Iterable[dns.name.Name] = ()) -> None:
        self.zones: dict[dns.name.Name, Zone] = {zone.origin: zone for zone in zones}
        self.dnames: dict[dns.name.Name, set[dns.name.Name]] = {
            zone.origin: zone.owners(RdataType.DNAME) for zone in self.zones.values()
        }
        #: zones this server is secondary for and cannot serve (not transferred yet, or expired): SERVFAIL
        self.down: frozenset[dns.name.Name] = frozenset(down) - set(self.zones)

    def with_zone(self, zone: Zone) -> Authority:
        """The same zones with ``zone`` added or in place of its older version (a transfer), and no longer down;
        only that zone searched for DNAMEs."""
        authority = Authority.__new__(Authority)
        authority.zones = {**self.zones, zone.origin: zone}
        dnames = zone.owners(RdataType.DNAME)
        authority.dnames = {**self.dnames, zone.origin: dnames}
        authority.down = self.down - {zone.origin}
        return authority

    def without(self, origin: dns.name.Name) -> Authority:
        """The same zones with ``origin`` down: its names answered SERVFAIL (a secondary's zone expired)."""
        authority = Authority.__new__(Authority)
        authority.zones = {o: z for o, z in self.zones.items() if o != origin}
        authority.dnames = {o: d for o, d in self.dnames.items() if o != origin}
        authority.down = self.down | {origin}
        return authority

    def is_down(self, name: dns.name.Name) -> bool:
        """Whether ``name`` is in a zone that is down (and in none served below it)."""
        while True:
            if name in self.zones:
                return False
            if name in self.down:
                return True
            if name == dns.name.root or not name.labels:
                return False
            name = name.parent()

    def replacing(self, zone: Zone, touched: Iterable[dns.name.Name]) -> Authority:
        """The same zones with ``zone`` in place of its older version, which differs only at ``touched`` names (a
        dynamic update): its DNAME owners adjusted there, not searched for again in the whole zone."""
        authority = Authority.__new__(Authority)
        authority.zones = {**self.zones, zone.origin: zone}
        dnames = set(self.dnames.get(zone.origin, ()))
        for name in touched:
            if RdataType.DNAME in zone.rrsets.get(name, {}):
                dnames.add(name)
            elif dnames:
                dnames.discard(name)
        authority.dnames = {**self.dnames, zone.origin: dnames}
        authority.down = self.down
        return authority

    def find_zone(self, name: dns.name.Name) -> Zone | None:
        """The zone whose origin is the closest ancestor of ``name`` (the name itself included)."""
        zones = self.zones
        while True:
            zone = zones.get(name)
            if zone is not None:
                return zone
            if name == dns.name.root or not name.labels:
                return None
            name = name.parent()

    def answer(
        self, qname: dns.name.Name, qtype: int, *, tcp: bool = False, with_ns: bool = False, dnssec: bool = False
    ) -> Answer:
        """The answer to one question; ``with_ns``: add the zone's NS RRset to a positive answer's authority."""
        zone = self.find_zone(qname)
        if zone is None:
            if self.down and self.is_down(qname):
                return Answer(rcode=Rcode.SERVFAIL, authoritative=False)
            return Answer.refused()
        result = Answer(zone=zone.origin)
        seen: set[dns.name.Name] = set()
        name = qname
        target: dns.name.Name | None = None
        for _ in range(MAX_CHAIN + 1):
            seen.add(name)
            target = self._lookup(zone, name, qtype, tcp, result)
            if target is None:
                break
            if target in seen or not target.is_subdomain(zone.origin):
                break  # a loop, or a target another server answers for: the client follows it
            name = target
        complete = target is None  # the chain ended here, not at a name this zone cannot finish (as NSD decides)
        if (
            complete
            and result.rcode == Rcode.NOERROR
            and result.authoritative
            and result.answer
            and not result.authority
        ):
            result.extras_optional = True
            if with_ns and qtype not in (RdataType.DNSKEY, RdataType.DS):  # as NSD: the keys need no NS
                self._add_zone_ns(zone, result)
        if dnssec and (zone.presigned or zone.signer is not None):
            from sockhop.dns.proofs import secure

            secure(zone, result)
        return result

    def _add_zone_ns(self, zone: Zone, result: Answer) -> None:
        ns = zone.get(zone.origin, RdataType.NS)
        if ns is None or any(rrset.name == zone.origin and rrset.rdtype == RdataType.NS for rrset in result.answer):
            return
        result.authority.append(ns)
        self._add_addresses(zone, (rdata.target for rdata in ns), result)

    # -- one step of the chain -----------------------------------------------------------------------------------
    def _lookup(self, zone: Zone, name: dns.name.Name, qtype: int, tcp: bool, result: Answer) -> dns.name.Name | None:
        """Add what ``name`` answers to ``result``; return a CNAME target to follow, if any."""
        cut = self._delegation(zone, name, qtype)
        if cut is not None:
            self._refer(zone, cut, result)
            result.proofs.append(("referral", cut))
            return None
        dnames = self.dnames[zone.origin]
        if dnames:
            owner = self._dname_above(zone, name, dnames)
            if owner is not None:
                return self._substitute(zone, owner, name, result)
        node = zone.rrsets.get(name)
        wildcard = None
        if node is None and name not in zone.names:
            encloser = self._encloser(zone, name)
            wildcard = dns.name.Name((b"*", *encloser.labels))
            if wildcard not in zone.rrsets:
                result.rcode = Rcode.NXDOMAIN
                result.authority.append(negative_soa(zone))
                result.proofs.append(("nxdomain", name, encloser))
                return None
            node = {rdtype: synthesize(rrset, name) for rdtype, rrset in zone.rrsets[wildcard].items()}
        if node is None:  # an empty non-terminal: the name exists, with nothing at it
            result.authority.append(negative_soa(zone))
            result.proofs.append(("nodata", name))
            return None
        cname = node.get(RdataType.CNAME)
        if cname is not None and qtype not in (RdataType.CNAME, RdataType.ANY):
            result.answer.append(cname)
            if wildcard is not None:
                result.proofs.append(("wildcard", name, wildcard))
            return cname[0].target
        if qtype == RdataType.ANY:
            found = sorted(node.items())
            result.answer.extend(rrset for _, rrset in (found if tcp else found[:1]))
            if wildcard is not None:
                result.proofs.append(("wildcard", name, wildcard))
            return None
        rrset = node.get(qtype)
        if rrset is None:
            result.authority.append(negative_soa(zone))
            result.proofs.append(("nodata", name) if wildcard is None else ("wildcard_nodata", name, wildcard))
            return None
        if wildcard is not None:
            result.proofs.append(("wildcard", name, wildcard))
        result.answer.append(rrset)
        self._add_addresses(zone, targets(rrset), result)
        return None

    def _delegation(self, zone: Zone, name: dns.name.Name, qtype: int) -> dns.name.Name | None:
        """The highest delegation point at or above ``name`` inside the zone, if any. A DS question at the cut
        itself belongs to the parent side (RFC 4035 section 3.1.4.1)."""
        if not zone.cuts:
            return None
        depth = len(zone.origin)
        for labels in range(depth + 1, len(name) + 1):
            candidate = name.split(labels)[1]
            if candidate in zone.cuts:
                if candidate == name and qtype == RdataType.DS:
                    return None
                return candidate
        return None

    def _refer(self, zone: Zone, cut: dns.name.Name, result: Answer) -> None:
        result.authoritative = bool(result.answer)  # a CNAME that led here is still our authoritative data
        ns = zone.rrsets[cut][RdataType.NS]
        result.authority.append(ns)
        self._add_addresses(zone, (rdata.target for rdata in ns), result, glue=True)

    @staticmethod
    def _dname_above(zone: Zone, name: dns.name.Name, dnames: set[dns.name.Name]) -> dns.name.Name | None:
        """The highest DNAME owner strictly above ``name`` in the zone (the owner itself answers normally)."""
        for labels in range(len(zone.origin), len(name)):
            candidate = name.split(labels)[1]
            if candidate in dnames:
                return candidate
        return None

    @staticmethod
    def _substitute(zone: Zone, owner: dns.name.Name, name: dns.name.Name, result: Answer) -> dns.name.Name | None:
        """RFC 6672 section 2.2: the DNAME, and a CNAME from ``name`` to it with the owner's suffix replaced."""
        dname = zone.rrsets[owner][RdataType.DNAME]
        result.answer.append(dname)
        try:
            target = name.relativize(owner).derelativize(dname[0].target)
        except dns.name.NameTooLong:
            result.rcode = Rcode.YXDOMAIN  # the substituted name would be longer than a name can be
            return None
        synthesized = dns.rdtypes.ANY.CNAME.CNAME(dname.rdclass, RdataType.CNAME, target)
        result.answer.append(dns.rrset.from_rdata(name, dname.ttl, synthesized))
        return target

    @staticmethod
    def _encloser(zone: Zone, name: dns.name.Name) -> dns.name.Name:
        """The closest encloser of a name that does not exist (RFC 4592 section 3.3.1): its longest existing
        ancestor, whose ``*`` child would answer for it."""
        encloser = name.parent()
        while encloser not in zone.names and len(encloser) > len(zone.origin):
            encloser = encloser.parent()
        return encloser

    def _add_addresses(self, zone: Zone, names: Iterable[dns.name.Name], result: Answer, glue: bool = False) -> None:
        """In-zone A/AAAA of MX, SRV and NS targets, saving the client a query. Below a cut only as glue."""
        present = {(rrset.name, rrset.rdtype) for rrset in result.answer}
        for target in names:
            if not target.is_subdomain(zone.origin) or (not glue and self._delegation(zone, target, 0)):
                continue
            for rdtype in ADDRESS_TYPES:
                rrset = zone.get(target, rdtype)
                if rrset is not None and (target, rdtype) not in present:
                    present.add((target, rdtype))
                    result.additional.append(rrset)


def targets(rrset: dns.rrset.RRset) -> list[dns.name.Name]:
    """The host names an RRset points at, whose addresses a client will want next."""
    if rrset.rdtype == RdataType.MX:
        return [rdata.exchange for rdata in rrset]
    if rrset.rdtype in (RdataType.SRV,):
        return [rdata.target for rdata in rrset]
    if rrset.rdtype == RdataType.NS:
        return [rdata.target for rdata in rrset]
    return []


def synthesize(rrset: dns.rrset.RRset, name: dns.name.Name) -> dns.rrset.RRset:
    """A wildcard RRset under the name asked (RFC 4592 section 3.3.1)."""
    copy = dns.rrset.RRset(name, rrset.rdclass, rrset.rdtype)
    copy.update(rrset)
    return copy


def negative_soa(zone: Zone) -> dns.rrset.RRset:
    """The SOA for a negative answer, its TTL the lesser of its own and its MINIMUM field (RFC 2308 section 3)."""
    soa = zone.soa
    ttl = min(soa.ttl, soa[0].minimum)
    if ttl == soa.ttl:
        return soa
    copy = dns.rrset.RRset(soa.name, soa.rdclass, soa.rdtype)
    copy.update(soa)
    copy.ttl = ttl
    return copy
