"""The durable queue of mail for other domains (``--spool DIR``), and the contract a queue runner delivers from.

Layout (one file per message; why below)::

    DIR/tmp/ID      being written (the group commit's tmp/, as a Maildir's)
    DIR/queue/ID    accepted: the envelope as its first line (JSON), then the message with its trace headers
    DIR/hold/ID     held by ``sockhop queue --hold``: the same file, renamed; never delivered until released
    DIR/state/ID    what delivery has learnt (JSON): attempts, last error, next try, recipients already delivered;
                    absent for a message never tried -- it is due now

A message reaches ``queue/`` exactly as a Maildir copy reaches ``new/``, in the same group commit (see
:mod:`sockhop.mail.maildir`): data written and synced, renamed, the folder synced -- and only then the 250. A
message with local and remote recipients is one job: its Maildir copies and its queue file become durable together.

Why one file per message with the envelope on its first line, and no index: accepting a message is one create, one
sync (shared) and one rename, whatever the queue holds -- nothing to scan, no shared index file to lock across
prefork workers or to reconcile with the files after a crash (a file in ``queue/`` *is* the message being queued,
atomically). Listing reads one line per file; a queue runner scans ``queue/`` once when it starts (names only,
``os.scandir``) and then keeps its own schedule in memory, so 100,000 queued messages cost neither acceptance nor a
restart. What changes after acceptance (attempts, errors, recipients done) goes to the small ``state/`` file,
replaced atomically, so the message file itself is never rewritten.

The queue runner's contract (delivery is built on the engine's outbound connections):

* :meth:`Spool.due` -- the entries to try now (not held, ``next_try`` passed), oldest first;
* :meth:`Spool.read` -- an entry's envelope and message (LF line ends: send it with CRLF and dot-stuffing);
* :meth:`Spool.delivered` -- recipients a remote server answered 250 (or that bounced): they are never tried
  again, and the message goes when none remains (at-least-once: a crash before this call means a duplicate, never
  a loss);
* :meth:`Spool.defer` -- a 4xx or an unreachable destination: the error and when to try again.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sockhop.errors import SockhopError

from .maildir import check_writable, fsync_dir, write_file

SUBDIRS = ("tmp", "queue", "hold", "state")
MAX_ENVELOPE_LINE = 1 << 20  # recipients are bounded by --max-recipients; this only guards a damaged file


class SpoolError(SockhopError):
    """The spool cannot be used that way."""


@dataclass(frozen=True)
class QueueEntry:
    """A queued message as ``sockhop queue`` lists it and a queue runner schedules it."""

    id: str
    size: int  # of the message (without the envelope line)
    arrival: float
    sender: str
    recipients: tuple[str, ...]  # those still to deliver
    held: bool = False
    attempts: int = 0
    last_error: str = ""
    next_try: float = 0.0  # 0: now
    user: str = ""  # who submitted it (AUTH), if anyone


@dataclass
class State:
    attempts: int = 0
    last_error: str = ""
    next_try: float = 0.0
    done: list[str] = field(default_factory=list)


def envelope_line(sender: str, recipients: Iterable[str], arrival: float, *, user: str = "", smtputf8: bool = False,
                  eight_bit: bool = False) -> bytes:  # fmt: skip
    """The first line of a queue file."""
    envelope = {"from": sender, "to": list(recipients), "arrival": arrival}
    if user:
        envelope["user"] = user
    if smtputf8:
        envelope["smtputf8"] = True
    if eight_bit:
        envelope["body"] = "8BITMIME"
    return json.dumps(envelope, separators=(",", ":")).encode("ascii") + b"\n"


class Spool:
    """A spool folder: made (durably) on first use, proved writable, raising SpoolError with one line if not."""

    def __init__(self, root: str | os.PathLike, *, create: bool = True) -> None:
        self.root = Path(root)
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                for sub in SUBDIRS:
                    (self.root / sub).mkdir(exist_ok=True)
                fsync_dir(self.root)
            except OSError as exc:
                raise SpoolError(f"cannot create {exc.filename or self.root}: {exc.strerror}") from None
            try:
                check_writable(self.root / "tmp")
            except SockhopError as exc:
                raise SpoolError(str(exc)) from None
        elif not (self.root / "queue").is_dir():
            raise SpoolError(f"{self.root} is not a spool (no queue/ in it)")

    # -- acceptance (in the group commit's thread) ------------------------------------------------------------------
    def write(self, queue_id: str, envelope: bytes, content: bytes) -> tuple[int, str, str]:
        """Write a queue file into ``tmp/``: (open fd, tmp path, queue path) for the group commit to sync and
        rename. Nothing is left behind on an error."""
        tmp = f"{self.root}/tmp/{queue_id}"
        return write_file(tmp, envelope + content), tmp, f"{self.root}/queue/{queue_id}"

    # -- reading ---------------------------------------------------------------------------------------------------
    def _path(self, queue_id: str) -> Path:
        if not queue_id or "/" in queue_id or queue_id.startswith("."):
            raise SpoolError(f"no such message: {queue_id!r}")
        for folder in ("queue", "hold"):
            path = self.root / folder / queue_id
            if path.exists():
                return path
        raise SpoolError(f"no such message: {queue_id}")

    def ids(self, held: bool | None = None) -> list[str]:
        """Every queued message's id (names only: no file is opened)."""
        folders = {None: ("queue", "hold"), False: ("queue",), True: ("hold",)}[held]
        found = []
        for folder in folders:
            with os.scandir(self.root / folder) as it:
                found += [e.name for e in it if not e.name.startswith(".")]
        return found

    def entries(self) -> list[QueueEntry]:
        """Every queued message, oldest first: one read of the first line per file, and a state file read only for
        the messages that have one (their names are listed once)."""
        with os.scandir(self.root / "state") as it:
            stated = {e.name for e in it if not e.name.startswith(".")}
        found = []
        for folder, held in (("queue", False), ("hold", True)):
            with os.scandir(self.root / folder) as it:
                for item in it:
                    if item.name.startswith("."):
                        continue
                    entry = self._entry(item.path, item.name, held, item.name in stated)
                    if entry is not None:
                        found.append(entry)
        found.sort(key=lambda e: (e.arrival, e.id))
        return found

    def _entry(self, path: str, queue_id: str, held: bool, stated: bool) -> QueueEntry | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None  # delivered or deleted meanwhile
        except OSError as exc:
            return QueueEntry(queue_id, 0, 0.0, "?", (), held, last_error=f"unreadable: {exc.strerror}")
        try:
            size = os.fstat(fd).st_size
            head = os.read(fd, 8192)
            while b"\n" not in head and len(head) < min(size, MAX_ENVELOPE_LINE):
                more = os.read(fd, 65536)
                if not more:
                    break
                head += more
            first = head[: head.find(b"\n") + 1]
            envelope = json.loads(first)
        except (OSError, ValueError) as exc:
            return QueueEntry(queue_id, 0, 0.0, "?", (), held, last_error=f"unreadable: {exc}")
        finally:
            os.close(fd)
        state = self._state(queue_id) if stated else State()
        done = set(state.done)
        return QueueEntry(
            queue_id, size - len(first), float(envelope.get("arrival", 0)), envelope.get("from", ""),
            tuple(r for r in envelope.get("to", ()) if r not in done), held, state.attempts, state.last_error,
            state.next_try, envelope.get("user", ""),
        )  # fmt: skip

    def entry(self, queue_id: str) -> QueueEntry | None:
        """One message as :meth:`entries` lists it; None when it is gone (delivered or deleted)."""
        for folder, held in (("queue", False), ("hold", True)):
            path = self.root / folder / queue_id
            if path.exists():
                return self._entry(str(path), queue_id, held, (self.root / "state" / queue_id).exists())
        return None

    def tried(self) -> set[str]:
        """The ids of the messages tried before (those with a state file): names only."""
        with os.scandir(self.root / "state") as it:
            return {e.name for e in it if not e.name.startswith(".")}

    def next_try(self, queue_id: str) -> float:
        return self._state(queue_id).next_try

    def enqueue(self, envelope: bytes, content: bytes) -> str:
        """Queue a message the server makes itself (a bounce): written, synced, renamed, the folder synced. Its
        id."""
        queue_id = f"{time.time_ns():x}{os.getpid():x}{secrets.token_hex(3)}"
        fd, tmp, final = self.write(queue_id, envelope, content)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        fsync_dir(self.root / "queue")
        return queue_id

    def _state(self, queue_id: str) -> State:
        try:
            data = json.loads((self.root / "state" / queue_id).read_bytes())
            return State(int(data.get("attempts", 0)), str(data.get("last_error", "")),
                         float(data.get("next_try", 0)), list(data.get("done", [])))  # fmt: skip
        except (OSError, ValueError, TypeError, AttributeError):
            return State()

    def read(self, queue_id: str) -> tuple[dict, bytes]:
        """A message's envelope (``from``, ``to`` -- all recipients, delivered ones included --, ``arrival``,
        ``user``, ``smtputf8``, ``body``) and its text (LF line ends)."""
        data = self._path(queue_id).read_bytes()
        first, _, content = data.partition(b"\n")
        return json.loads(first), content

    def load(self, queue_id: str) -> tuple[QueueEntry, dict, bytes] | None:
        """What a queue runner needs to try a queued message, from one read of its file (and of its state file, if
        it has one): its entry, its envelope and its text. None when it is not in ``queue/`` (delivered, deleted,
        held). Raises OSError, ValueError for a damaged file."""
        if not queue_id or "/" in queue_id or queue_id.startswith("."):
            return None
        try:
            with open(f"{self.root}/queue/{queue_id}", "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        first, _, content = data.partition(b"\n")
        return self._loaded(queue_id, first, content)

    def loaded(self, queue_id: str, head: bytes, content: bytes) -> tuple[QueueEntry, dict, bytes] | None:
        """As :meth:`load`, for a message whose envelope line and text the caller has from queueing it (the group
        commit's): the file is not read, only looked for in ``queue/`` (not held or deleted meanwhile)."""
        if not queue_id or "/" in queue_id or queue_id.startswith("."):
            return None
        if not os.path.exists(f"{self.root}/queue/{queue_id}"):
            return None
        return self._loaded(queue_id, head.rstrip(b"\n"), content)

    def _loaded(self, queue_id: str, first: bytes, content: bytes) -> tuple[QueueEntry, dict, bytes]:
        envelope = json.loads(first)
        state = self._state(queue_id)
        done = set(state.done)
        entry = QueueEntry(
            queue_id, len(content), float(envelope.get("arrival", 0)), envelope.get("from", ""),
            tuple(r for r in envelope.get("to", ()) if r not in done), False, state.attempts, state.last_error,
            state.next_try, envelope.get("user", ""),
        )  # fmt: skip
        return entry, envelope, content

    def due(self, now: float | None = None) -> list[QueueEntry]:
        """What a queue runner should try now: not held, its next try passed, oldest first."""
        now = time.time() if now is None else now
        return [e for e in self.entries() if not e.held and e.next_try <= now and e.recipients]

    # -- what delivery learns ---------------------------------------------------------------------------------------
    def _write_state(self, queue_id: str, state: State, *, sync: bool = True) -> None:
        """Replace ``state/ID`` atomically (and durably, with ``sync``)."""
        folder = self.root / "state"
        tmp = folder / f".{queue_id}.{os.getpid()}"
        body = json.dumps({"attempts": state.attempts, "last_error": state.last_error, "next_try": state.next_try,
                           "done": state.done}).encode()  # fmt: skip
        fd = write_file(tmp, body)
        try:
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, folder / queue_id)
        if sync:
            fsync_dir(folder)

    # What the queue runner learns it writes with ``sync=False``: a crash may lose it, and then a message or a
    # recipient is tried again -- a duplicate, which at-least-once allows, never a loss -- while the runner pays no
    # fsync per delivery on the engine's loop (Postfix's qmgr does not sync its deletions either).
    def defer(self, queue_id: str, error: str, next_try: float, *, sync: bool = True) -> None:
        """A try failed for now (4xx, unreachable): remember why, and when to try again."""
        self._path(queue_id)
        state = self._state(queue_id)
        state.attempts += 1
        state.last_error, state.next_try = error, next_try
        self._write_state(queue_id, state, sync=sync)

    def delivered(self, queue_id: str, recipients: Iterable[str], *, sync: bool = True) -> bool:
        """These recipients are settled (a 250, or a bounce sent): never tried again. Removes the message when none
        remains; returns whether it did."""
        entry = self.entry(queue_id)  # the envelope's line and the state: the message itself is not read
        if entry is None:
            raise SpoolError(f"no such message: {queue_id}")
        state = self._state(queue_id)
        state.done = list(dict.fromkeys([*state.done, *recipients]))
        if not set(entry.recipients) - set(state.done):
            self.delete(queue_id, sync=sync)
            return True
        self._write_state(queue_id, state, sync=sync)
        return False

    # -- the administrator's commands -------------------------------------------------------------------------------
    def select(self, queue_id: str) -> list[str]:
        """``ALL`` or one id (which must exist)."""
        if queue_id == "ALL":
            return self.ids()
        self._path(queue_id)
        return [queue_id]

    def delete(self, queue_id: str, *, sync: bool = True) -> None:
        path = self.root / "queue" / queue_id
        try:
            path.unlink()  # where it nearly always is: no look first
        except FileNotFoundError:
            path = self._path(queue_id)  # held meanwhile, or gone (SpoolError)
            path.unlink()
        (self.root / "state" / queue_id).unlink(missing_ok=True)
        if sync:
            fsync_dir(path.parent)

    def hold(self, queue_id: str) -> bool:
        """Returns False if it was held already."""
        return self._move(queue_id, "queue", "hold")

    def release(self, queue_id: str) -> bool:
        """Returns False if it was not held."""
        return self._move(queue_id, "hold", "queue")

    def _move(self, queue_id: str, src: str, dst: str) -> bool:
        path = self._path(queue_id)
        if path.parent.name != src:
            return False
        os.rename(path, self.root / dst / queue_id)
        fsync_dir(self.root / dst)
        if dst == "queue":
            self.poke()
        return True

    def poke(self) -> None:
        """Tell a running server's queue runner to look at the queue (it looks at this file's time once a
        second)."""
        (self.root / "flush").touch()

    def flush(self) -> int:
        """Every deferred message due now (a queue runner picks them up on its next look); returns how many. Only
        messages tried before have a state file: those are the ones read."""
        count = 0
        with os.scandir(self.root / "state") as it:
            names = [e.name for e in it if not e.name.startswith(".")]
        for queue_id in names:
            state = self._state(queue_id)
            if state.next_try:
                state.next_try = 0.0
                self._write_state(queue_id, state)
                count += 1
        self.poke()
        return count


def iter_lines(entries: list[QueueEntry], now: float) -> Iterator[str]:
    """``mailq``'s listing: a header, a block per message, the total."""
    if not entries:
        yield "Mail queue is empty"
        return
    yield "-Queue ID---------------- --Size-- ----Arrival Time---- -Sender/Recipient-------"
    for e in entries:
        mark = "!" if e.held else " "
        arrival = time.strftime("%a %b %d %H:%M:%S", time.localtime(e.arrival))
        yield f"{e.id + mark:<26} {e.size:>8} {arrival}  {e.sender or 'MAILER-DAEMON'}"
        if e.held:
            yield f"{'':<26} (held: `sockhop queue --release {e.id}` to deliver)"
        if e.last_error:
            yield f"{'':<26} ({e.last_error[:200]})"
        when = "now" if e.next_try <= now else time.strftime("%a %b %d %H:%M:%S", time.localtime(e.next_try))
        yield f"{'':<26} next try: {when}; attempts: {e.attempts}"
        for rcpt in e.recipients:
            yield f"{'':<46}{rcpt}"
        yield ""
    total = sum(e.size for e in entries)
    yield f"-- {(total + 1023) // 1024} Kbytes in {len(entries)} Request{'s' if len(entries) != 1 else ''}."
