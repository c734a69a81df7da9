"""Apache's Combined Log Format, the format every log analyser reads::

    127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET /a.gif HTTP/1.1" 200 2326 "http://x/" "Mozilla/4.08"

Kept off the hot path: a busy server writes about once a second, not once a request. The first line of a second goes
out at once (so a lone request shows up in the log as it is answered); later lines of the same second wait in memory
until the first line of a later second, 32 KiB of them, or the end of any connection (the server's stop included)
-- nginx's ``access_log ... buffer= flush=`` in spirit. Each flush is one append-mode ``os.write`` of whole lines:
O_APPEND makes it land whole at the end of the file even when fork or prefork workers share it.
"""

from __future__ import annotations

import os
import time
from collections import deque

from sockhop.errors import SockhopError
from sockhop.linelog import activity


class AccessLogError(SockhopError):
    """Cannot open the access log."""


#: Lines pending past this many characters are written at once.
FLUSH_BYTES = 32 * 1024

NO_LINE = ("", "", -1, "", "")

_stamp_cache: tuple[int, str] = (-1, "")


def log_time(seconds: float) -> str:
    """``10/Oct/2000:13:55:36 +0000`` (UTC), cached for the second it names."""
    global _stamp_cache
    whole = int(seconds)
    if _stamp_cache[0] != whole:
        _stamp_cache = (whole, time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(whole)))
    return _stamp_cache[1]


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"') if ('"' in text or "\\" in text) else text


def format_entry(
    host: str, when: float, request_line: str, status: int, size: int, referer: str | None, agent: str | None
) -> str:
    """One line of the Combined Log Format (with its newline). ``size`` 0 is written ``-``, as Apache's %b."""
    request, tail = entry_parts(request_line, referer, agent)
    return f"{host} - - [{log_time(when)}] {request} {status} {size or '-'} {tail}"


def entry_parts(request_line: str, referer: str | None, agent: str | None) -> tuple[str, str]:
    """The parts of a line that depend on the request alone: the quoted request line, and the quoted referer and
    agent with the newline -- computed once for a request the server has seen before."""
    return f'"{_quoted(request_line)}"', f'"{_quoted(referer or "-")}" "{_quoted(agent or "-")}"\n'


class AccessLog:
    """Where the lines go: a file opened for appending, or standard output for ``-``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.pending: deque[str] = deque()
        self.size = 0  # characters pending
        self.second = -1  # the second of the last line that went out at once
        self.stamp = ""  # log_time(second)
        self.last: tuple[str, str, int, str, str] = NO_LINE  # host, request, size, tail and the line they made
        self.file: tuple[int, int] = (0, 0)  # the open file's (device, inode): rotated away when the path's differ
        if target == "-":
            self.fd = os.dup(1)
        else:
            self.fd = self._open()

    def _open(self) -> int:
        try:
            fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise AccessLogError(f"cannot open the access log {self.target}: {exc.strerror}") from None
        info = os.fstat(fd)
        self.file = (info.st_dev, info.st_ino)
        return fd

    def follow_rotation(self) -> None:
        """logrotate moved the file away (or deleted it): open a new one under the name. Looked at once a second,
        when the first line of a second is written (at once after SIGUSR1), so rotation needs no signal and reaches
        every worker process (nginx needs SIGUSR1 for this, or copytruncate)."""
        if self.target == "-":
            return
        try:
            info = os.stat(self.target)
            if (info.st_dev, info.st_ino) == self.file:
                return
        except OSError:
            pass  # gone: create it again
        try:
            fd = self._open()
        except AccessLogError:
            return  # the old descriptor keeps the lines
        old, self.fd = self.fd, fd
        try:
            os.close(old)
        except OSError:
            pass

    def reopen_soon(self) -> None:
        """SIGUSR1, nginx's "reopen the logs": the next line looks at once whether the file under the name is still
        the one open (instead of at the next second's first line), so a line written right after logrotate's
        postrotate ``kill -USR1`` lands in the new file. Only an attribute is set: safe in a signal handler, with
        threads writing."""
        self.second = -1

    def add(self, line: str, when: float) -> None:
        """Log one line of a request answered at ``when`` (the server's clock)."""
        second = int(when)
        if second != self.second:
            self._new_second(second)  # what waited goes to the file it belongs to; this line to the one now named
            self.pending.append(line)
            self.flush()
            return
        self.pending.append(line)
        self.size += len(line)
        if self.size >= FLUSH_BYTES:
            self.flush()

    def _new_second(self, second: int) -> None:
        self.flush()  # what belongs to the file being rotated away
        self.follow_rotation()
        self.second = second
        self.stamp = log_time(second)
        self.last = NO_LINE

    def add_parts(self, host: str, when: float, request: str, size: int, tail: str) -> None:
        """``add(format_entry(...))`` for a request whose ``entry_parts`` are known: one call on the hot path, the
        time stamp formatted once a second."""
        second = int(when)
        if second != self.second:  # the first line of a second: written at once, with whatever waited
            self._new_second(second)
            self.pending.append(f"{host} - - [{self.stamp}] {request} {size or '-'} {tail}")
            self.flush()
            return
        last = self.last  # the same request from the same host in the same second (a busy client): the same line
        if last[1] is request and last[3] is tail and last[2] == size and last[0] == host:
            line = last[4]
        else:
            line = f"{host} - - [{self.stamp}] {request} {size or '-'} {tail}"
            self.last = (host, request, size, tail, line)
        self.pending.append(line)
        self.size += len(line)
        if self.size >= FLUSH_BYTES:
            self.flush()

    def write(self, lines: list[str], when: float) -> None:
        """Log several lines at once (a batch of pipelined requests)."""
        for line in lines:
            self.add(line, when)

    def flush(self) -> None:
        """Write what is pending. A deque, so threads (the thread and pool models) may add while one flushes."""
        pending = self.pending
        count = len(pending)
        if not count:
            return
        self.size = 0
        text = "".join([pending.popleft() for _ in range(count)])
        activity("web", text)  # the dashboard's live tail, if the face opened one
        data = text.encode("utf-8", "backslashreplace")
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
        except OSError:
            pass  # a full disk must not take the web server down with it

    def close(self) -> None:
        self.flush()
        try:
            os.close(self.fd)
        except OSError:
            pass
