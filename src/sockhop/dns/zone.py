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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tokenizer
import dns.zone
import dns.zonefile

from sockhop.errors import SockhopError

RdataType = dns.rdatatype.RdataType


class ZoneError(SockhopError):
    """A zone file cannot be used."""


@dataclass
class Zone:
    """One zone, indexed for answering. Names are absolute; RRsets are shared, never modified."""

    origin: dns.name.Name
    rrsets: dict[dns.name.Name, dict[int, dns.rrset.RRset]]
    names: set[dns.name.Name] = field(default_factory=set)  # owners and their ancestors up to the apex
    cuts: set[dns.name.Name] = field(default_factory=set)  # delegation points: NS below the apex
    source: str = ""

    @property
    def soa(self) -> dns.rrset.RRset:
        return self.rrsets[self.origin][RdataType.SOA]

    @property
    def serial(self) -> int:
        return self.soa[0].serial

    def get(self, name: dns.name.Name, rdtype: int) -> dns.rrset.RRset | None:
        node = self.rrsets.get(name)
        return None if node is None else node.get(rdtype)

    def transfer_order(self) -> Iterator[dns.rrset.RRset]:
        """Every RRset for AXFR (RFC 5936): the SOA first and last, everything else between."""
        soa = self.soa
        yield soa
        for name in sorted(self.rrsets):
            for rdtype, rrset in sorted(self.rrsets[name].items()):
                if not (name == self.origin and rdtype == RdataType.SOA):
                    yield rrset
        yield soa

    def record_count(self) -> int:
        return sum(len(rrset) for node in self.rrsets.values() for rrset in node.values())


def index(zone: dns.zone.Zone, source: str = "") -> Zone:
    """Build the answering index of a zone dnspython has read (with ``relativize=False``)."""
    origin = zone.origin
    assert origin is not None
    rrsets: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
    names: set[dns.name.Name] = set()
    cuts: set[dns.name.Name] = set()
    for name, node in zone.nodes.items():
        name = name.derelativize(origin)
        by_type: dict[int, dns.rrset.RRset] = {}
        for rdataset in node.rdatasets:
            if rdataset.covers != RdataType.NONE:
                continue  # RRSIGs: this server does not sign, so it does not serve signatures either
            rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
            rrset.update(rdataset)
            by_type[rdataset.rdtype] = rrset
        if not by_type:
            continue
        rrsets[name] = by_type
        if name != origin and RdataType.NS in by_type:
            cuts.add(name)
        while name not in names:
            names.add(name)
            if name == origin:
                break
            name = name.parent()
    return Zone(origin, rrsets, names, cuts, source)


class _IncludeRelativeTokenizer(dns.tokenizer.Tokenizer):
    """A tokenizer that reads ``$INCLUDE file`` relative to the folder of the file it is reading, so a zone and
    the files it includes can move together (dnspython alone opens it relative to the working directory)."""

    _include_next = False

    def get(self, want_leading: bool = False, want_comment: bool = False) -> dns.tokenizer.Token:
        token = super().get(want_leading, want_comment)
        if self._include_next and (token.is_identifier() or token.is_quoted_string()):
            self._include_next = False
            folder = os.path.dirname(self.filename) if not self.filename.startswith("<") else ""
            return dns.tokenizer.Token(token.ttype, os.path.join(folder, token.value), token.has_escape)
        self._include_next = token.is_identifier() and token.value.upper() == "$INCLUDE"
        return token


class _LineReader(dns.zonefile.Reader):
    """dnspython's reader, noting where each record starts so an error can name that line, and reading each
    $INCLUDE relative to the file that names it."""

    record_at: tuple[str, int] | None = None
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

    def _rr_line(self) -> None:
        self.record_at = self.tok.where()
        super()._rr_line()


def origin_from_filename(path: Path) -> dns.name.Name | None:
    """``example.com.zone``, ``db.example.com`` or ``example.com`` name their zone, as many setups do."""
    stem = path.name
    for suffix in (".zone", ".db", ".txt"):
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
    except dns.exception.SyntaxError as exc:
        raise ZoneError(_located(str(exc), reader, text)) from None
    except dns.exception.DNSException as exc:
        raise ZoneError(_located(str(exc), reader, text)) from None
    except OSError as exc:  # an $INCLUDE that cannot be read
        where = f"{reader.record_at[0]}:{reader.record_at[1]}" if reader and reader.record_at else filename
        raise ZoneError(f"{where}: {exc.strerror}: {exc.filename}") from None
    except UnicodeDecodeError:
        raise ZoneError(f"{filename}: not a text file (UTF-8)") from None
    return index(zone, filename)


def _located(message: str, reader: _LineReader | None, text: str) -> str:
    """dnspython says ``file:line: reason``; put the line where the faulty record starts, and quote it."""
    parts = message.split(":", 2)
    if reader is None or reader.record_at is None or len(parts) != 3 or not parts[1].isdigit():
        return message
    file, line = reader.record_at
    if file != parts[0] or line > int(parts[1]):
        return message
    if file == reader.main_file:
        lines = text.splitlines()
        record = lines[line - 1] if 0 < line <= len(lines) else ""
    else:  # an $INCLUDEd file
        record = linecache.getline(file, line)
    record = record.split(";")[0].strip()  # the record, not its comment
    quoted = f" (in: {record})" if record else ""
    return f"{file}:{line}:{parts[2].rstrip('.')}{quoted}"


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
