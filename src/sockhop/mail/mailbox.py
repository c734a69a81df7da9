"""``sockhop mailbox MAILDIR``: the messages a Maildir holds, one line each, or one of them whole."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sockhop.errors import SockhopError
from sockhop.options import positive_int


class MailboxError(SockhopError):
    """The mailbox cannot be read that way."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("maildir", metavar="MAILDIR")
    parser.add_argument("--show", type=positive_int, metavar="N", help="print message N of the listing")


def run(args: argparse.Namespace) -> int:
    from .maildir import list_messages

    if not Path(args.maildir).is_dir():
        raise MailboxError(f"no such folder: {args.maildir}")
    messages = list_messages(args.maildir)
    if args.show is not None:
        if args.show > len(messages):
            raise MailboxError(f"there is no message {args.show}: the mailbox holds {len(messages)}")
        sys.stdout.buffer.write(messages[args.show - 1].path.read_bytes())
        sys.stdout.flush()
        return 0
    if not messages:
        print("no messages")
        return 0
    many = len({m.mailbox for m in messages}) > 1 or messages[0].mailbox != "."
    for i, m in enumerate(messages, 1):
        box = f"{m.mailbox:<12.12} " if many else ""
        print(f"{i:>4}  {box}{m.date[:31]:<31}  {m.sender[:30]:<30}  {m.subject[:60]}")
    return 0
