"""What the dashboard streams (Server-Sent Events): new mail, the counters, the activity tail.

One :class:`Hub` per dashboard holds the events as numbered, ready-to-send SSE frames in a short ring; each open
stream keeps how far it has read and is woken when there is more (``handle.wake()``, safe from any thread), so a
stream never waits on another and a slow one only misses what fell out of the ring. A background :class:`Watch`
job does the looking, on the engine's timers: the activity feed every quarter second, the Maildir's folders every
second while someone watches (one ``stat`` per folder when nothing arrived), the counters every two seconds (their
history is kept whether or not anyone watches).
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Callable

from sockhop.dashboard.inbox import Inbox
from sockhop.dashboard.stats import Sampler
from sockhop.engine.protocol import NOTHING, Job, Reply

RING = 256  # events kept for streams that fell behind
LINES = 200  # activity lines kept for a page that opens now
TICK = 0.25  # seconds between looks at the activity feed
INBOX_TICKS = 4  # the Maildir every fourth tick (a second)
STATS_TICKS = 8  # the counters every eighth (two seconds)
MOST_DATAGRAMS = 64  # activity datagrams taken per tick at most (more wait in the socket, then are dropped)
SHOWN = 100  # activity lines published per tick at most


def frame(event: str, data: str) -> bytes:
    """One SSE event: ``event:`` and the data, a ``data:`` field per line (RFC: the client joins them with \\n)."""
    return (f"event: {event}\n" + "".join(f"data: {line}\n" for line in data.split("\n")) + "\n").encode()


class Hub:
    """The events one dashboard streams, and who is listening."""

    def __init__(
        self,
        inbox: Inbox,
        exposition: Callable[[], bytes] | None,
        services: dict[str, list[str]],
        model: str,
        feed: socket.socket | None = None,
    ) -> None:
        self.inbox = inbox
        self.exposition = exposition
        self.services = services
        self.model = model
        self.feed = feed
        self.sampler = Sampler()
        self.events: deque[tuple[int, bytes]] = deque(maxlen=RING)
        self.seq = 0
        self.lines: deque[str] = deque(maxlen=LINES)
        self.recent: deque[bytes] = deque(maxlen=4)  # datagrams not yet made into lines (nobody was watching)
        self.total = len(inbox.entries)
        self.subscribers: set = set()  # the handles of open streams
        self.lock = threading.Lock()  # streams under the thread and pool models read the ring from their threads

    # -- streams -----------------------------------------------------------------------------------------------
    def subscribe(self, handle) -> int:
        """Wake ``handle`` when there is more; the cursor to read from (what is in the ring now is not news)."""
        with self.lock:
            self.subscribers.add(handle)
            return self.seq

    def unsubscribe(self, handle) -> None:
        with self.lock:
            self.subscribers.discard(handle)

    def since(self, cursor: int) -> tuple[bytes, int]:
        """The frames after ``cursor``, and the new cursor."""
        with self.lock:
            return b"".join(data for seq, data in self.events if seq > cursor), self.seq

    def publish(self, event: str, data: str) -> None:
        with self.lock:
            self.seq += 1
            self.events.append((self.seq, frame(event, data)))
            waiting = list(self.subscribers)
        for handle in waiting:
            handle.wake()

    # -- what there is to say ----------------------------------------------------------------------------------
    def services_json(self) -> dict:
        return self.sampler.to_json(self.services, self.model)

    def snapshot(self) -> bytes:
        """What a stream opening now is sent first: the counters and the recent activity."""
        first = frame("stats", json.dumps(self.services_json()))
        lines = self.recent_lines()
        if lines:
            first += frame("log", "\n".join(lines))
        return first

    # -- looking ------------------------------------------------------------------------------------------------
    def read_feed(self) -> None:
        """Take what the line logs sent to the activity feed (sockhop.linelog). Nobody watching: the last few
        datagrams are kept as they came (lines are made only when someone asks); else the lines are published as
        one event -- at most ``SHOWN`` a tick: a busy server logs faster than anyone reads, and its files have it
        all."""
        if self.feed is None:
            return
        raw: list[bytes] = []
        while len(raw) < MOST_DATAGRAMS:
            try:
                raw.append(self.feed.recv(65536))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                return
        if not raw:
            return
        if not self.subscribers:
            self.recent.extend(raw)
            return
        self.recent_lines()  # what waited comes first
        taken = _lines(raw)
        self.lines.extend(taken[-LINES:])
        shown = taken[-SHOWN:]
        if len(taken) > len(shown):
            shown.insert(0, f"... {len(taken) - len(shown)} lines more than the tail shows (the log files have them)")
        self.publish("log", "\n".join(shown))

    def recent_lines(self) -> list[str]:
        """The last ``LINES`` lines of activity."""
        if self.recent:
            self.lines.extend(_lines(list(self.recent))[-LINES:])
            self.recent.clear()
        return list(self.lines)

    def check_inbox(self) -> None:
        arrived = self.inbox.refresh()
        total = len(self.inbox.entries)
        if arrived or total != self.total:
            self.total = total
            self.publish("mail", json.dumps({"total": total, "new": [s.to_json() for s in arrived[-20:]]}))

    def sample(self) -> None:
        if self.exposition is None:
            return
        self.sampler.sample(self.exposition())
        if self.subscribers:
            self.publish("stats", json.dumps(self.services_json()))


def _lines(datagrams: list[bytes]) -> list[str]:
    """``KIND LINE`` for every line of the datagrams (each is ``KIND`` and one or more lines)."""
    found: list[str] = []
    for datagram in datagrams:
        kind, _, text = datagram.decode("utf-8", "replace").partition(" ")
        found += [f"{kind} {line}" for line in text.splitlines() if line.strip()]
    return found


class Watch(Job):
    """The hub's looking, on the engine's timers (a background job of the dashboard's server)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.ticks = 0
        self.stopping = False

    def attach(self, handle) -> None:
        self.handle = handle

    def started(self) -> Reply:
        self.hub.sample()
        self.handle.call_later(TICK)
        return NOTHING

    def woken(self) -> Reply:
        if self.stopping:
            return Reply(close=True)
        self.ticks += 1
        hub = self.hub
        hub.read_feed()
        if self.ticks % INBOX_TICKS == 0 and hub.subscribers:
            hub.check_inbox()
        if self.ticks % STATS_TICKS == 0:
            hub.sample()
        self.handle.call_later(TICK)
        return NOTHING

    def stop_requested(self) -> Reply:
        self.stopping = True
        return Reply(close=True)
