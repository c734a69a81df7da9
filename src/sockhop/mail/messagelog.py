"""The message log (``--message-log FILE|-``): one line per message accepted, as a development mail catcher shows
them -- when, from whom, to whom, how big, under which queue id. Written as the query log is (dns/querylog.py)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from sockhop.engine.protocol import Address
from sockhop.errors import SockhopError
from sockhop.net.addresses import format_address


class MessageLogError(SockhopError):
    """The message log cannot be opened."""


def open_message_log(target: str) -> Callable[[Address, str, list[str], int, str], None]:
    """A message log writing to ``target`` (a file, appended to, or ``-`` for standard output)."""
    if target == "-":
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
    else:
        try:
            handler = logging.FileHandler(target, encoding="utf-8")
        except OSError as exc:
            raise MessageLogError(f"cannot open the message log {target}: {exc.strerror}") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    logger = logging.getLogger("sockhop.mail.messages")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def log(peer: Address, sender: str, recipients: list[str], size: int, queue_id: str) -> None:
        where = format_address(peer) if peer else "?"
        logger.info("%s from=<%s> to=%s size=%d id=%s", where, sender, ",".join(f"<{r}>" for r in recipients),
                    size, queue_id)  # fmt: skip

    return log
