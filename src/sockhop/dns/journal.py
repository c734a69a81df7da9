"""The journal of a zone: every change since the zone file was written, kept on disk and in memory.

A change is appended and synced before the update that made it is acknowledged, so an acknowledged update survives
a crash; at start-up the changes that follow the file's serial are applied again. The same changes answer IXFR
(RFC 1995): a secondary at an older serial gets just the differences since.

The file is text a person can read, one change a block, ended by a line of its own, so a block cut short by a crash
(never acknowledged) is recognised and ignored::

    $CHANGE 2026120601 2026120602
    - www.example.com. 3600 IN A 192.0.2.2
    + www.example.com. 3600 IN A 192.0.2.9
    $END

The old and the new SOA are in the block's records (``-`` and ``+``) as IXFR sends them.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from sockhop.dns.update import Diff
from sockhop.dns.zone import ZoneError

RdataType = dns.rdatatype.RdataType
#: a sync this quick (an SSD's, a VM's) costs the event loop less than handing it to another thread; a slower one
#: (a spinning disk's, a busy one's) would hold up every other client meanwhile
QUICK_SYNC = 0.002  # seconds
MAX_CHANGES = 10_000  # changes kept in memory for IXFR; older ones are answered with a full transfer


class Journal:
    """The changes of one zone since its file: the file they are appended to, and the recent ones for IXFR."""

    def __init__(self, path: Path, origin: dns.name.Name) -> None:
        self.path = path
        self.origin = origin
        self.changes: list[Diff] = []
        self.lock = threading.Lock()
        self.fd: int | None = None  # kept open for appending (see append)
        self.inode: tuple[int, int] = (0, 0)  # the file it is open on
        self.quick = True  # the last sync took under QUICK_SYNC (the first one is tried on the caller's thread)
        #: the last SOA's owner, MNAME and RNAME, and their text: the SOA lines of successive changes share them
        self.soa_names: tuple | None = None

    def read(self) -> list[Diff]:
        """The complete changes in the file (a torn last block is left out, and cut off the file)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise ZoneError(f"{self.path}: cannot read the journal ({exc})") from None
        changes: list[Diff] = []
        block: list[str] = []
        good = 0
        offset = 0
        for line in text.splitlines(keepends=True):
            offset += len(line.encode("utf-8"))
            stripped = line.rstrip("\n")
            if stripped.startswith("$CHANGE"):
                block = []
            elif stripped == "$END":
                changes.append(self._parse(block))
                good = offset
            else:
                block.append(stripped)
        if good != len(text.encode("utf-8")):  # a block a crash cut short: never acknowledged
            with open(self.path, "r+b") as handle:
                handle.truncate(good)
        return changes

    def _parse(self, lines: list[str]) -> Diff:
        deleted: dict[tuple, dns.rrset.RRset] = {}
        added: dict[tuple, dns.rrset.RRset] = {}
        try:
            for line in lines:
                sign, name, ttl, rdclass, rdtype, rdata = line.split(None, 5)
                owner = dns.name.from_text(name)
                kind = dns.rdatatype.from_text(rdtype)
                record = dns.rdata.from_text(
                    dns.rdataclass.from_text(rdclass), kind, rdata, origin=dns.name.root, relativize=False
                )
                into = deleted if sign == "-" else added
                rrset = into.get((owner, kind))
                if rrset is None:
                    rrset = into[(owner, kind)] = dns.rrset.RRset(owner, dns.rdataclass.IN, kind)
                rrset.add(record, int(ttl))
        except (ValueError, dns.exception.DNSException):
            raise ZoneError(f"{self.path}: a change cannot be read: {line!r}") from None
        old = deleted.pop((self.origin, RdataType.SOA), None)
        new = added.pop((self.origin, RdataType.SOA), None)
        if old is None or new is None:
            raise ZoneError(f"{self.path}: a change without its old and new SOA")
        return Diff(old, new, list(deleted.values()), list(added.values()))

    def append(self, diff: Diff) -> None:
        """Write one change and sync it: when this returns, it survives a crash, and IXFR may serve it."""
        self.write(diff)
        self.sync()
        self.remember(diff)

    def write(self, diff: Diff) -> None:
        """Append one change to the file, not yet synced (:meth:`sync` does, off the event loop; then
        :meth:`remember` it for IXFR).

        The file stays open between changes (opening it again cost as much as writing), unless its name no longer
        leads to it -- a journal removed or replaced by hand is made anew, its name synced too."""
        text = "".join(
            [
                f"$CHANGE {diff.old_serial} {diff.new_serial}\n",
                self._line("-", diff.old_soa),
                *[self._line("-", rrset) for rrset in diff.deleted],
                self._line("+", diff.new_soa),
                *[self._line("+", rrset) for rrset in diff.added],
                "$END\n",
            ]
        )
        data = text.encode("utf-8")
        with self.lock:
            fd = self._open()
            while data:
                data = data[os.write(fd, data) :]

    def sync(self) -> None:
        """Sync what :meth:`write` wrote: when this returns, it survives a crash. Called without the lock, off the
        event loop unless the last sync was quick (``quick``): the loop writing the next change must not wait for a
        slow disk. ``fdatasync``: the data and
        what reading it back needs (the file's size) -- not the times fsync would write too (a new file's name is
        synced when it is made)."""
        fd = self.fd
        if fd is not None:
            start = time.perf_counter()
            os.fdatasync(fd)
            self.quick = time.perf_counter() - start < QUICK_SYNC

    def _open(self) -> int:
        """The journal's descriptor for appending: the one kept, if the name still leads to its file."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            found = None
        if self.fd is not None and found is not None and (found.st_dev, found.st_ino) == self.inode:
            return self.fd
        self.close()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if found is None:  # a new file: its name must survive a crash too
            sync_folder(self.path.parent)
        opened = os.fstat(fd)
        self.fd, self.inode = fd, (opened.st_dev, opened.st_ino)
        return fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _line(self, sign: str, rrset: dns.rrset.RRset) -> str:
        """The lines of one RRset, ``sign`` first. The owner's and the type's text are made once per RRset, and
        an SOA's text once per version: its serial is all a bump changes."""
        rdtype = rrset.rdtype
        if rdtype == RdataType.SOA:
            return f"{sign} {self._soa_text(rrset)}\n"
        head = f"{sign} {rrset.name} {rrset.ttl} IN {dns.rdatatype.to_text(rdtype)} "
        return "".join([f"{head}{rdata.to_text()}\n" for rdata in rrset])

    def _soa_text(self, rrset: dns.rrset.RRset) -> str:
        soa = rrset[0]
        names = self.soa_names
        if names is None or names[0] is not rrset.name or names[1] is not soa.mname or names[2] is not soa.rname:
            names = self.soa_names = (rrset.name, soa.mname, soa.rname, f"{rrset.name}", f"{soa.mname} {soa.rname}")
        return (
            f"{names[3]} {rrset.ttl} IN SOA {names[4]} {soa.serial} {soa.refresh} {soa.retry} {soa.expire} "
            f"{soa.minimum}"
        )

    def remember(self, diff: Diff) -> None:
        self.changes.append(diff)
        if len(self.changes) > MAX_CHANGES:
            del self.changes[: len(self.changes) - MAX_CHANGES]

    def since(self, serial: int, current: int) -> list[Diff] | None:
        """The changes from ``serial`` to ``current``, in order; None if the journal does not go back that far."""
        changes = self.changes
        for start, diff in enumerate(changes):
            if diff.old_serial == serial:
                chain = changes[start:]
                ok = all(a.new_serial == b.old_serial for a, b in zip(chain, chain[1:], strict=False))
                return chain if ok and chain[-1].new_serial == current else None
        return None

    def clear(self) -> None:
        """Empty the journal (its changes are in the zone file now)."""
        with self.lock:
            if self.path.exists():
                with open(self.path, "r+b") as handle:
                    handle.truncate(0)
                    os.fsync(handle.fileno())
            self.changes = []


def sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def journal_path(zonefile: str, data: str | None, origin: dns.name.Name) -> Path:
    """``ZONEFILE.jnl`` beside the zone, or ``DIR/ORIGIN.jnl`` under ``--data DIR``."""
    if data:
        return Path(data) / f"{origin.to_text(omit_final_dot=True) or 'root'}.jnl"
    return Path(f"{zonefile}.jnl")
