"""SMTP reply codes (RFC 5321 section 4.2) and enhanced status codes (RFC 3463), as named constants, with the
two verbs every side needs: ``SMTPReply.format`` for the server, ``parse_reply`` for the client.

Server, client and tests all name codes from here, so a test reads ``assert code == Code.BAD_SEQUENCE`` and not
``== 503``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sockhop.errors import RemoteProtocolError


class Code(enum.IntEnum):
    """The reply codes sockhop sends or understands."""

    SYSTEM_STATUS = 211
    HELP = 214
    SERVICE_READY = 220
    CLOSING = 221
    AUTH_SUCCEEDED = 235  # RFC 4954
    OK = 250
    CANNOT_VRFY = 252
    AUTH_CONTINUE = 334  # a SASL challenge
    START_MAIL_INPUT = 354
    SERVICE_UNAVAILABLE = 421  # shutting down, timed out, too many errors
    MAILBOX_BUSY = 450
    LOCAL_ERROR = 451  # delivery failed for a reason worth retrying (disk full, I/O error)
    INSUFFICIENT_STORAGE = 452  # too many recipients; the disk is full (4.3.1)
    SYNTAX_ERROR = 500  # command unrecognised, line too long
    PARAMETER_SYNTAX = 501
    NOT_IMPLEMENTED = 502
    BAD_SEQUENCE = 503
    PARAMETER_NOT_IMPLEMENTED = 504
    AUTH_REQUIRED = 530  # 5.7.0: submission needs a login (RFC 4954)
    AUTH_FAILED = 535  # 5.7.8: credentials invalid
    ENCRYPTION_REQUIRED = 538  # 5.7.11: AUTH only under TLS
    MAILBOX_UNAVAILABLE = 550  # no such user, relaying denied
    USER_NOT_LOCAL = 551
    EXCEEDED_STORAGE = 552  # message too big
    MAILBOX_NAME_NOT_ALLOWED = 553
    TRANSACTION_FAILED = 554
    PARAMETERS_NOT_RECOGNIZED = 555

    @property
    def positive(self) -> bool:
        return self < 400


def is_positive(code: int) -> bool:
    """2xx and 3xx: the command was accepted."""
    return code < 400


def is_transient(code: int) -> bool:
    """4xx: try again later."""
    return 400 <= code < 500


@dataclass(frozen=True, slots=True)
class SMTPReply:
    """One reply: a code, an enhanced status code ("2.1.0", or "" for none) and one or more lines of text."""

    code: int
    status: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    def format(self) -> bytes:
        """The reply on the wire: ``250-first``, ``250-...``, ``250 last``, each ending in CRLF. The enhanced
        status code prefixes every line, as RFC 2034 shows."""
        prefix = f"{self.status} " if self.status else ""
        last = len(self.lines) - 1
        out = [f"{self.code}{' ' if i == last else '-'}{prefix}{line}\r\n" for i, line in enumerate(self.lines)]
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        return f"{self.code} {self.status + ' ' if self.status else ''}{self.text}"


def reply(code: int, status: str, *lines: str) -> SMTPReply:
    return SMTPReply(int(code), status, lines or ("",))


class BadReply(RemoteProtocolError):
    """The server's reply is not SMTP."""


def parse_reply(lines: list[bytes]) -> SMTPReply:
    """A reply from its lines as received (CRLF stripped). Raises BadReply unless every line has the same
    3-digit code and all but the last continue with ``-``."""
    if not lines:
        raise BadReply("empty reply")
    code: int | None = None
    texts: list[str] = []
    for i, raw in enumerate(lines):
        line = raw.decode("utf-8", "replace")
        if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
            raise BadReply(f"not an SMTP reply: {line[:80]!r}")
        if code is None:
            code = int(line[:3])
        elif int(line[:3]) != code:
            raise BadReply(f"reply lines disagree on the code: {line[:80]!r}")
        last = i == len(lines) - 1
        if (len(line) > 3 and line[3] == "-") == last:
            raise BadReply(f"bad continuation in reply line: {line[:80]!r}")
        texts.append(line[4:])
    assert code is not None
    status = ""
    first = texts[0].split(" ", 1)
    if _looks_enhanced(first[0], code):
        status = first[0]
        texts = [t.split(" ", 1)[1] if _looks_enhanced(t.split(" ", 1)[0], code) and " " in t else t for t in texts]
        if texts[0] == status:
            texts[0] = ""
    return SMTPReply(code, status, tuple(texts))


def reply_complete(line: bytes) -> bool:
    """Whether a reply line (CRLF stripped) is the last of its reply."""
    return len(line) < 4 or line[3:4] != b"-"


def _looks_enhanced(word: str, code: int) -> bool:
    parts = word.split(".")
    return len(parts) == 3 and all(p.isdigit() for p in parts) and parts[0] == str(code)[0]


MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100


class ReplyReader:
    """A client's reply parser, sans-IO: fed bytes as they arrive, it hands back each reply once whole. The blocking
    client (``sockhop send``) and the queue runner's client protocol both read replies through it."""

    def __init__(self, on_line=None) -> None:
        self.buffer = b""
        self.lines: list[bytes] = []
        self.on_line = on_line  # each line as received (a transcript, -v)

    def feed(self, data: bytes) -> list[SMTPReply]:
        """The replies ``data`` completes (possibly none). Raises BadReply for what is not SMTP."""
        self.buffer += data
        replies = []
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > MAX_REPLY_LINE:
                    raise BadReply("reply line too long")
                return replies
            line, self.buffer = self.buffer[:end].rstrip(b"\r"), self.buffer[end + 1 :]
            self.lines.append(line)
            if self.on_line is not None:
                self.on_line(line)
            if len(self.lines) > MAX_REPLY_LINES:
                raise BadReply("reply too long")
            if reply_complete(line):
                lines, self.lines = self.lines, []
                replies.append(parse_reply(lines))
