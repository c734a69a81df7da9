"""The trace headers a delivering server adds at the top of a message (RFC 5321 section 4.4): Return-Path with
the envelope sender, and a Received: line saying who handed the message over, to whom, when and how.

Kept apart from the protocol because it reads the clock, which a sans-IO protocol never does.
"""

from __future__ import annotations

from email.utils import formatdate

from .protocol import Envelope, Session


def received_with(session: Session, envelope: Envelope) -> str:
    """The ``with`` clause's protocol name (RFC 3848, RFC 6531)."""
    if not session.esmtp:
        return "SMTP"
    name = "UTF8SMTP" if envelope.smtputf8 else "ESMTP"
    name = name + "S" if session.tls else name
    return name + "A" if session.user is not None else name


def peer_ip(session: Session) -> str:
    try:
        host = session.peer[0]
    except (TypeError, IndexError):
        return "unknown"
    return f"IPv6:{host}" if ":" in host else host


def trace_headers(session: Session, envelope: Envelope, *, hostname: str, queue_id: str, now: float) -> bytes:
    """``Return-Path:`` and ``Received:`` as the first lines of the stored message, with LF line ends."""
    ip = peer_ip(session)
    lines = [
        f"Return-Path: <{envelope.sender}>",
        f"Received: from {session.helo or 'unknown'} ([{ip}])",
        f"\tby {hostname} (sockhop) with {received_with(session, envelope)} id {queue_id}",
    ]
    if len(envelope.recipients) == 1:
        lines.append(f"\tfor <{envelope.recipients[0]}>; {formatdate(now, localtime=True)}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{formatdate(now, localtime=True)}")
    return ("\n".join(lines) + "\n").encode("utf-8")
