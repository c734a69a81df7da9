"""Maildir (https://cr.yp.to/proto/maildir.html): durable delivery, and reading mailboxes back.

Delivery writes each copy into ``tmp/``, fsyncs it, renames it into ``new/`` and fsyncs ``new/`` -- only then
does the protocol send 250. A rename is atomic, so a reader (or a crash) sees a message whole in ``new/`` or not
at all; the fsyncs make "whole" survive a power cut, not only a killed process. A mailbox created on first use
is fsynced into its parent too, or the new directory itself could vanish with the message in it. Deliveries that
arrive together share that work (:class:`GroupCommit`): one thread makes them all durable -- with ``sync="batch"``
(the default) one syncfs of the filesystem rather than an fsync per file -- then one directory fsync per mailbox.

Stored messages use LF line ends, as every Maildir reader expects; the protocol refuses messages with a bare CR or
LF, so the conversion loses nothing.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import platform
import socket
import threading
import time
from collections.abc import Callable
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


def fsync_dir(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Job:
    """One delivery waiting for the group commit: its open tmp files and where each goes in ``new/``."""

    __slots__ = ("files", "error", "done")

    def __init__(self, files: list[tuple[int, str, str]]) -> None:
        self.files = files  # (fd, tmp path, new path)
        self.error: OSError | None = None
        self.done = False


class GroupCommit:
    """Make written messages durable and visible together (group commit), in the order durability needs:
    every file's data on disk, then the renames into ``new/``, then each ``new/`` directory on disk.

    Whoever arrives while no commit runs leads one: it takes every delivery waiting at that moment and does the
    fsyncs and renames for all of them, so ten sessions delivering at once cost one leader's round of work and one
    directory fsync per mailbox instead of ten -- and still none returns (and gets its 250) before its own rename
    is on disk. Per process: prefork workers each group their own.
    """

    def __init__(self, *, whole_filesystem: bool = True) -> None:
        self.whole_filesystem = whole_filesystem  # several files: one syncfs rather than an fsync each
        self._cond = threading.Condition()
        self._waiting: list[_Job] = []
        self._leading = False

    def commit(self, files: list[tuple[int, str, str]]) -> None:
        """Block until these written files are durable in ``new/``; raises the OSError that stopped them (their
        files are then not in ``new/``: the caller removes what is left)."""
        job = _Job(files)
        with self._cond:
            self._waiting.append(job)
            while not job.done:
                if self._leading:
                    self._cond.wait()
                    continue
                self._leading = True
                batch, self._waiting = self._waiting, []
                self._cond.release()
                try:
                    _commit_batch(batch, self.whole_filesystem)
                finally:
                    self._cond.acquire()
                    self._leading = False
                    for led in batch:
                        led.done = True
                    self._cond.notify_all()
        if job.error is not None:
            raise job.error


def _find_syncfs() -> Callable[[int], int] | None:
    """libc's syncfs where it reports write errors (Linux 5.8 and later: before, it could lose one silently)."""
    try:
        version = tuple(int(part) for part in platform.release().split(".")[:2])
        return ctypes.CDLL(None, use_errno=True).syncfs if version >= (5, 8) else None
    except (ValueError, OSError, AttributeError):
        return None


_syncfs = _find_syncfs()


def _sync_filesystems(batch: list[_Job]) -> set[int]:
    """One syncfs per filesystem the batch wrote to -- all its data and inodes on disk in one go, where an fsync
    per file costs a device flush each. Returns the descriptors it covered (the others get their own fsync)."""
    if _syncfs is None:
        return set()
    by_device: dict[int, list[int]] = {}
    for job in batch:
        for fd, _tmp, _new in job.files:
            try:
                by_device.setdefault(os.fstat(fd).st_dev, []).append(fd)
            except OSError:
                pass
    covered: set[int] = set()
    for fds in by_device.values():
        if _syncfs(fds[0]) == 0:
            covered.update(fds)
    return covered


def _commit_batch(batch: list[_Job], whole_filesystem: bool = True) -> None:
    """Make every file durable, rename the jobs whose files all were, fsync each directory renamed into."""
    dirs: dict[str, list[_Job]] = {}
    synced = _sync_filesystems(batch) if whole_filesystem and len(batch) > 1 else set()
    for job in batch:
        try:
            for fd, _tmp, _new in job.files:
                if fd not in synced:
                    os.fsync(fd)
            for _fd, tmp, new in job.files:
                os.rename(tmp, new)
                dirs.setdefault(os.path.dirname(new), []).append(job)
        except OSError as exc:
            job.error = exc
    for folder, jobs in dirs.items():
        try:
            fsync_dir(folder)
        except OSError as exc:
            for job in jobs:
                job.error = job.error or exc


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

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        hostname: str | None = None,
        catch_all: bool = False,
        sync: str = "batch",
    ) -> None:
        self.root = Path(root)
        self.catch_all = catch_all
        self.hostname = hostname or socket.gethostname()
        self._host_part = self.hostname.replace("/", r"\057").replace(":", r"\072")
        self._commit = GroupCommit(whole_filesystem=sync == "batch")
        self._ready: set[str] = set()  # mailbox folders known to exist

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
        files: list[tuple[int, str, str]] = []
        try:
            try:
                for box in boxes:
                    folder = self._ready_folder(box)
                    tmp = f"{folder}/tmp/{name}"
                    try:
                        fd = write_file(tmp, content)
                    except FileNotFoundError:  # the mailbox was removed while we served: make it again
                        self._ready.discard(folder)
                        folder = self._ready_folder(box)
                        fd = write_file(tmp, content)
                    files.append((fd, tmp, f"{folder}/new/{name}"))
                self._commit.commit(files)
            finally:
                for fd, _tmp, _new in files:
                    os.close(fd)
        except OSError:
            for _fd, tmp, new in files:
                for path in (tmp, new):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
            raise
        return queue_id

    def _ready_folder(self, box: Path) -> str:
        """The mailbox's folder, made (durably) the first time this process delivers to it -- not checked again
        for every message."""
        folder = str(box)
        if folder not in self._ready:
            ensure_maildir(box)
            self._ready.add(folder)
        return folder


def write_file(path: str | os.PathLike, content: bytes) -> int:
    """Create ``path`` (never over an existing file) holding ``content``; the open descriptor, for the fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        os.close(fd)
        raise
    return fd


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
