"""``sockhop queue --spool DIR``: the mail queue as ``mailq`` shows it, and ``postsuper``'s and ``postqueue``'s
verbs: --delete, --hold, --release (an id or ALL) and --flush."""

from __future__ import annotations

import argparse
import sys
import time

from sockhop.errors import SockhopError


class QueueError(SockhopError):
    """The queue cannot be handled that way."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spool", required=True, metavar="DIR", help="the mail server's --spool")
    verbs = parser.add_mutually_exclusive_group()
    verbs.add_argument("--delete", metavar="ID", help="remove a message (or ALL) from the queue, undelivered")
    verbs.add_argument("--hold", metavar="ID", help="keep a message (or ALL) from delivery until released")
    verbs.add_argument("--release", metavar="ID", help="let a held message (or ALL) be delivered again")
    verbs.add_argument(
        "--flush", action="store_true", help="try every deferred message now (the running server looks each second)"
    )


def run(args: argparse.Namespace) -> int:
    from .spool import Spool, SpoolError, iter_lines

    try:
        spool = Spool(args.spool, create=False)
        if args.flush:
            count = spool.flush()
            print(f"sockhop: {count} deferred message(s) due now", file=sys.stderr)
            return 0
        for verb in ("delete", "hold", "release"):
            target = getattr(args, verb)
            if target is not None:
                changed = [queue_id for queue_id in spool.select(target) if getattr(spool, verb)(queue_id) is not False]
                print(f"sockhop: {verb}: {len(changed)} message(s)", file=sys.stderr)
                return 0
        for line in iter_lines(spool.entries(), time.time()):
            print(line)
    except SpoolError as exc:
        raise QueueError(str(exc)) from None
    except OSError as exc:
        raise QueueError(f"{args.spool}: {exc.strerror}") from None
    return 0
