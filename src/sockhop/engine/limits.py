"""The knobs every model honours the same way."""

from __future__ import annotations

import os
from dataclasses import dataclass


def default_workers() -> int:
    """One per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Limits:
    """Engine limits.

    idle_timeout: seconds a connection may stay silent (nothing received, nothing sent) before it is closed.
    max_connections: connections served at once; over it, new clients get the listener's ``busy`` bytes and close.
    grace: seconds in-flight conversations get to finish after a stop request before they are closed.
    write_buffer: bytes of unsent output per connection after which the event loop stops reading from it
        (backpressure: a client that does not read cannot grow the server's memory).
    workers: threads for ``pool``, processes for ``prefork``.
    deferred_threads: threads per event loop for ``Reply.then`` work (blocking calls); it bounds how many wait at
        once. A ``Handoff`` (mail's group commit) takes none of them: its doer has threads of its own.
    """

    idle_timeout: float = 60.0
    max_connections: int = 1024
    grace: float = 10.0
    write_buffer: int = 256 * 1024
    workers: int = 0
    deferred_threads: int = 8

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else default_workers()
