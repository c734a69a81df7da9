"""Zones: reading RFC 1035 master files (with dnspython) into an index shaped for answering.

dnspython reads the file -- $ORIGIN, $TTL, $INCLUDE, relative names, parentheses -- and this module only indexes
what it read: every RRset by owner and type, every name that exists (empty non-terminals included, so a name
between two records answers NODATA rather than NXDOMAIN), and the delegation points below the apex.

A broken file is one :class:`ZoneError` naming the file, the line and the reason. dnspython's tokenizer reports
the line it has read up to, which can be the line after the faulty record, so the reader below notes where each
record starts and reports that line instead.
"""

from __future__ import annotations

import linecache
import os
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tokenizer
import dns.ttl
import dns.zone
import dns.zonefile

from sockhop.dns import wirezone
from sockhop.dns.layered import GONE, LayeredDict
from sockhop.dns.wireread import WireRecord, rrsets_of
from sockhop.errors import SockhopError

RdataType = dns.rdatatype.RdataType


class ZoneError(SockhopError):
    """A zone file cannot be used."""


@dataclass
class Zone:
    """One zone, indexed for answering. Names are absolute; RRsets are shared, never modified.

    A pre-signed zone keeps what its signer wrote: RRSIGs by owner and covered type (``sigs``), NSEC records as
    ordinary RRsets with their owners in canonical order (``nsec_owners``), NSEC3 records apart from the names that
    answer (``nsec3``, by hash), as their hashed owners are not names of the zone."""

    origin: dns.name.Name
    #: a dict, or after dynamic updates a read-only mapping of the same keys (sockhop.dns.layered)
    rrsets: Mapping[dns.name.Name, dict[int, dns.rrset.RRset]]
    names: AbstractSet[dns.name.Name] = field(default_factory=set)  # owners and their ancestors up to the apex
    cuts: AbstractSet[dns.name.Name] = field(default_factory=set)  # delegation points: NS below the apex
    source: str = ""
    sigs: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = field(default_factory=dict)  # RRSIGs by covered type
    nsec_owners: list[dns.name.Name] = field(default_factory=list)  # canonical order
    nsec3: dict[str, dns.rrset.RRset] = field(default_factory=dict)  # by the owner's hash label, lower case
    nsec3_hashes: list[str] = field(default_factory=list)  # sorted
    nsec3_memo: dict[dns.name.Name, str] = field(default_factory=dict)  # names hashed so far (proofs.py)
    #: set when the zone is signed online (sockhop.dns.signer.Signer)
    signer: object = None
    #: this version's AXFR messages and their record count, encoded on first use, by question type
    #: (sockhop.dns.protocol, sockhop.dns.transfer)
    axfr: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def soa(self) -> dns.rrset.RRset:
        return self.rrsets[self.origin][RdataType.SOA]

    @property
    def serial(self) -> int:
        return self.soa[0].serial

    @property
    def presigned(self) -> bool:
        return bool(self.sigs)

    def get(self, name: dns.name.Name, rdtype: int) -> dns.rrset.RRset | None:
        node = self.rrsets.get(name)
        return None if node is None else node.get(rdtype)

    def transfer_order(self) -> Iterator[dns.rrset.RRset]:
        """Every RRset for AXFR (RFC 5936): the SOA first and last, everything else between -- signatures and NSEC3
        records of a pre-signed zone included."""
        soa = self.soa
        yield soa
        for node in self.rrsets.values():  # in no particular order (RFC 5936 asks none): sorting names is slow
            for rrset in node.values():
                if rrset is not soa:
                    yield rrset
        for node in self.sigs.values():
            yield from node.values()
        for hashed in self.nsec3_hashes:
            yield self.nsec3[hashed]
        yield soa

    def record_count(self) -> int:
        if isinstance(self.rrsets, wirezone.WireNodes) and not self.sigs:  # counted as it was read
            return self.rrsets.count
        nodes = (*self.rrsets.values(), *self.sigs.values())
        return sum(len(rrset) for node in nodes for rrset in node.values()) + len(self.nsec3)

    def owners(self, rdtype: int) -> set[dns.name.Name]:
        """The names that own records of ``rdtype`` (DNAME): without making every node of a zone read from the
        wire (:mod:`sockhop.dns.wirezone`), which knows them."""
        return _owners(self.rrsets, rdtype)


