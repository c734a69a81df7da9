"""Maildir (https://cr.yp.to/proto/maildir.html): durable delivery, and reading mailboxes back.

Delivery writes each copy into ``tmp/``, fsyncs it, renames it into ``new/`` and fsyncs ``new/`` -- only then
does the protocol send 250. A rename is atomic, so a reader (or a crash) sees a message whole in ``new/`` or not
at all; the fsyncs make "whole" survive a power cut, not only a killed process. A mailbox created on first use
is fsynced into its parent too, or the new directory itself could vanish with the message in it. Deliveries that
arrive together share that work (:class:`GroupCommit`): one thread writes them and makes them all durable -- with
``sync="batch"`` (the default) one syncfs of the filesystem rather than an fsync per file -- then one directory fsync
per mailbox. ``submit`` hands a message over and returns (the event loop's way: no thread waits per message);
``deliver`` waits for it.

Stored messages use LF line ends, as every Maildir reader expects; the protocol refuses messages with a bare CR or
LF, so the conversion loses nothing.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import logging
import os
import platform
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path

from sockhop.engine.protocol import wait_for
from sockhop.errors import SockhopError

from .address import split_address
from .protocol import Envelope, Session
from .trace import trace_headers

log = logging.getLogger("sockhop.mail")
_counter = itertools.count(1)  # next() on a count is atomic under the GIL: safe across threads
SUBDIRS = ("tmp", "new", "cur")
NAME_EXTRA = "._+-="


class MaildirError(SockhopError):
    """The Maildir cannot be written: every message would be answered 451, so the server does not start."""


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
    """One delivery for the group commit: how to write its files, and whom to tell how it ended."""

    __slots__ = ("write", "done", "files", "error")

    def __init__(
        self,
        write: Callable[[], list[tuple[int, str, str]]],
        done: Callable[[OSError | None], None] | None = None,
    ) -> None:
        self.write = write  # creates the tmp files: [(open fd, tmp path, new path)]
        self.done = done
        self.files: list[tuple[int, str, str]] = []
        self.error: OSError | None = None


_commits: weakref.WeakSet[GroupCommit] = weakref.WeakSet()


class GroupCommit:
    """Write messages and make them durable and visible together (group commit), in the order durability needs:
    every file's data on disk, then the renames into ``new/``, then each ``new/`` directory on disk.

    One thread per process does it: it takes every delivery waiting when it looks, writes them, syncs them, renames
    them, syncs the directories, and tells each how it went -- so ten sessions delivering at once cost one round of
    that work instead of ten, no thread waits per message, and none is told "done" (and gets its 250) before its
    own rename is on disk. Prefork workers each get their own thread, started on their first delivery.
    """

    def __init__(self, *, whole_filesystem: bool = True) -> None:
        self.whole_filesystem = whole_filesystem  # several files: one syncfs rather than an fsync each
        self._forked()
        _commits.add(self)

    def _forked(self) -> None:
        """A fresh start: at creation, and in a child after fork (no thread of the parent's runs there, and a lock
        it held then would stay held)."""
        self._cond = threading.Condition()
        self._waiting: list[_Job] = []
        self._thread: threading.Thread | None = None

    def submit(self, job: _Job) -> None:
        """Queue a job; its ``done`` is called from the commit thread."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self._thread.start()
            self._waiting.append(job)
            if len(self._waiting) == 1:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.wait()
                batch, self._waiting = self._waiting, []
            commit_jobs(batch, self.whole_filesystem)


os.register_at_fork(after_in_child=lambda: [commit._forked() for commit in _commits])


def commit_jobs(batch: list[_Job], whole_filesystem: bool = True) -> None:
    """Write, commit and report a batch: every job's ``done`` is called, with None once its files are in ``new/``
    or with the OSError that stopped it (nothing of it is left in ``new/`` or ``tmp/``)."""
    written = []
    for job in batch:
        try:
            job.files = job.write()
        except Exception as exc:  # noqa: BLE001 -- whatever it is, this message failed, not the others
            job.error = exc if isinstance(exc, OSError) else OSError(f"delivery failed: {exc!r}")
        else:
            written.append(job)
    try:
        _commit_batch(written, whole_filesystem)
    except Exception as exc:  # noqa: BLE001 -- never report as durable what may not be
        for job in written:
            job.error = job.error or OSError(f"commit failed: {exc!r}")
    for job in batch:
        for fd, tmp, new in job.files:
            os.close(fd)
            if job.error is not None:
                _unlink(tmp, new)
        if job.done is not None:
            try:
                job.done(job.error)
            except Exception:  # the commit thread must outlive any one delivery's callback
                log.exception("after a delivery")


