"""The query log (``--query-log FILE|-``): one line per answered query, off by default.

The protocols only hand over what happened; the time stamp is added here, by the logging machinery, so the
protocols never read a clock. Lines are appended with O_APPEND and flushed one by one, so the workers of a prefork
server can share one file without tearing each other's lines.
"""

from __future__ import annotations

import logging
import sys

from sockhop.dns.server import QueryLog
from sockhop.engine.shared import peer_name
from sockhop.errors import SockhopError


class QueryLogError(SockhopError):
    """The query log cannot be opened."""


def open_query_log(target: str) -> QueryLog:
    """A query log writing to ``target`` (a file, appended to, or ``-`` for standard output)."""
    if target == "-":
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
    else:
        try:
            handler = logging.FileHandler(target, encoding="utf-8")
        except OSError as exc:
            raise QueryLogError(f"cannot open the query log {target}: {exc.strerror}") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    logger = logging.getLogger("sockhop.dns.queries")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    info = logger.info

    def log(peer: object, transport: str, summary: str) -> None:
        info("%s %s %s", peer_name(peer), transport, summary)

    return log
