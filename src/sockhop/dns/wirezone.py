"""A zone's index built from wire records (:mod:`sockhop.dns.wireread`), as a secondary loads a transfer.

Indexing 100,000 records as dnspython objects -- a Name, an Rdata and an RRset each, and a Name hashed in Python,
character by character, for every dict they went into -- took longer than a whole transfer takes BIND. Here the
index holds the records as they were read, by their owner's lower-cased labels (a tuple of bytes: it hashes in
C), and a node becomes dnspython RRsets the first time a query looks at it, then stays so. What the rest of
sockhop reads of a :class:`~sockhop.dns.zone.Zone` is unchanged: ``rrsets`` is a read-only mapping from Names to
nodes (read-only mappings ``{rdtype: RRset}``), ``names`` and ``cuts`` sets of Names, all looked up
case-insensitively, answering in the zone's own case (the first spelling of an owner the transfer brought).

``names`` (owners and their ancestors: empty non-terminals answer NODATA) and ``cuts`` (NS below the apex) are
found while indexing, on the labels. A zone with DNSSEC records (RRSIG, NSEC, NSEC3) is indexed as dnspython
objects (:func:`sockhop.dns.zone.from_records`): its signatures and proofs are sorted out there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Set

import dns.name
import dns.rdatatype
import dns.rrset

from sockhop.dns.wireread import WireRecord, key_of, to_rdata

RdataType = dns.rdatatype.RdataType
A, NS, DNAME = int(RdataType.A), int(RdataType.NS), int(RdataType.DNAME)
DNSSEC = frozenset({int(RdataType.RRSIG), int(RdataType.NSEC), int(RdataType.NSEC3)})
_MADE = threading.Lock()


class NameSet(Set):
    """A read-only set of Names, held as their lower-cased labels (and the labels to show each by)."""

    __slots__ = ("labels",)

    def __init__(self, labels: dict[tuple[bytes, ...], tuple[bytes, ...]]) -> None:
        self.labels = labels

    @classmethod
    def _from_iterable(cls, iterable: Iterable) -> set:  # type: ignore[override]
        """What ``|``, ``&`` and ``-`` make: a plain set, as they would of a set."""
        return set(iterable)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, dns.name.Name) and key_of(name) in self.labels

    def __iter__(self) -> Iterator[dns.name.Name]:
        for labels in self.labels.values():
            yield dns.name.Name(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __bool__(self) -> bool:
        return bool(self.labels)


class ZoneNames(NameSet):
    """The names of a zone: its owners (the index's own keys, not copied) and their ancestors below the apex."""

    __slots__ = ("raw", "size")

    def __init__(self, raw: dict[tuple, list[WireRecord]], above: dict[tuple, tuple[bytes, ...]]) -> None:
        super().__init__(above)
        self.raw = raw
        self.size = len(raw) + sum(1 for key in above if key not in raw)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, dns.name.Name):
            return False
        key = key_of(name)
        return key in self.raw or key in self.labels

    def __iter__(self) -> Iterator[dns.name.Name]:
        for records in self.raw.values():
            yield dns.name.Name(records[0][1])
        raw = self.raw
        for key, labels in self.labels.items():
            if key not in raw:
                yield dns.name.Name(labels)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0


class WireNode(Mapping):
    """One name's ``{rdtype: RRset}``: which types it has is known from its records; the RRsets are made the first
    time one is asked for, all of them, and kept -- so a zone-wide walk that only asks which types a name has (a
    full recount of the names and cuts, :func:`sockhop.dns.update.rebuilt` without changes) makes none."""

    __slots__ = ("records", "types", "rrsets")

    def __init__(self, records: list[WireRecord]) -> None:
        self.records = records
        self.types = {record[2] for record in records}
        self.rrsets: dict[int, dns.rrset.RRset] | None = None

    def made(self) -> dict[int, dns.rrset.RRset]:
        rrsets = self.rrsets
        if rrsets is None:
            rrsets = materialize(self.records)
            with _MADE:  # two threads at once: both get the RRsets kept first
                if self.rrsets is None:
                    self.rrsets = rrsets
                rrsets = self.rrsets
        return rrsets

    def __contains__(self, rdtype: object) -> bool:
        return rdtype in self.types

    def __getitem__(self, rdtype: int) -> dns.rrset.RRset:
        return self.made()[rdtype]

    def get(self, rdtype: int, default=None):  # type: ignore[override]
        return self.made().get(rdtype, default) if rdtype in self.types else default

    def __iter__(self) -> Iterator[int]:
        return iter(self.made())

    def __len__(self) -> int:
        return len(self.types)

    def keys(self):  # type: ignore[override]
        return self.made().keys()

    def values(self):  # type: ignore[override]
        return self.made().values()

    def items(self):  # type: ignore[override]
        return self.made().items()


