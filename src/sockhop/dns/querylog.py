"""The query log (``--query-log FILE|-``): one line per answered query, off by default.

The protocols only hand over what happened; the time stamp is added by the logging machinery (sockhop.linelog), so
the protocols never read a clock.
"""

from __future__ import annotations

from sockhop.dns.server import QueryLog
from sockhop.engine.shared import peer_name
from sockhop.linelog import open_line_log


def open_query_log(target: str) -> QueryLog:
    """A query log writing to ``target`` (a file, appended to, or ``-`` for standard output)."""
    info = open_line_log(target, "sockhop.dns.queries", "the query log").info

    def log(peer: object, transport: str, summary: str) -> None:
        info("%s %s %s", peer_name(peer), transport, summary)

    return log
