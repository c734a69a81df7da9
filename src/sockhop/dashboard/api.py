"""The inbox's JSON API, as a user's test suite asserts on the mail their application sent (Mailpit's API is used
that way): a request in, an answer out, no sockets here.

    GET  /api/v1/messages[?query=WORDS&start=N&limit=N]   newest first; the query searches sender, recipients,
                                                          subject and text
    GET  /api/v1/messages/ID                              one message: text, sanitised HTML, headers, attachments
    GET  /api/v1/messages/ID/raw                          the message as stored
    GET  /api/v1/messages/ID/html[?remote=1]              the HTML view the sandboxed frame loads
    GET  /api/v1/messages/ID/part/N                       attachment N, as a download
    GET  /api/v1/token                                    the token that deletes ask for
    POST /api/v1/messages/ID/delete                       (header X-Sockhop-Token) one message
    POST /api/v1/messages/delete                          (header X-Sockhop-Token) every message

Deletes are POSTs carrying the token in a header: a page elsewhere can make a browser send a form, never a header,
so it cannot delete anyone's mail.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, quote

from sockhop.dashboard import render
from sockhop.dashboard.inbox import Inbox

PREFIX = "/api/v1/"
TOKEN_HEADER = "x-sockhop-token"
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _json(status: int, value: object) -> Answer:
    return Answer(status, "application/json", json.dumps(value, ensure_ascii=False).encode() + b"\n")


def _error(status: int, message: str) -> Answer:
    return _json(status, {"error": message})


class Api:
    """The API over one inbox. ``token`` guards the deletes (made at random when not given)."""

    def __init__(self, inbox: Inbox, token: str | None = None) -> None:
        self.inbox = inbox
        self.token = token or secrets.token_urlsafe(24)

    def handle(self, method: str, target: str, headers: dict[str, str]) -> Answer:
        """Answer one request; ``headers`` by lower-case name."""
        path, _, query = target.partition("?")
        if not path.startswith(PREFIX):
            return _error(404, "no such API path")
        words = path[len(PREFIX) :].split("/")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        self.inbox.refresh()
        if method == "POST":
            return self._post(words, headers)
        if method not in ("GET", "HEAD"):
            return Answer(
                405, "application/json", b'{"error": "use GET, or POST to delete"}\n', (("Allow", "GET, POST"),)
            )
        match words:
            case ["token"]:
                return _json(200, {"token": self.token})
            case ["messages"]:
                return self._list(params)
            case ["messages", message_id]:
                return self._message(message_id)
            case ["messages", message_id, "raw"]:
                return self._raw(message_id)
            case ["messages", message_id, "html"]:
                return self._html(message_id, params.get("remote") == "1")
            case ["messages", message_id, "part", index] if index.isdigit():
                return self._part(message_id, int(index))
        return _error(404, "no such API path")

    def _list(self, params: dict[str, str]) -> Answer:
        try:
            start = max(0, int(params.get("start", "0")))
            limit = min(MAX_LIMIT, max(1, int(params.get("limit", "50"))))
        except ValueError:
            return _error(400, "start and limit are whole numbers")
        found = self.inbox.messages(params.get("query", ""))
        page = found[start : start + limit]
        return _json(200, {"total": len(self.inbox.entries), "messages_count": len(found), "start": start,
                           "count": len(page), "messages": [s.to_json() for s in page]})  # fmt: skip

    def _message(self, message_id: str) -> Answer:
        opened = self.inbox.open(message_id)
        if opened is None:
            return _error(404, "no such message")
        summary, raw = opened
        view = render.open_message(raw)
        return _json(200, {**summary.to_json(), "Text": view.text, "HTML": view.html,
                           "Headers": [{"Name": n, "Value": v} for n, v in view.headers],
                           "Attachments": [{"PartID": a.index, "FileName": a.filename, "ContentType": a.content_type,
                                            "Size": a.size} for a in view.attachments]})  # fmt: skip

    def _raw(self, message_id: str) -> Answer:
        opened = self.inbox.open(message_id)
        if opened is None:
            return _error(404, "no such message")
        return Answer(200, "text/plain; charset=utf-8", opened[1], (("X-Content-Type-Options", "nosniff"),))

    def _html(self, message_id: str, remote_images: bool) -> Answer:
        opened = self.inbox.open(message_id)
        if opened is None:
            return _error(404, "no such message")
        html = render.open_message(opened[1]).html
        csp = render.CSP_REMOTE_IMAGES if remote_images else render.CSP
        headers = (("Content-Security-Policy", csp), ("X-Content-Type-Options", "nosniff"),
                   ("Referrer-Policy", "no-referrer"))  # fmt: skip
        return Answer(200, "text/html; charset=utf-8", render.html_document(html), headers)

    def _part(self, message_id: str, index: int) -> Answer:
        opened = self.inbox.open(message_id)
        found = render.attachment(opened[1], index) if opened is not None else None
        if found is None:
            return _error(404, "no such attachment")
        part, data = found
        disposition = f"attachment; filename=\"{part.filename}\"; filename*=UTF-8''{quote(part.filename)}"
        headers = (("Content-Disposition", disposition), ("X-Content-Type-Options", "nosniff"),
                   ("Content-Security-Policy", "default-src 'none'; sandbox"))  # fmt: skip
        return Answer(200, "application/octet-stream", data, headers)

    def _post(self, words: list[str], headers: dict[str, str]) -> Answer:
        if not hmac.compare_digest(headers.get(TOKEN_HEADER, "").encode(), self.token.encode()):
            return _error(403, f"a delete needs the {TOKEN_HEADER} header (GET {PREFIX}token)")
        match words:
            case ["messages", "delete"]:
                return _json(200, {"deleted": self.inbox.delete_all()})
            case ["messages", message_id, "delete"]:
                if self.inbox.get(message_id) is None:
                    return _error(404, "no such message")
                return _json(200, {"deleted": self.inbox.delete([message_id])})
        return _error(404, "no such API path")