def _unlink(*paths: str) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


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


def check_writable(folder: Path) -> None:
    """Create, fsync and remove a file in ``folder``, as a delivery would: a folder that refuses it (permissions,
    a read-only or full filesystem, an immutable folder) is one line now rather than a 451 for every message.
    Raises MaildirError."""
    probe = folder / f".sockhop-probe.{os.getpid()}.{next(_counter)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise MaildirError(f"cannot write to {folder}: {exc.strerror}") from None


class Maildir:
    """A folder of mailboxes, one per local part (``root/<local-part>/new/...``), or with ``catch_all`` a single
    Maildir at ``root`` taking every recipient.

    Made once at start-up, it creates ``root`` (with ``catch_all``, its ``tmp/ new/ cur/``) and proves it can write
    there, raising MaildirError with one line if not."""

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
        try:
            if catch_all:
                ensure_maildir(self.root)
            else:  # a folder of mailboxes, each made on its first message: the root must take new folders
                self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MaildirError(f"cannot create {exc.filename or self.root}: {exc.strerror}") from None
        check_writable(self.root / "tmp" if catch_all else self.root)
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

    def submit(
        self,
        session: Session,
        envelope: Envelope,
        done: Callable[[str | OSError], None],
        *,
        recipients: list[str] | None = None,
        also: Callable[[str, bytes, float], list[tuple[int, str, str]]] | None = None,
    ) -> None:
        """Hand one message to the group commit and return at once; ``done`` is called from the commit thread with
        the queue id once the message is durable in ``new/`` of every mailbox, or with the OSError that stopped it
        (and then nothing of it is in ``new/``). ``recipients``: those to deliver here (default: the envelope's);
        ``also(queue id, content, now)``: more files for the same commit -- the spool's -- made durable with the
        Maildir copies or failing with them."""
        now = time.time()
        name = self.unique_name(now)
        queue_id = name.split(".", 2)[0] + name.split(".", 2)[1]
        here = envelope.recipients if recipients is None else recipients

        def write() -> list[tuple[int, str, str]]:
            content = trace_headers(session, envelope, hostname=self.hostname, queue_id=queue_id, now=now)
            content += envelope.content
            files = self._write_copies(name, content, here) if here else []
            if also is not None:
                try:
                    files += also(queue_id, content, now)
                except BaseException:
                    for fd, tmp, _new in files:
                        os.close(fd)
                        _unlink(tmp)
                    raise
            return files

        self._commit.submit(_Job(write, lambda error: done(queue_id if error is None else error)))

    def deliver(self, session: Session, envelope: Envelope) -> str:
        """Store one copy per mailbox and wait until it is durable; returns the queue id. Raises OSError having left
        nothing in ``new/``."""
        result = wait_for(functools.partial(self.submit, session, envelope))
        if isinstance(result, OSError):
            raise result
        assert isinstance(result, str)
        return result

    def _write_copies(self, name: str, content: bytes, recipients: list[str]) -> list[tuple[int, str, str]]:
        """Write a copy into ``tmp/`` of each recipient's mailbox: [(open fd, tmp path, new path)]. On an error the
        copies written so far are removed."""
        boxes = list(dict.fromkeys(self.mailbox(split_address(r)[0]) for r in recipients))
        files: list[tuple[int, str, str]] = []
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
        except OSError:
            for fd, tmp, _new in files:
                os.close(fd)
                _unlink(tmp)
            raise
        return files

    def _ready_folder(self, box: Path) -> str:
        """The mailbox's folder, made (durably) the first time this process delivers to it -- not checked again
        for every message."""
        folder = str(box)
        if folder not in self._ready:
            ensure_maildir(box)
            self._ready.add(folder)
        return folder


def write_file(path: str | os.PathLike, content: bytes) -> int:
    """Create ``path`` (never over an existing file) holding ``content``; the open descriptor, for the fsync. On
    any failure nothing of it is left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:  # a full disk, a quota: the partial file must not stay to keep the disk full
        os.close(fd)
        _unlink(os.fspath(path))
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
    """``root`` itself if it is a Maildir, and every Maildir directly under it: a server delivering one mailbox per
    local part may share its root with a Maildir another delivered into."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [root] if (root / "new").is_dir() or (root / "cur").is_dir() else []
    return found + sorted(p for p in root.iterdir() if (p / "new").is_dir() or (p / "cur").is_dir())


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
