"""Apache's Combined Log Format, the format every log analyser reads::

    127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET /a.gif HTTP/1.1" 200 2326 "http://x/" "Mozilla/4.08"

Kept off the hot path: the protocol collects the lines of one batch of pipelined requests and hands them over in
one ``write`` -- a single append-mode ``os.write``, no Python-level buffering, no lock. O_APPEND makes each write
land whole at the end of the file even when fork or prefork workers share it.
"""

from __future__ import annotations

import os
import time

from sockhop.errors import SockhopError


class AccessLogError(SockhopError):
    """Cannot open the access log."""


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
    return (
        f'{host} - - [{log_time(when)}] "{_quoted(request_line)}" {status} {size or "-"} '
        f'"{_quoted(referer or "-")}" "{_quoted(agent or "-")}"\n'
    )


class AccessLog:
    """Where the lines go: a file opened for appending, or standard output for ``-``."""

    def __init__(self, target: str) -> None:
        self.target = target
        if target == "-":
            self.fd = os.dup(1)
        else:
            try:
                self.fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise AccessLogError(f"cannot open the access log {target}: {exc.strerror}") from None

    def write(self, lines: list[str]) -> None:
        data = "".join(lines).encode("utf-8", "backslashreplace")
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
        except OSError:
            pass  # a full disk must not take the web server down with it

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
