"""Bounces: the RFC 3464 delivery status notification a queue runner sends the envelope sender when a recipient
failed for good (a 5xx) or its time in the queue ran out.

Built with the email package: ``multipart/report; report-type=delivery-status`` with three parts -- words for a
person, the ``message/delivery-status`` fields a program reads (one block for the message, one per recipient), and
the original message's headers (``text/rfc822-headers``: the body stays with its sender). It goes from the null
sender (``MAIL FROM:<>``), so a bounce that fails is never bounced again (RFC 5321 6.1).
"""

from __future__ import annotations

import email.policy
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.utils import format_datetime, formatdate, make_msgid


@dataclass(frozen=True)
class Failure:
    """One recipient that will not get the message: its address, the RFC 3463 status, what the remote MTA said
    (empty when none was reached) and what happened, in words."""

    recipient: str
    status: str  # "5.1.1"
    diagnostic: str = ""  # "550 5.1.1 no such user" -- the remote server's reply
    remote: str = ""  # the MTA that said it ("mx.example.test")
    reason: str = ""  # when no server answered: "connection refused", "the queue lifetime ran out"


def status_of(code: int, status: str) -> str:
    """An enhanced status for a reply: its own when it gave one, else the RFC 3463 catch-all of its class."""
    return status or f"{str(code)[0]}.0.0"


def make_bounce(hostname: str, sender: str, arrival: float, content: bytes, failures: Iterable[Failure]) -> bytes:
    """The DSN to ``sender`` for ``failures``, as bytes ready to queue (LF line ends, as the spool keeps them)."""
    failures = list(failures)
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    msg["To"] = sender
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=hostname)
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834: no autoresponder answers it
    lines = [f"This is the mail system at host {hostname}.", "",
             "Your message could not be delivered to one or more recipients:", ""]  # fmt: skip
    for f in failures:
        lines.append(f"<{f.recipient}>: " + (f"host {f.remote} said: {f.diagnostic}" if f.diagnostic else f.reason))
    msg.set_content("\n".join(lines) + "\n")
    msg.make_mixed()
    msg.replace_header("Content-Type", "multipart/report; report-type=delivery-status")
    report = Message()
    report.set_type("message/delivery-status")
    del report["MIME-Version"]
    head = Message()
    head["Reporting-MTA"] = f"dns; {hostname}"
    head["Arrival-Date"] = format_datetime(datetime.fromtimestamp(arrival, UTC))
    blocks = [head]
    for f in failures:
        block = Message()
        block["Final-Recipient"] = f"rfc822; {f.recipient}"
        block["Action"] = "failed"
        block["Status"] = f.status
        if f.remote:
            block["Remote-MTA"] = f"dns; {f.remote}"
        if f.diagnostic:
            block["Diagnostic-Code"] = f"smtp; {f.diagnostic}"
        blocks.append(block)
    report.set_payload(blocks)
    msg.attach(report)
    headers = Message()
    headers.set_type("text/rfc822-headers")
    del headers["MIME-Version"]
    end = content.find(b"\n\n")
    headers.set_payload(content[: end + 1 if end >= 0 else len(content)].decode("utf-8", "replace"))
    msg.attach(headers)
    return msg.as_bytes().replace(b"\r\n", b"\n")
