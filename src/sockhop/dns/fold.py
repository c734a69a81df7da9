"""``sockhop dns fold ZONEFILE``: the journal's changes written into the zone file, and the journal emptied.

Atomic as a file can be: the new zone is written beside the old one, synced, renamed over it and the folder synced;
only then is the journal truncated -- a crash in between leaves the new file and a journal whose changes start
below its serial, which start-up skips. The file is written from the zone's records (comments and $INCLUDEs of the
old file are not kept, as with BIND's journal sync).
"""

from __future__ import annotations

import os
from pathlib import Path

import dns.rdatatype

from sockhop.dns.journal import Journal, journal_path, sync_folder
from sockhop.dns.update import apply_diff
from sockhop.dns.zone import Zone, read_zone_file

RdataType = dns.rdatatype.RdataType


def fold(zonefile: str, data: str | None = None) -> tuple[int, int, int]:
    """Fold the journal into the zone file: (changes folded, serial before, serial after)."""
    zone = read_zone_file(zonefile)
    journal = Journal(journal_path(zonefile, data, zone.origin), zone.origin)
    before = zone.serial
    folded = 0
    for change in journal.read():
        if change.old_serial == zone.serial:
            zone = apply_diff(zone, change)
            folded += 1
    if folded:
        write_atomically(Path(zonefile), zone_text(zone))
    journal.clear()
    return folded, before, zone.serial


def zone_text(zone: Zone) -> str:
    """The zone as a master file: $ORIGIN, the SOA first, then every RRset by owner."""
    lines = [f"$ORIGIN {zone.origin}", zone.soa.to_text()]
    for name in sorted(zone.rrsets):
        for rdtype, rrset in sorted(zone.rrsets[name].items()):
            if name == zone.origin and rdtype == RdataType.SOA:
                continue
            lines.append(rrset.to_text())
    for node in (zone.sigs[name] for name in sorted(zone.sigs)):
        lines.extend(rrset.to_text() for _, rrset in sorted(node.items()))
    lines.extend(zone.nsec3[hashed].to_text() for hashed in zone.nsec3_hashes)
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.folding")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as handle:
        handle.write(text.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    sync_folder(path.parent)
