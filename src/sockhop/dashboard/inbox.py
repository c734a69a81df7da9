"""The inbox: every message a Maildir holds, indexed once and kept current, found by a search, opened, deleted.

The index is read once (headers, and the start of the text for searching) and then refreshed by comparing file
names: a Maildir never changes a message in place, so a name seen once is that message until it goes. A refresh
lists new/ and cur/ of each mailbox and parses only the names it has not seen, so a mailbox of 10,000 messages
lists and searches from memory.

A message is named by an id made from its place in the Maildir (a hash): no path from a URL ever reaches the
filesystem, only ids the index itself handed out.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path

from sockhop.mail.maildir import mailboxes

#: Bytes of a message read for its search text: the headers and the start of the body.
SEARCH_BYTES = 64 * 1024


@dataclass(frozen=True)
class Address:
    name: str
    address: str


@dataclass
class Summary:
    """One message as the list shows it."""

    id: str
    path: Path
    mailbox: str
    sender: Address
    to: list[Address]
    cc: list[Address]
    subject: str
    date: str  # ISO 8601, from the Date header (else the delivery time)
    received: float  # the delivery time (the file's mtime)
    size: int
    attachments: list[str] = field(default_factory=list)
    search_text: str = ""  # lower case: sender, recipients, subject, text

    def to_json(self) -> dict:
        return {
            "ID": self.id,
            "Mailbox": self.mailbox,
            "From": _address_json(self.sender),
            "To": [_address_json(a) for a in self.to],
            "Cc": [_address_json(a) for a in self.cc],
            "Subject": self.subject,
            "Date": self.date,
            "Size": self.size,
            "Attachments": len(self.attachments),
            "AttachmentNames": self.attachments,
        }


def _address_json(address: Address) -> dict:
    return {"Name": address.name, "Address": address.address}


class Inbox:
    """The messages under a Maildir root (one Maildir, or a folder of them: one per local part)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.entries: dict[str, Summary] = {}
        self._ids: dict[str, str] = {}  # a message file's path -> its id
        self._folders: dict[str, int] = {}  # new/ and cur/ of each mailbox -> its mtime when last listed
        self._newest_first: list[Summary] = []
        self.refresh()

    def refresh(self) -> list[Summary]:
        """Pick up what arrived and forget what went; the messages that arrived, oldest first. A folder whose
        modification time has not moved since it was listed is not listed again."""
        folders = {}
        for box in mailboxes(self.root):
            for sub in ("new", "cur"):
                folder = os.path.join(box, sub)
                try:
                    folders[folder] = os.stat(folder).st_mtime_ns
                except OSError:
                    continue
        if folders == self._folders:
            return []
        present: set[str] = set()
        for folder in folders:
            try:
                present.update(os.path.join(folder, n) for n in os.listdir(folder) if not n.startswith("."))
            except OSError:
                continue
        self._folders = folders
        arrived = []
        for path in present - self._ids.keys():
            summary = self._read(Path(path))
            if summary is not None:
                self._ids[path] = summary.id
                self.entries[summary.id] = summary
                arrived.append(summary)
        gone = self._ids.keys() - present
        for path in gone:
            self.entries.pop(self._ids.pop(path), None)
        if arrived or gone:
            self._newest_first = sorted(self.entries.values(), key=lambda s: (s.received, s.id), reverse=True)
        arrived.sort(key=lambda s: (s.received, s.id))
        return arrived

    def _read(self, path: Path) -> Summary | None:
        try:
            with path.open("rb") as f:
                head = f.read(SEARCH_BYTES)
                size = os.fstat(f.fileno()).st_size
                received = os.fstat(f.fileno()).st_mtime
        except OSError:
            return None  # moved or removed meanwhile: the next refresh sees where it went
        message = BytesParser(policy=policy.default).parsebytes(head)
        relative = path.relative_to(self.root).as_posix()
        mailbox = path.parent.parent.name if path.parent.parent != self.root else "."
        sender = (_addresses(message, "from") or [Address("", "")])[0]
        to, cc = _addresses(message, "to"), _addresses(message, "cc")
        subject = _header(message, "subject")
        text = _search_text(message)
        return Summary(
            id=hashlib.sha256(relative.encode()).hexdigest()[:20],
            path=path,
            mailbox=mailbox,
            sender=sender,
            to=to,
            cc=cc,
            subject=subject,
            date=_date(message, received),
            received=received,
            size=size,
            attachments=_attachment_names(message),
            search_text=" ".join(
                [mailbox, sender.name, sender.address, *(f"{a.name} {a.address}" for a in to + cc), subject, text]
            ).lower(),  # fmt: skip
        )

    def messages(self, query: str = "") -> list[Summary]:
        """Newest first; with ``query``, those whose mailbox, sender, recipients, subject or text hold every word
        of it."""
        words = query.lower().split()
        if not words:
            return self._newest_first
        return [s for s in self._newest_first if all(w in s.search_text for w in words)]

    def get(self, message_id: str) -> Summary | None:
        return self.entries.get(message_id)

    def open(self, message_id: str) -> tuple[Summary, bytes] | None:
        """The summary and the whole message as stored, or None (unknown id, or gone meanwhile)."""
        summary = self.entries.get(message_id)
        if summary is None:
            return None
        try:
            return summary, summary.path.read_bytes()
        except OSError:
            self.refresh()
            return None

    def delete(self, message_ids: Iterable[str]) -> int:
        """Remove these messages from the Maildir; how many went."""
        gone = 0
        for message_id in list(message_ids):
            summary = self.entries.pop(message_id, None)
            if summary is None:
                continue
            self._ids.pop(str(summary.path), None)
            try:
                summary.path.unlink()
                gone += 1
            except FileNotFoundError:
                pass
        if gone:
            self._newest_first = [s for s in self._newest_first if s.id in self.entries]
        return gone

    def delete_all(self) -> int:
        return self.delete(list(self.entries))


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:  # a malformed header must not stop the listing  # noqa: BLE001
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def _addresses(message: EmailMessage, name: str) -> list[Address]:
    try:
        values = message.get_all(name) or []
        return [Address(n, a) for n, a in getaddresses([str(v) for v in values]) if a or n]
    except Exception:  # noqa: BLE001
        return [Address(_header(message, name), "")]


def _date(message: EmailMessage, received: float) -> str:
    import datetime

    try:
        when = parsedate_to_datetime(_header(message, "date"))
    except (TypeError, ValueError, IndexError):
        when = None
    if when is None:
        when = datetime.datetime.fromtimestamp(received, datetime.UTC)
    return when.isoformat()


def _attachment_names(message: EmailMessage) -> list[str]:
    names = []
    try:
        for part in message.iter_attachments() if message.is_multipart() else ():
            names.append(part.get_filename() or part.get_content_type())
    except Exception:  # noqa: BLE001 -- a broken MIME structure lists no attachments, it does not fail the index
        pass
    return names


def _search_text(message: EmailMessage) -> str:
    try:
        body = message.get_body(preferencelist=("plain", "html"))
        return body.get_content()[:SEARCH_BYTES] if body is not None else ""
    except Exception:  # noqa: BLE001 -- a truncated or broken body searches by its headers alone
        return ""
