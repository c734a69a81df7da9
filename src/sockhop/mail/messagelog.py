"""The message log (``--message-log FILE|-``): one line per message accepted, as a development mail catcher shows
them -- when, from whom, to whom, how big, under which queue id."""

from __future__ import annotations

from collections.abc import Callable

from sockhop.engine.protocol import Address
from sockhop.linelog import open_line_log
from sockhop.net.addresses import format_address


def open_message_log(target: str) -> Callable[[Address, str, list[str], int, str], None]:
    """A message log writing to ``target`` (a file, appended to, or ``-`` for standard output)."""
    info = open_line_log(target, "sockhop.mail.messages", "the message log").info

    def log(peer: Address, sender: str, recipients: list[str], size: int, queue_id: str) -> None:
        where = format_address(peer) if peer else "?"
        info("%s from=<%s> to=%s size=%d id=%s", where, sender, ",".join(f"<{r}>" for r in recipients), size, queue_id)

    return log