class WireNodes(Mapping):
    """Name -> :class:`WireNode`, made of its wire records on first use and kept (one per name, so its RRsets
    are the same objects for every reader: the pool model's threads, an update comparing versions)."""

    __slots__ = ("raw", "made", "count", "by_type")

    def __init__(self, raw: dict[tuple, list[WireRecord]], count: int, by_type: dict[int, set]) -> None:
        self.raw = raw  # key -> its records, in the order they came
        self.made: dict[tuple, WireNode] = {}
        self.count = count  # records
        self.by_type = by_type  # the keys of the owners of a few types (DNAME), for a zone-wide question

    def node(self, key: tuple) -> WireNode | None:
        node = self.made.get(key)
        if node is None:
            records = self.raw.get(key)
            if records is None:
                return None
            node = self.made.setdefault(key, WireNode(records))
        return node

    def get(self, name: dns.name.Name, default=None):  # type: ignore[override]
        node = self.node(key_of(name)) if isinstance(name, dns.name.Name) else None
        return default if node is None else node

    def __getitem__(self, name: dns.name.Name) -> WireNode:
        node = self.get(name)
        if node is None:
            raise KeyError(name)
        return node

    def __contains__(self, name: object) -> bool:
        return isinstance(name, dns.name.Name) and key_of(name) in self.raw

    def __iter__(self) -> Iterator[dns.name.Name]:
        for records in self.raw.values():
            yield dns.name.Name(records[0][1])

    def __len__(self) -> int:
        return len(self.raw)

    def values(self):  # type: ignore[override]
        node = self.node
        return (node(key) for key in self.raw)

    def items(self):  # type: ignore[override]
        node = self.node
        return ((dns.name.Name(records[0][1]), node(key)) for key, records in self.raw.items())

    def owners(self, rdtype: int) -> set[dns.name.Name]:
        """The owners of records of ``rdtype`` (one of those kept in ``by_type``)."""
        return {dns.name.Name(self.raw[key][0][1]) for key in self.by_type.get(rdtype, ())}


def materialize(records: list[WireRecord]) -> dict[int, dns.rrset.RRset]:
    """One node's RRsets, from its records: one RRset per type, the lowest TTL of its records."""
    name = dns.name.Name(records[0][1])
    node: dict[int, dns.rrset.RRset] = {}
    for record in records:
        rdtype, rdclass, ttl = record[2], record[3], record[4]
        rrset = node.get(rdtype)
        if rrset is None:
            rrset = node[rdtype] = dns.rrset.RRset(name, rdclass, RdataType.make(rdtype))
            rrset.ttl = ttl
        elif ttl < rrset.ttl:
            rrset.ttl = ttl
        rrset.items[to_rdata(record)] = None
    return node


def index(origin: dns.name.Name, records: list[WireRecord]):
    """The zone's index: node records by owner, names, cuts -- or None when the zone has DNSSEC records (the
    caller indexes those as dnspython objects). Raises KeyError naming what the apex lacks (SOA, NS)."""
    origin_key = key_of(origin)
    depth = len(origin_key)
    below = depth + 1  # a child of the apex has no ancestor to add: most names
    raw: dict[tuple, list[WireRecord]] = {}
    above: dict[tuple, tuple] = {origin_key: origin.labels}  # ancestors of owners, below the apex
    cuts: dict[tuple, tuple] = {}
    dnames: set[tuple] = set()
    for record in records:
        key = record[0]
        node = raw.get(key)
        if node is None:
            raw[key] = [record]
            if len(key) > below:
                up = key[1:]
                while len(up) > depth and up not in above:  # empty non-terminals, unless owners too
                    above[up] = record[1][len(key) - len(up) :]
                    up = up[1:]
        else:
            node.append(record)
        rdtype = record[2]
        if rdtype != A:
            if rdtype == NS:
                if key != origin_key:
                    cuts[key] = record[1]
            elif rdtype in DNSSEC:
                return None
            elif rdtype == DNAME:
                dnames.add(key)
    apex = {record[2] for record in raw.get(origin_key, ())}
    if RdataType.SOA not in apex:
        raise KeyError("SOA")
    if RdataType.NS not in apex:
        raise KeyError("NS")
    nodes = WireNodes(raw, len(records), {DNAME: dnames})
    return nodes, ZoneNames(raw, above), NameSet(cuts)
