"""Calling back later without a thread waiting per caller: one timer thread per process, a heap of deadlines.

A failed login is answered only after a delay. Sleeping in ``Reply.then`` would hold one of the engine's deferred
threads per guessing client, and the protocol's alarm ends the connection; so the delay is a ``Handoff`` whose doer
is this timer: the event loop goes on serving everyone else, and the session resumes when the time is up. (The
engine's own timers, when they exist, are the place for this; until then it is kept here, in one small module.)
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable


class Later:
    """``after(seconds, callback)``: the callback runs on the timer thread (started on first use; after a fork, the
    child starts its own)."""

    def __init__(self) -> None:
        self._forked()
        _timers.add(self)

    def _forked(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def after(self, seconds: float, callback: Callable[[], None]) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="later", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._order), callback))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except Exception:  # noqa: BLE001 -- one callback's failure must not stop the others'
                import logging

                logging.getLogger("sockhop.mail").exception("in a delayed callback")


_timers: weakref.WeakSet[Later] = weakref.WeakSet()
os.register_at_fork(after_in_child=lambda: [timer._forked() for timer in _timers])

LATER = Later()