def _owners(rrsets: Mapping, rdtype: int) -> set[dns.name.Name]:
    if isinstance(rrsets, LayeredDict):  # a zone changed since: the base's owners, as the changes leave them
        found = {name for name in _owners(rrsets.base, rdtype) if name not in rrsets.layer}
        found.update(name for name, node in rrsets.layer.items() if node is not GONE and rdtype in node)
        return found
    if isinstance(rrsets, wirezone.WireNodes) and rdtype in rrsets.by_type:
        return rrsets.owners(rdtype)
    return {name for name, node in rrsets.items() if rdtype in node}


def index(zone: dns.zone.Zone, source: str = "") -> Zone:
    """Build the answering index of a zone dnspython has read (with ``relativize=False``)."""
    origin = zone.origin
    assert origin is not None
    return _index(origin, ((name, node.rdatasets) for name, node in zone.nodes.items()), source)


def from_records(origin: dns.name.Name, records: Iterable[dns.rrset.RRset], source: str = "") -> Zone:
    """The answering index of a zone received as RRsets (a transfer), absolute names; an RRset split over several
    messages is joined again. Raises ZoneError for a zone without its SOA or NS."""
    nodes: dict[tuple, tuple[dns.name.Name, dict]] = {}  # by the owner's labels: they hash in C, a Name in Python
    for rrset in records:
        entry = nodes.get(rrset.name.labels)
        if entry is None:
            entry = nodes[rrset.name.labels] = (rrset.name, {})
        node = entry[1]
        key = (rrset.rdtype, rrset.covers)
        have = node.get(key)
        if have is None:
            node[key] = rrset
        else:  # the RRsets are the caller's, fresh from a transfer: joined in place
            have.union_update(rrset)
    apex = nodes.get(origin.labels, (origin, {}))[1]
    if (RdataType.SOA, 0) not in apex:
        raise ZoneError(f"{source or origin}: the zone has no SOA record at its origin {origin}")
    if (RdataType.NS, 0) not in apex:
        raise ZoneError(f"{source or origin}: the zone has no NS record at its origin {origin}")
    return _index(origin, ((name, node.values()) for name, node in nodes.values()), source)


def from_wire(origin: dns.name.Name, records: list[WireRecord], source: str = "") -> Zone:
    """The answering index of a zone received as wire records (:mod:`sockhop.dns.wireread`: a transfer, or the
    copy a secondary keeps), the SOA among them; nodes become dnspython RRsets when first looked up
    (:mod:`sockhop.dns.wirezone`). Raises ZoneError for a zone without its SOA or NS."""
    try:
        built = wirezone.index(origin, records)
    except KeyError as missing:
        raise ZoneError(
            f"{source or origin}: the zone has no {missing.args[0]} record at its origin {origin}"
        ) from None
    if built is None:  # signatures and proofs: sorted out as dnspython objects
        return from_records(origin, rrsets_of(records), source)
    nodes, names, cuts = built
    return Zone(origin, nodes, names, cuts, source)


def _index(origin: dns.name.Name, items: Iterable, source: str) -> Zone:
    rrsets: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
    sigs: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
    nsec3: dict[str, dns.rrset.RRset] = {}
    cuts: set[dns.name.Name] = set()
    depth = len(origin)
    # Hashing a Name runs Python over every character, and a zone has many: each owner is hashed once, into
    # ``rrsets`` (``names`` is made from its keys, whose hashes a set reuses); the ancestors of owners -- names that
    # exist without records -- are found by their labels, which hash in C.
    above: set[tuple] = {origin.labels}  # labels of the names found above owners (the apex's included)
    ancestors: list[dns.name.Name] = [origin]
    for name, rdatasets in items:
        name = name.derelativize(origin)
        by_type: dict[int, dns.rrset.RRset] = {}
        signatures: dict[int, dns.rrset.RRset] = {}
        for rdataset in rdatasets:
            if isinstance(rdataset, dns.rrset.RRset):
                rrset = rdataset
            else:
                rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype, rdataset.covers)
                rrset.update(rdataset)
            if rdataset.rdtype == RdataType.RRSIG:
                signatures[rdataset.covers] = rrset
            elif rdataset.rdtype == RdataType.NSEC3 and len(name) == len(origin) + 1:
                nsec3[name[0].decode("ascii").lower()] = rrset
            else:
                by_type[rdataset.rdtype] = rrset
        if RdataType.NSEC3 in signatures and not by_type:  # an NSEC3 owner is no name of the zone
            sigs.setdefault(name, {})[RdataType.NSEC3] = signatures.pop(RdataType.NSEC3)
        if signatures:
            sigs.setdefault(name, {}).update(signatures)
        if not by_type:
            continue
        have = rrsets.setdefault(name, by_type)
        if have is not by_type:  # the same owner written in another case: one node
            have.update(by_type)
        # Lengths, not comparisons: a Name compares and hashes label by label in Python, and a zone has many.
        if len(name) > depth and RdataType.NS in by_type:
            cuts.add(name)
        labels = name.labels
        while len(labels) > depth + 1 and labels[1:] not in above:  # below the apex: its ancestors too
            labels = labels[1:]
            above.add(labels)
            name = name.parent()
            ancestors.append(name)
    names = set(rrsets)
    names.update(ancestors)
    nsec_owners = sorted(name for name, node in rrsets.items() if RdataType.NSEC in node)
    return Zone(origin, rrsets, names, cuts, source, sigs, nsec_owners, nsec3, sorted(nsec3))


class _IncludeRelativeTokenizer(dns.tokenizer.Tokenizer):
    """A tokenizer that reads ``$INCLUDE file`` relative to the folder of the file it is reading, so a zone and
    the files it includes can move together (dnspython alone opens it relative to the working directory)."""

    _include_next = False
    statement_line = 0  # where the statement being read (a record or a directive) starts in this file

    def get(self, want_leading: bool = False, want_comment: bool = False) -> dns.tokenizer.Token:
        token = super().get(want_leading, want_comment)
        if want_leading and not (token.is_eol_or_eof() or token.is_comment()):
            # The reader asks for leading space only at a statement's start. A newline read as the token's end and
            # put back has been counted already.
            self.statement_line = self.line_number - (self.ungotten_char == "\n")
        if self._include_next and token.is_eol_or_eof():
            raise dns.exception.SyntaxError("$INCLUDE needs a file name")
        if self._include_next and (token.is_identifier() or token.is_quoted_string()):
            self._include_next = False
            folder = os.path.dirname(self.filename) if not self.filename.startswith("<") else ""
            return dns.tokenizer.Token(token.ttype, os.path.join(folder, token.value), token.has_escape)
        self._include_next = token.is_identifier() and token.value.upper() == "$INCLUDE"
        return token


class _LineReader(dns.zonefile.Reader):
    """dnspython's reader, whose tokenizers (the file's and each $INCLUDEd one's) note where each statement starts,
    so an error names that file and line, and read each $INCLUDE relative to the file that names it."""

    main_file = ""

    @property  # type: ignore[override]
    def tok(self) -> dns.tokenizer.Tokenizer:
        return self._tok

    @tok.setter
    def tok(self, tokenizer: dns.tokenizer.Tokenizer) -> None:
        # dnspython makes a plain Tokenizer for each included file: give it the relative $INCLUDE too
        if type(tokenizer) is dns.tokenizer.Tokenizer:
            tokenizer.__class__ = _IncludeRelativeTokenizer
        self._tok = tokenizer

    @property
    def statement_at(self) -> tuple[str, int] | None:
        """The file and line of the statement being read: the tokenizer in use is the file the error is in."""
        line = getattr(self._tok, "statement_line", 0)
        return (self._tok.filename, line) if line else None


