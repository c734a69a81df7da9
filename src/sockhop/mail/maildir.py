"""Maildir (https://cr.yp.to/proto/maildir.html): durable delivery, and reading mailboxes back.

Delivery writes each copy into ``tmp/``, fsyncs it, renames it into ``new/`` and fsyncs ``new/`` -- only then
does the protocol send 250. A rename is atomic, so a reader (or a crash) sees a message whole in ``new/`` or not
at all; the fsyncs make "whole" survive a power cut, not only a killed process. A mailbox created on first use
is fsynced into its parent too, or the new directory itself could vanish with the message in it.

Stored messages use LF line ends, as every Maildir reader expects; the protocol refuses messages with a bare CR or
LF, so the conversion loses nothing.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path

from .address import split_address
from .protocol import Envelope, Session
from .trace import trace_headers

_counter = itertools.count(1)  # next() on a count is atomic under the GIL: safe across the delivery threads
SUBDIRS = ("tmp", "new", "cur")
NAME_EXTRA = "._+-="


def mailbox_name(local_part: str) -> str | None:
    """The folder for a local part: lower-cased; None unless letters, digits and ``._+-=`` and no leading dot
    (nothing that could climb out of the Maildir or hide in it)."""
    name = local_part.lower()
    if not name or name.startswith(".") or not all(ch.isalnum() or ch in NAME_EXTRA for ch in name):
        return None
    return name


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GroupSync:
    """fsync a directory once for every caller whose rename came before that fsync began (group commit).

    Callers arriving while an fsync of the same directory runs wait for it to end and then share the next one, so
    ten sessions delivering at once cost about two directory fsyncs, not ten -- and still none of them returns
    (and gets its 250) before its own rename is on disk. Per process: prefork workers each group their own.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._dirs: dict[Path, list[int]] = {}  # path -> [requested, synced, running]

    def sync(self, path: Path) -> None:
        with self._cond:
            entry = self._dirs.setdefault(path, [0, 0, 0])
            entry[0] += 1
            ticket = entry[0]
            while entry[1] < ticket:
                if entry[2]:
                    self._cond.wait()
                    continue
                entry[2] = 1
                target = entry[0]  # every rename registered so far happened before this fsync starts
                self._cond.release()
                done = False
                try:
                    fsync_dir(path)
                    done = True
                finally:
                    self._cond.acquire()
                    entry[2] = 0
                    if done:
                        entry[1] = max(entry[1], target)
                    self._cond.notify_all()


def ensure_maildir(path: Path) -> None:
    """Create ``tmp/ new/ cur/`` under ``path`` unless present, durably."""
    if (path / "new").is_dir() and (path / "tmp").is_dir():
        return
    path.mkdir(parents=True, exist_ok=True)
    for sub in SUBDIRS:
        (path / sub).mkdir(exist_ok=True)
    fsync_dir(path)
    fsync_dir(path.parent)


class Maildir:
    """A folder of mailboxes, one per local part (``root/<local-part>/new/...``), or with ``catch_all`` a single
    Maildir at ``root`` taking every recipient."""

    def __init__(self, root: str | os.PathLike, *, hostname: str | None = None, catch_all: bool = False) -> None:
        self.root = Path(root)
        self.catch_all = catch_all
        self.hostname = hostname or socket.gethostname()
        self._host_part = self.hostname.replace("/", r"\057").replace(":", r"\072")
        self._group = GroupSync()

    def accepts(self, local_part: str) -> bool:
        return self.catch_all or mailbox_name(local_part) is not None

    def mailbox(self, local_part: str) -> Path:
        if self.catch_all:
            return self.root
        name = mailbox_name(local_part)
        if name is None:
            raise ValueError(f"mailbox name not allowed: {local_part!r}")
        return self.root / name

    def unique_name(self, now: float) -> str:
        """``time.M<usec>P<pid>Q<n>.host``, unique across processes (pid), threads and calls (n)."""
        seconds = int(now)
        return f"{seconds}.M{int((now - seconds) * 1e6)}P{os.getpid()}Q{next(_counter)}.{self._host_part}"

    def deliver(self, session: Session, envelope: Envelope) -> str:
        """Store one copy per mailbox; returns the queue id. Raises OSError having left nothing in ``new/``."""
        now = time.time()
        name = self.unique_name(now)
        queue_id = name.split(".", 2)[0] + name.split(".", 2)[1]
        content = trace_headers(session, envelope, hostname=self.hostname, queue_id=queue_id, now=now)
        content += envelope.content
        boxes = list(dict.fromkeys(self.mailbox(split_address(r)[0]) for r in envelope.recipients))
        written: list[tuple[Path, Path]] = []
        try:
            for box in boxes:
                ensure_maildir(box)
                tmp = box / "tmp" / name
                write_synced(tmp, content)
                written.append((tmp, box / "new" / name))
            for tmp, new in written:
                os.rename(tmp, new)
            for box in boxes:
                self._group.sync(box / "new")
        except OSError:
            for tmp, new in written:
                for path in (tmp, new):
                    try:
                        path.unlink()
                    except OSError:
                        pass
            raise
        return queue_id


def write_synced(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading back ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredMessage:
    path: Path
    mailbox: str
    date: str
    sender: str
    subject: str
    received: float  # when it was delivered (the file's mtime)


def mailboxes(root: str | os.PathLike) -> list[Path]:
    """``root`` itself if it is a Maildir, else every Maildir directly under it."""
    root = Path(root)
    if (root / "new").is_dir() or (root / "cur").is_dir():
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "new").is_dir() or (p / "cur").is_dir())


def list_messages(root: str | os.PathLike) -> list[StoredMessage]:
    """Every message in new/ and cur/ of every mailbox, oldest first."""
    parser = BytesHeaderParser(policy=default_policy)
    found: list[StoredMessage] = []
    base = Path(root)
    for box in mailboxes(base):
        label = "." if box == base else box.name
        for sub in ("new", "cur"):
            folder = box / sub
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name.startswith("."):
                    continue
                try:
                    with path.open("rb") as f:
                        headers = parser.parse(f)
                    mtime = path.stat().st_mtime
                except OSError:
                    continue  # moved or removed by a reader meanwhile
                found.append(
                    StoredMessage(
                        path, label, _header(headers, "Date"), _header(headers, "From"),
                        _header(headers, "Subject"), mtime,
                    )
                )  # fmt: skip
    found.sort(key=lambda m: (m.received, m.path.name))
    return found


def _header(headers, name: str) -> str:
    try:
        value = headers.get(name)
    except Exception:  # a malformed header must not stop the listing  # noqa: BLE001
        return "?"
    return " ".join(str(value).split()) if value is not None else ""
