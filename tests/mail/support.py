"""Starting a sockhop mail server for a test, and reading what it delivered."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

from sockhop.engine import MODELS

ALL_MODELS = list(MODELS)
DOMAIN = "example.test"


def serve_mail(sockhop_server, maildir: Path, model: str = "eventloop", *extra: str, **kwargs):
    args = ["serve", "mail", str(maildir), "--domain", DOMAIN, "--hostname", "mx.example.test",
            "--listen", "127.0.0.1:0", "--model", model, *extra]  # fmt: skip
    if model in ("pool", "prefork"):
        args += ["--workers", "2"]
    return sockhop_server(args, **kwargs)


def delivered(maildir: Path, mailbox: str | None = None) -> list[email.message.EmailMessage]:
    folder = maildir / mailbox / "new" if mailbox else maildir / "new"
    if not folder.is_dir():
        return []
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime)
    ]
