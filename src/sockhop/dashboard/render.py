"""A message opened: its plain text, its HTML made safe to show, its headers, its attachments.

HTML mail is written by whoever sent it, so it is shown only after nh3 (the Ammonia sanitiser) has removed every
script, event handler, form and frame, inside a sandboxed frame, under a Content-Security-Policy that allows no
script and, unless the reader asks, no remote image (a remote image tells the sender the mail was read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import nh3

#: The policy the HTML view is served under: nothing runs, nothing is fetched but inline and embedded images.
CSP = "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
#: The same when the reader asked for remote images.
CSP_REMOTE_IMAGES = CSP.replace("img-src data: cid:", "img-src data: cid: https: http:")

ALLOWED_TAGS = nh3.ALLOWED_TAGS | {"center", "font"}
ALLOWED_ATTRIBUTES = {
    **{tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()},
    "*": {"style", "class", "align", "width", "height", "bgcolor", "color", "dir", "lang", "title"},
    "img": {"src", "alt", "width", "height"},
    "font": {"color", "face", "size"},
}


@dataclass(frozen=True)
class Attachment:
    index: int
    filename: str  # safe to put in a Content-Disposition header and on a disk
    content_type: str
    size: int


@dataclass(frozen=True)
class Opened:
    text: str
    html: str  # sanitised; empty if the message has no HTML part
    headers: list[tuple[str, str]]
    attachments: list[Attachment]


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[return-value]


def open_message(raw: bytes) -> Opened:
    message = parse(raw)
    return Opened(
        text=_body(message, "plain"),
        html=sanitize(_body(message, "html")),
        headers=[(name, _safe_str(value)) for name, value in message.raw_items()],
        attachments=[
            Attachment(i, safe_filename(part.get_filename(), i), part.get_content_type(), len(_payload(part)))
            for i, part in enumerate(_attachments(message))
        ],
    )


def attachment(raw: bytes, index: int) -> tuple[Attachment, bytes] | None:
    """Attachment ``index`` of the message and its bytes, or None."""
    parts = _attachments(parse(raw))
    if not 0 <= index < len(parts):
        return None
    part = parts[index]
    data = _payload(part)
    return Attachment(index, safe_filename(part.get_filename(), index), part.get_content_type(), len(data)), data


def sanitize(html: str) -> str:
    """HTML with nothing that runs: no script, no event handler, no form, frame or object, no javascript: URL."""
    if not html:
        return ""
    return nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes={"http", "https", "mailto",
                     "cid", "data"}, link_rel="noopener noreferrer nofollow", strip_comments=True)  # fmt: skip


def html_document(html: str) -> bytes:
    """The sanitised HTML as the document the sandboxed frame loads."""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><base target="_blank"></head><body>{html}</body></html>'
    ).encode()


_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|;]+')


def safe_filename(name: str | None, index: int) -> str:
    """A file name a browser saves under, as sent but with nothing that reaches another folder or breaks a header
    (no slash, backslash, control character, quote or semicolon; no leading dot)."""
    cleaned = re.sub(r"\.{2,}", ".", _UNSAFE.sub("_", name or "")).strip(" .")
    return cleaned[:150] or f"attachment-{index + 1}"


def _attachments(message: EmailMessage) -> list[EmailMessage]:
    try:
        return list(message.iter_attachments()) if message.is_multipart() else []
    except Exception:  # noqa: BLE001 -- a broken MIME structure has no attachments to offer
        return []


def _payload(part: EmailMessage) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        return b""
    return data if isinstance(data, bytes) else b""


def _body(message: EmailMessage, kind: str) -> str:
    try:
        part = message.get_body(preferencelist=(kind,))
        return part.get_content() if part is not None else ""
    except Exception:  # noqa: BLE001 -- an undecodable part shows as nothing, not as an error page
        return ""


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001
        return "?"
