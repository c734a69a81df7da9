"""Line logs a service writes beside its work -- DNS's query log, mail's message log: one line per event, time
stamped by the logging machinery (protocols never read a clock), to a file appended to with O_APPEND and flushed
line by line (so the workers of a prefork server share one file without tearing lines), or to standard output. A
file rotated away (logrotate) is followed: the next line opens a new one under the name.

Every line log (the web's access log too) also goes to the *activity feed* when the face opened one (the
dashboard's live tail): a Unix datagram socket pair made before any worker is forked, so every process writes to
the same reader. A line is one nonblocking send; when nobody reads fast enough the line is dropped, never waited
for -- the tail is a view, the files are the record.
"""

from __future__ import annotations

import logging
import logging.handlers
import socket
import sys

from sockhop.errors import SockhopError

#: The feed's writing end, set by the face (``open_activity_feed``); None: no feed, nothing is sent.
_feed: socket.socket | None = None
#: A datagram carries at most this much of a batch of lines.
FEED_DATAGRAM = 32 * 1024


class LineLogError(SockhopError):
    """A log file cannot be opened."""


def open_activity_feed() -> socket.socket:
    """Make the activity feed; the reading end (nonblocking). Every line log written from now on, in this process
    and in those forked from it, is sent there as ``KIND LINE`` (``web``, ``dns``, ``mail``)."""
    global _feed
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.setblocking(False)
    writer.setblocking(False)
    if _feed is not None:
        _feed.close()
    _feed = writer
    return reader


def close_activity_feed() -> None:
    global _feed
    if _feed is not None:
        _feed.close()
        _feed = None


def activity(kind: str, lines: str) -> None:
    """Send ``lines`` (one or more, newline-terminated or not) to the feed, if there is one; never blocks."""
    feed = _feed
    if feed is None:
        return
    try:
        feed.send(f"{kind} {lines}".encode("utf-8", "backslashreplace")[:FEED_DATAGRAM])
    except OSError:
        pass  # nobody reads, or not fast enough: the tail misses a line, the log file does not


class _ActivityHandler(logging.Handler):
    def __init__(self, kind: str, formatter: logging.Formatter) -> None:
        super().__init__()
        self.kind = kind
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        if _feed is not None:
            try:
                activity(self.kind, self.format(record))
            except Exception:  # noqa: BLE001 -- a line that cannot be formatted is the file handler's to report
                pass


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
    formatter = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    handler.setFormatter(formatter)
    logger = logging.getLogger(name)
    kind = name.split(".")[1] if name.count(".") >= 1 else name  # sockhop.dns.queries -> dns
    logger.handlers[:] = [handler, _ActivityHandler(kind, formatter)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger
