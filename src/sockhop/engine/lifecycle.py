"""Signals, graceful stop and waking sleepers -- without polling a flag every half second.

Two pipes carry everything:

* the *stop flag*: written once when a stop is requested and never drained, so it stays readable. Every loop and
  every blocking connection driver polls it beside its sockets, threads and forked children alike (a child
  inherits it), so one write reaches them all at once.
* the *wakeup pipe*: signal handlers only record the signal and write a byte here (as gunicorn's arbiter does);
  the main loop wakes, drains it and dispatches ``handle_<signal>``.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger("sockhop.engine")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """A broadcast, level-triggered stop request: readable forever once set."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self.requests = 0

    def fileno(self) -> int:
        return self._r

    def request(self) -> None:
        self.requests += 1
        if self.requests == 1:
            try:
                os.write(self._w, b"s")
            except BlockingIOError:
                pass

    @property
    def is_set(self) -> bool:
        return self.requests > 0

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


class Wakeup:
    """The self-pipe the main loop polls: signals and other threads write, the loop drains."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def fileno(self) -> int:
        return self._r

    @property
    def write_fd(self) -> int:
        return self._w

    def poke(self) -> None:
        try:
            os.write(self._w, b"w")
        except OSError:
            pass  # full (already awake) or closed (shutting down)

    def drain(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


class Signals:
    """Installs handlers that only record; the owner drains ``pending`` from its loop.

    SIGINT/SIGTERM also set the stop flag at once, so a connection driver running on the main thread (the
    iterative model) sees the request without waiting for the loop.
    """

    def __init__(self, stop: StopFlag, wakeup: Wakeup, extra: tuple[signal.Signals, ...] = ()) -> None:
        self.stop = stop
        self.wakeup = wakeup
        self.pending: list[int] = []
        self._previous: dict[int, object] = {}
        self._previous_wakeup = -1
        self._signals = (*STOP_SIGNALS, *extra)

    def _record(self, signum: int, frame: object) -> None:
        self.pending.append(signum)
        if signum in STOP_SIGNALS:
            self.stop.request()
        self.wakeup.poke()

    def install(self) -> None:
        try:
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._record)
            # The kernel may deliver a signal to any thread (thread and pool models have many); then only that
            # thread's system call is interrupted and the main loop would sleep on. With a wakeup fd the C-level
            # handler writes to the pipe the main loop polls, whichever thread caught the signal.
            self._previous_wakeup = signal.set_wakeup_fd(self.wakeup.write_fd, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: whoever embeds the engine calls stop() instead
            self._previous.clear()

    def watch(self, sig: signal.Signals) -> None:
        """Record one more signal (a prefork worker takes SIGHUP alone, leaving stop signals to its master)."""
        self._previous[sig] = signal.signal(sig, self._record)

    def restore(self) -> None:
        if self._previous:
            signal.set_wakeup_fd(self._previous_wakeup)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def take(self) -> list[int]:
        taken, self.pending = self.pending, []
        return taken


def reset_after_fork() -> None:
    """In a forked child: Ctrl-C (sent to the whole process group) is left to the parent, which broadcasts the
    stop through the stop flag the child already polls; SIGTERM aimed at the child ends it at once; nothing
    writes to the parent's wakeup pipe any more."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def reap(on_exit: Callable[[int, int], None]) -> None:
    """Collect every child that has ended (``waitpid(-1, WNOHANG)`` until none is left), reporting each."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise
        if pid == 0:
            return
        on_exit(pid, status)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class Deadline:
    """Seconds left until a moment on the monotonic clock."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.at