def origin_from_filename(path: Path) -> dns.name.Name | None:
    """``example.com.zone``, ``db.example.com`` or ``example.com`` name their zone, as many setups do -- and
    ``example.com.zone.signed``, the name ldns-signzone and dnssec-signzone give their output."""
    stem = path.name
    for suffix in (".signed", ".zone", ".db", ".txt"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    if stem.startswith("db."):
        stem = stem[3:]
    if "." not in stem.strip("."):
        return None
    try:
        return dns.name.from_text(stem)
    except dns.exception.DNSException:
        return None


def read_zone_text(text: str, filename: str, origin: dns.name.Name | None = None) -> Zone:
    """Read one zone from master-file text. Raises ZoneError ``file:line: reason``."""
    zone = dns.zone.Zone(origin, dns.rdataclass.IN, relativize=False)
    reader: _LineReader | None = None
    try:
        with zone.writer(True) as txn:
            tok = dns.tokenizer.Tokenizer(text, filename)
            reader = _LineReader(tok, dns.rdataclass.IN, txn, allow_include=True)
            reader.main_file = filename
            reader.read()
        zone.check_origin()
    except dns.zonefile.UnknownOrigin:
        raise ZoneError(f"{filename}: the zone's origin is unknown: start the file with $ORIGIN example.com.") from None
    except dns.zone.NoSOA:
        raise ZoneError(f"{filename}: the zone has no SOA record at its origin {zone.origin}") from None
    except dns.zone.NoNS:
        raise ZoneError(f"{filename}: the zone has no NS record at its origin {zone.origin}") from None
    except dns.exception.DNSException as exc:  # SyntaxError, and the few others dnspython raises while reading
        raise ZoneError(_located(str(exc), reader, text)) from None
    except OSError as exc:  # an $INCLUDE that cannot be read
        where = _where(reader, filename)
        raise ZoneError(f"{where}: cannot read {exc.filename}: {exc.strerror}") from None
    except UnicodeDecodeError:  # an $INCLUDEd file (the main one was decoded by read_zone_file)
        where = _where(reader, filename)
        raise ZoneError(f"{where}: the $INCLUDEd file is not a text file (UTF-8)") from None
    return index(zone, filename)


def _where(reader: _LineReader | None, filename: str) -> str:
    at = reader.statement_at if reader is not None else None
    return f"{at[0]}:{at[1]}" if at else filename


def _located(message: str, reader: _LineReader | None, text: str) -> str:
    """``file:line: reason`` for what dnspython reported: the file and line where the faulty statement starts (the
    tokenizer's own line can be the next record's), the reason in words, and the statement quoted."""
    detail = message
    parts = message.split(":", 2)
    if len(parts) == 3 and parts[1].strip().isdigit():
        detail = parts[2]
    at = reader.statement_at if reader is not None else None
    if at is None:
        return f"{parts[0]}: {_reason(detail.strip(), '')}" if len(parts) == 3 else _reason(message, "")
    file, line = at
    if reader is not None and file == reader.main_file:
        lines = text.splitlines()
        record = lines[line - 1] if 0 < line <= len(lines) else ""
    else:  # an $INCLUDEd file
        record = linecache.getline(file, line)
    record = _strip_comment(record).rstrip()
    quoted = f" (in: {record.strip()})" if record.strip() else ""
    return f"{file}:{line}: {_reason(detail.strip(), record)}{quoted}"


def _strip_comment(line: str) -> str:
    """The line without its ; comment (a ; inside quotes is text)."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif ch == ";" and not quoted:
            return line[:i]
    return line


# What each common type's data is, for "a field is missing" (RFC 1035, 2782, 8659 and friends).
FIELDS = {
    "A": "an IPv4 address", "AAAA": "an IPv6 address", "NS": "a host name", "CNAME": "a target name",
    "DNAME": "a target name", "PTR": "a host name", "MX": "a preference and a host name", "TXT": "text",
    "SOA": "mname rname serial refresh retry expire minimum", "SRV": "priority weight port target",
    "CAA": "flags tag value", "HINFO": "cpu and os", "SSHFP": "algorithm type fingerprint",
    "TLSA": "usage selector matching-type data",
}  # fmt: skip

# dnspython's words, and ours.
PLAIN = {
    "A DNS label is empty": "a name has an empty label (two dots together, or a dot at the start)",
    "A DNS label is > 63 octets long": "a label of a name is longer than 63 characters",
    "A DNS name is > 255 octets long": "a name is longer than 255 characters",
    "RR class is not zone's class": "the record's class is not the zone's (IN)",
    "newline in quoted string": "a quoted string is not closed on its line",
    "the last used name is undefined": "the record has no owner name, and no record before it has one",
    "Missing default TTL value": "the record has no TTL: give it one, or put $TTL 3600 before it",
    "unbalanced parentheses": "an unclosed parenthesis",
    "An escaped code in a label is out of range": "an escape in a name is out of range (\\000 to \\255)",
    "Escape sequence is incomplete": "an escape (\\) at the end of a name",
}
TTL_WORDS = "write seconds (3600) or with units (1h30m, 2d)"


def _reason(detail: str, record: str) -> str:
    """What is wrong, in words: dnspython's messages name its exceptions, its tokens or its internals."""
    detail = detail.strip().rstrip(".")
    rdtype, rdata = _record_type(record)
    if detail.startswith("caught exception "):  # dnspython wraps anything the rdata parser raised
        detail = detail.split(": ", 1)[1].strip().rstrip(".") if ": " in detail else ""
    if record.count(")") > record.count("("):  # a record's first line cannot close what it did not open
        return "a ) without its ("
    if detail.startswith("unknown rdatatype "):
        word = detail.split(" ", 2)[2].strip("'")
        if word[:1].isdigit():
            return f"{word!r} is not a TTL: {TTL_WORDS}"
        return f"unknown record type {word!r}"
    if "TTL" in detail or record.strip().upper().startswith("$TTL"):  # BadTTL's words, "bad $TTL"
        value = record.split()[1] if record.strip().upper().startswith("$TTL") and len(record.split()) > 1 else ""
        return f"{value!r} is not a TTL: {TTL_WORDS}" if value else f"bad TTL: {TTL_WORDS}"
    if detail.startswith("expected EOL or EOF") or detail == "unbalanced parentheses":
        opened, closed = record.count("("), record.count(")")
        if opened > closed:
            return "an unclosed parenthesis: the record runs on into the lines after it"
        if closed > opened:
            return "a ) without its ("
        return f"too many fields: {rdtype} wants {FIELDS[rdtype]}" if rdtype in FIELDS else "too many fields"
    if detail in PLAIN:
        return PLAIN[detail]
    missing = ("expecting an identifier", "expecting an integer", "unexpected end of input", "expecting a string")
    if (
        detail.startswith(missing)
        or detail == "Text input ended unexpectedly"
        or (detail.startswith("expected ") and rdtype)
    ):
        wants = f": {rdtype} wants {FIELDS[rdtype]}" if rdtype in FIELDS else ""
        if detail.startswith("expecting an integer") and rdata:
            return f"a field is missing, or is not a number{wants}"
        return f"a field is missing{wants}"
    if not rdtype and record.strip() and not record.strip().startswith("$"):
        return "the record's type is missing: write name [ttl] [class] type data"
    if rdtype == "A":
        return f"bad IPv4 address {' '.join(rdata)!r}: write four numbers 0-255, as 192.0.2.1"
    if rdtype == "AAAA":
        return f"bad IPv6 address {' '.join(rdata)!r}: write it as 2001:db8::1"
    if detail.startswith(("Unknown zone file directive", "zone file directive")):
        word = detail.split("'")[1] if detail.count("'") >= 2 else detail.rsplit(" ", 1)[-1]
        return f"unknown directive {word}: the directives are $ORIGIN, $TTL, $INCLUDE and $GENERATE"
    if rdtype:
        return f"the {rdtype} record's data cannot be read ({_scrub(detail)})" if detail else f"bad {rdtype} record"
    return _scrub(detail) or "cannot read this line"


def _scrub(detail: str) -> str:
    """dnspython's text without class names and module paths."""
    import re

    detail = re.sub(r"<class '[\w.]+'>:?\s*", "", detail)
    detail = re.sub(r"\bdns\.[\w.]+", "", detail).strip(" :")
    return "the text is malformed" if detail == "Text input is malformed" else detail


def _record_type(record: str) -> tuple[str, list[str]]:
    """The type of the record on this line, and the words after it ('' for a directive or no record)."""
    words = record.replace("(", " ").replace(")", " ").split()
    if not words or words[0].startswith("$"):
        return "", []
    if not record[:1].isspace():
        words = words[1:]  # the owner
    for i, word in enumerate(words):
        upper = word.upper()
        if upper in ("IN", "CH", "HS", "ANY", "NONE") or upper.startswith("CLASS") or _is_ttl(word):
            continue
        try:
            dns.rdatatype.from_text(upper)
        except Exception:  # noqa: BLE001 - dnspython raises several kinds here
            return "", []
        return upper, words[i + 1 :]
    return "", []


def _is_ttl(word: str) -> bool:
    try:
        dns.ttl.from_text(word)
    except dns.exception.DNSException:
        return False
    return True


def read_zone_file(path: str | os.PathLike[str]) -> Zone:
    """Read one master file; its origin comes from $ORIGIN, else from the file's name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ZoneError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ZoneError(f"{path}: is a directory, not a zone file") from None
    except PermissionError:
        raise ZoneError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise ZoneError(f"{path}: not a text file (UTF-8)") from None
    try:
        return read_zone_text(text, str(path))
    except ZoneError as exc:
        guess = origin_from_filename(path)
        if guess is None or "origin is unknown" not in str(exc):
            raise
    return read_zone_text(text, str(path), guess)


def read_zones(paths: Iterable[str | os.PathLike[str]]) -> list[Zone]:
    """Read every file; two files for the same zone are an error (which one would answer?)."""
    zones: list[Zone] = []
    seen: dict[dns.name.Name, str] = {}
    for path in paths:
        zone = read_zone_file(path)
        if zone.origin in seen:
            raise ZoneError(f"{zone.source}: zone {zone.origin} is already loaded from {seen[zone.origin]}")
        seen[zone.origin] = zone.source
        zones.append(zone)
    return zones
