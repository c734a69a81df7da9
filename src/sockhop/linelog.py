"""Line logs a service writes beside its work -- DNS's query log, mail's message log: one line per event, time
stamped by the logging machinery (protocols never read a clock), to a file appended to with O_APPEND and flushed
line by line (so the workers of a prefork server share one file without tearing lines), or to standard output. A
file rotated away (logrotate) is followed: the next line opens a new one under the name."""

from __future__ import annotations

import logging
import logging.handlers
import sys

from sockhop.errors import SockhopError


class LineLogError(SockhopError):
    """A log file cannot be opened."""


def open_line_log(target: str, name: str, what: str) -> logging.Logger:
    """The logger ``name`` writing to ``target`` (a file, or ``-`` for standard output); ``what`` names the log in
    the one-line error if the file cannot be opened (``the query log``)."""
    if target == "-":
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
    else:
        try:
            # Reopened when logrotate moves the file away (a stat per line), as the access log follows rotation.
            handler = logging.handlers.WatchedFileHandler(target, encoding="utf-8")
        except OSError as exc:
            raise LineLogError(f"cannot open {what} {target}: {exc.strerror}") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger
