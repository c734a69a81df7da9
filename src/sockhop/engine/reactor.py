"""What happens when no bytes arrive: wake-ups from other threads, timers, outbound connections and background jobs.

A :class:`Reactor` is a small loop inside whichever loop drives a thread: the event loop (and a prefork master)
registers its one descriptor -- an epoll set of its own -- beside its sockets, and so does the blocking driver of a
connection whose protocol asked for a handle; jobs under the blocking models get a thread running one. Everything
it does is asked through a :class:`Handle`, never by reading sockets or clocks: a protocol stays sans-IO.

* ``handle.wake()`` from any thread: the engine calls the protocol's ``woken()`` on its own thread and carries out
  its Reply -- a response that stays open and is written to later (Server-Sent Events).
* ``handle.call_later(seconds, fn)``: ``fn()`` on the engine's thread after so long; its Reply is carried out.
* ``handle.connect(address, protocol, ...)``: an outbound TCP, TLS or UDP connection driven by the same loop with
  a client-side :class:`~sockhop.engine.protocol.ClientProtocol`; ``handle.link(other)`` ties two connections with
  backpressure both ways (a proxy: reading one side stops while the other's output is over ``write_buffer``).
* :class:`Jobs`: background work (:class:`~sockhop.engine.protocol.Job`) started with the server, stopped with it.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sockhop.engine.limits import Limits
from sockhop.engine.protocol import (
    NOTHING,
    WHEN_DRAINED,
    Address,
    ClientProtocol,
    Close,
    FileRegion,
    Job,
    Reply,
    StreamProtocol,
    as_reply,
)
from sockhop.engine.shared import RECV_SIZE, close_region, peer_name, protocol_failed, release

log = logging.getLogger("sockhop.engine")

COMPACT_SLACK = 4096  # stale timer entries tolerated beyond twice the live ones before the heap is rebuilt

Fn = Callable[[], Reply] | None  # None: the owner's woken()


def reset_on_close(sock: socket.socket) -> None:
    """SO_LINGER 0: the close that follows sends a reset, not a FIN -- the peer sees an abort."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass


class Timer:
    """A callback due at a moment of the monotonic clock; ``cancel()`` keeps it from running."""

    __slots__ = ("when", "end", "fn", "cancelled")

    def __init__(self, when: float, end: End | None, fn: Callable[[], Any]) -> None:
        self.when = when
        self.end = end
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        """It never runs; what it would have called (and the connection it belongs to) is let go at once, though
        the entry stays in the heap until it is due or the heap is compacted."""
        self.cancelled = True
        self.fn = _nothing
        self.end = None

    @property
    def stale(self) -> bool:
        """Cancelled, or its connection closed: it will never run."""
        return self.cancelled or (self.end is not None and self.end.closed)

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when


class End:
    """The engine's side of a handle: one connection (served or outbound) or one job.

    Subclasses say how a Reply is carried out and how reading pauses; the backpressure between two linked ends
    lives here: when this end's output backlog passes ``write_buffer`` its partner stops being read until the
    backlog is sent.
    """

    peer: Address = None
    closed = False
    error: BaseException | None = None

    def __init__(self, reactor: Reactor) -> None:
        self.reactor = reactor
        self.partner: End | None = None
        self.holding = False  # the partner's reading is paused because of this end's backlog

    # -- what subclasses provide -----------------------------------------------------------------------------
    def carry_out(self, reply: Reply) -> None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        """Send one piece of bytes (``Handle.send``'s common case); a subclass may do it without a Reply."""
        self.carry_out(Reply((data,)))

    @property
    def pending(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        """The protocol failed: end this connection (or job) at once."""
        self.carry_out(Reply(close=Close.RESET))

    # -- shared ----------------------------------------------------------------------------------------------
    def run(self, fn: Callable[[], Reply], mapping: Callable[[Reply], Reply] | None, where: str) -> None:
        """Call into the protocol on the engine's thread and carry out what it answers."""
        if self.closed:
            return
        try:
            reply = fn()
            if reply is None:  # a job's or a timer's callback with nothing to say
                reply = NOTHING
            reply = as_reply(reply)
            if not isinstance(reply, Reply):
                raise TypeError(f"answered {type(reply).__name__}, not a Reply")
            if mapping is not None:
                reply = mapping(reply)
        except Exception as exc:
            protocol_failed(self.peer, where, exc)
            self.abort()
            return
        self.carry_out(reply)

    def check_backlog(self) -> None:
        partner = self.partner
        if partner is None:
            return
        if self.pending > self.reactor.limits.write_buffer:
            if not self.holding:
                self.holding = True
                partner.pause_reading()
        elif self.holding and (self.pending == 0 or self.closed):
            self.holding = False
            partner.resume_reading()


class Handle:
    """What a protocol or a job holds to ask the engine for what is not a reply to bytes just received.

    ``wake`` and ``call_soon`` may be called from any thread; everything else from the engine's thread -- that
    is, from inside the protocol's own methods or callbacks, where a sans-IO protocol always runs.
    """

    __slots__ = ("_end", "_owner", "_map")

    def __init__(self, end: End, owner: Any, mapping: Callable[[Reply], Reply] | None = None) -> None:
        self._end = end
        self._owner = owner
        self._map = mapping

    def mapped(self, mapping: Callable[[Reply], Reply] | None, owner: Any) -> Handle:
        """The handle a layer (TLS, PROXY, metrics) gives the protocol it wraps: what that protocol answers
        through it passes through ``mapping`` (encrypted, counted) and then through this handle's own."""
        outer = self._map
        both = outer if mapping is None else mapping if outer is None else lambda reply: outer(mapping(reply))
        return Handle(self._end, owner, both)

    # -- any thread ------------------------------------------------------------------------------------------
    def wake(self) -> None:
        """Have the engine call the owner's ``woken()`` on its own thread, soon."""
        self._end.reactor.call_soon_threadsafe(self, None)

    def call_soon(self, fn: Callable[[], Reply]) -> None:
        """Have the engine call ``fn()`` on its own thread and carry out the Reply it returns (a result handed
        back from a thread)."""
        self._end.reactor.call_soon_threadsafe(self, fn)

    # -- the engine's thread ---------------------------------------------------------------------------------
    def call_later(self, seconds: float, fn: Fn = None) -> Timer:
        """Call ``fn()`` (default: the owner's ``woken()``) after ``seconds`` and carry out its Reply."""
        return self._end.reactor.call_later(seconds, self._end, lambda: self._invoke(fn))

    def connect(
        self,
        address: tuple[str, int] | str,
        protocol: ClientProtocol,
        *,
        udp: bool = False,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = 10.0,
        starttls: bool = False,
    ) -> Handle:
        """Open an outbound connection to ``address`` -- (IP, port), never a name to resolve, or a Unix socket's
        path -- driven by this engine with ``protocol``; the outbound connection's handle. It connects in the
        background: ``protocol.connection_made`` or ``protocol.connection_failed`` (after ``timeout``) follows.
        ``starttls``: the connection begins in plaintext and ``tls`` starts when the protocol sends
        :data:`START_TLS` (SMTP's STARTTLS); ``connection_made`` is called again once it is encrypted."""
        outbound = Outbound(self._end.reactor, address, protocol, udp, tls, server_hostname, timeout, starttls)
        return outbound.handle

    def send(self, *pieces: bytes | FileRegion) -> None:
        """Send these pieces on this handle's connection now (what a protocol forwards to its partner)."""
        if self._map is None and len(pieces) == 1 and type(pieces[0]) is bytes:
            self._end.write(pieces[0])  # what a proxy passes on, a request or an answer at a time: no Reply made
        else:
            self.carry_out(Reply(pieces))

    def close(self, how: Close = Close.LINGER) -> None:
        self.carry_out(Reply(close=how))

    def carry_out(self, reply: Reply) -> None:
        """Carry out a Reply on this handle's connection now, as if its protocol had answered it."""
        end = self._end
        if self._map is not None:
            reply = self._map(reply)
        end.carry_out(reply)

    def pause_reading(self) -> None:
        """Stop reading this handle's connection (a proxy whose client's window is shut: bounded buffering) until
        ``resume_reading``."""
        self._end.pause_reading()

    def resume_reading(self) -> None:
        self._end.resume_reading()

    def link(self, other: Handle) -> None:
        """Backpressure both ways: while one side's output is over ``write_buffer``, the other is not read."""
        if self._end.partner is not None:
            self.unlink()
        if other._end.partner is not None:
            other.unlink()
        self._end.partner, other._end.partner = other._end, self._end

    def unlink(self) -> None:
        """Undo ``link`` (a pooled upstream connection going back to the pool): each side is read again."""
        end = self._end
        other = end.partner
        if other is None:
            return
        end.partner = other.partner = None
        if end.holding:
            end.holding = False
            other.resume_reading()
        if other.holding:
            other.holding = False
            end.resume_reading()

    @property
    def loop(self) -> Reactor:
        """The reactor driving this handle's connection: outbound connections made here belong to it (a pool of
        them is kept per loop)."""
        return self._end.reactor

    @property
    def closed(self) -> bool:
        return self._end.closed

    @property
    def error(self) -> BaseException | None:
        """Why the connection ended: None for the peer's clean end (or our own close)."""
        return self._end.error

    @property
    def backed_up(self) -> bool:
        return self._end.pending > self._end.reactor.limits.write_buffer

    def _invoke(self, fn: Fn) -> None:
        self._end.run(self._owner.woken if fn is None else fn, self._map, "woken")


class Reactor:
    """Timers, cross-thread calls and outbound connections behind one pollable descriptor (an epoll set)."""

    def __init__(self, limits: Limits | None = None, on_schedule: Callable[[float], None] | None = None) -> None:
        self.limits = limits or Limits()
        self.on_schedule = on_schedule  # told each timer's moment: an owner that keeps a timer heap of its own
        self.ep = select.epoll()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self.ep.register(self._r, select.EPOLLIN)
        self.calls: deque = deque()  # (handle, fn); deque.append is atomic, so any thread may add
        self.timers: list[tuple[float, int, Timer]] = []
        self.outbound: dict[int, Outbound] = {}
        self._order = itertools.count()
        self._compact_at = COMPACT_SLACK  # the heap's size at which its stale entries are next dropped
        # A thread may wake a connection just as its reactor closes: without the lock its byte could go to whatever
        # descriptor reuses the pipe's number next.
        self._pipe_lock = threading.Lock()
        self._closed = False
        # In a process forked from the owner (a prefork worker, a fork child) the reactor is only a way back: a wake
        # writes a byte to the owner's pipe, and the owner, finding more bytes than calls, calls on_remote_wake.
        self.remote = False
        self.on_remote_wake: Callable[[], None] | None = None

    def fileno(self) -> int:
        return self.ep.fileno()

    # -- asked by handles --------------------------------------------------------------------------------------
    def call_soon_threadsafe(self, handle: Handle, fn: Fn) -> None:
        with self._pipe_lock:
            if self._closed:
                return  # the connection (or the server) is gone: nobody to wake
            if not self.remote:
                self.calls.append((handle, fn))
            try:
                os.write(self._w, b"w")
            except OSError:
                pass  # full: a wake-up is already pending

    def call_later(self, seconds: float, end: End | None, fn: Callable[[], Any]) -> Timer:
        timer = Timer(_now() + max(0.0, seconds), end, fn)
        if len(self.timers) >= self._compact_at:
            self._compact_timers()
        heapq.heappush(self.timers, (timer.when, next(self._order), timer))
        if self.on_schedule is not None:
            self.on_schedule(timer.when)
        return timer

    def _compact_timers(self) -> None:
        """Drop the entries that will never run: cancelled timers and those of closed connections. They fall out
        when due, but a proxy that opens and closes upstream connections sets a read timeout on each -- 700 a
        second under a 60 s timeout held 42,000 dead connections, their sockets and parsers, and the garbage
        collector walking them all. Rebuilt when the heap has doubled since (amortised: one pass per doubling)."""
        timers = self.timers  # in place: run_due may be walking it when a callback sets a timer
        timers[:] = [entry for entry in timers if not entry[2].stale]
        heapq.heapify(timers)
        self._compact_at = 2 * len(timers) + COMPACT_SLACK

    # -- driven by the owner's loop ----------------------------------------------------------------------------
    def deadline(self) -> float | None:
        """When the next timer is due (monotonic), None if none is set."""
        timers = self.timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def timeout(self, cap: float | None = None) -> float | None:
        """Seconds the owner may sleep before ``run_due`` has work, at most ``cap``."""
        due = self.deadline()
        if due is None:
            return cap
        left = max(0.0, due - _now())
        return left if cap is None else min(cap, left)

    def run_ready(self) -> None:
        """Handle what the epoll set reports: calls from other threads, outbound sockets ready."""
        for fd, ev in self.ep.poll(0):
            if fd == self._r:
                pokes = 0
                try:
                    while chunk := os.read(self._r, 4096):
                        pokes += len(chunk)
                except OSError:
                    pass
                calls = len(self.calls)  # each call wrote its byte after it was queued: never more bytes than calls
                for _ in range(calls):
                    handle, fn = self.calls.popleft()
                    _guarded(handle._invoke, fn)
                if pokes > calls and self.on_remote_wake is not None:
                    _guarded(self.on_remote_wake)
            else:
                out = self.outbound.get(fd)
                if out is not None:
                    _guarded(out.ready, ev)

    def run_due(self) -> None:
        timers = self.timers
        if not timers:
            return
        now = _now()
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if timer.cancelled or (timer.end is not None and timer.end.closed):
                continue
            _guarded(timer.fn)

    def close(self) -> None:
        """The owner is done: outbound connections still open are aborted (their protocols are told)."""
        for out in list(self.outbound.values()):
            out.lost(ConnectionAbortedError("the server stopped"))
        self._release()

    def forget(self, *, keep_waking: bool = False) -> None:
        """Close the descriptors without a word to any protocol: in a child forked from the owner, which must not
        keep another process's connections open. With ``keep_waking``, the pipe's write end stays open, so a
        handle's ``wake()`` in the child (a worker that has just spooled a message) still wakes the owner's jobs."""
        self._pipe_lock = threading.Lock()  # a thread of the parent's may have held it at the fork
        if keep_waking:
            w, self._w = self._w, -1
            self._release()
            with self._pipe_lock:
                self._w, self._closed, self.remote = w, False, True
            return
        self._release()

    def _release(self) -> None:
        """Close every descriptor the reactor holds."""
        for out in self.outbound.values():
            out.sock.close()
        self.outbound.clear()
        self.timers.clear()
        self.calls.clear()
        with self._pipe_lock:
            self._closed = True
            for fd in (self._r, self._w):
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.ep.close()


_now = time.monotonic


def _nothing() -> None:
    """A cancelled timer's callback: it holds nothing."""


def _guarded(call: Callable[..., Any], *args: Any) -> None:
    """Run one callback; a failure the protocol layer did not catch (a peer gone mid-send, a bug) is logged and
    costs that callback only, never the loop that drives every other connection."""
    try:
        call(*args)
    except OSError as exc:
        log.debug("reactor: %s", exc)
    except Exception as exc:
        log.error("reactor: %s: %s", type(exc).__name__, exc)
        log.debug("traceback", exc_info=exc)


# -- outbound connections --------------------------------------------------------------------------------------


class Outbound(End):
    """One nonblocking client connection the reactor drives with a sans-IO client protocol."""

    CONNECTING, OPEN = range(2)

    def __init__(
        self,
        reactor: Reactor,
        address: tuple[str, int] | str,
        client: ClientProtocol,
        udp: bool,
        tls: ssl.SSLContext | None,
        server_hostname: str | None,
        timeout: float,
        starttls: bool = False,
    ) -> None:
        super().__init__(reactor)
        self.client = client
        self.udp = udp
        self.peer = address
        protocol: StreamProtocol = client
        self.handle = Handle(self, protocol)
        if tls is not None:
            from sockhop.engine.tls import TLSLayer

            layer = TLSLayer(tls, client, client_side=True, server_hostname=server_hostname, implicit=not starttls)
            protocol = layer
            self.handle = Handle(self, layer).mapped(layer._outer, client)  # what is sent through it is encrypted
        self.protocol = protocol
        self.out: deque = deque()
        self.queued = 0
        self.state = self.CONNECTING
        self.closing: bool | Close = False
        self.half_closed = False
        self.eof = False
        self.paused = False
        self.mask = 0
        self.alarm: Timer | None = None
        self.connect_timer: Timer | None = None
        self.drain = False  # the protocol sent WHEN_DRAINED: output_drained() once ``out`` has gone to the kernel
        kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
        # The handle exists before the protocol sees anything: attach first, then connect.
        protocol.attach(Handle(self, protocol))
        try:
            if isinstance(address, str):
                family, target = socket.AF_UNIX, address
            else:
                flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV  # never a name: nothing asks the resolver
                family, _, _, _, target = socket.getaddrinfo(address[0], address[1], 0, kind, 0, flags)[0]
            self.sock = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            if family != socket.AF_UNIX and not udp:
                # What a client protocol hands over goes at once: a request's last small piece (a chunked body's
                # end) must not wait for the peer's delayed ACK of the one before (Nagle).
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, IndexError) as exc:
            failure = exc
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a stand-in to close
            reactor.call_later(0, self, lambda: self.lost(failure))
            return
        self.fd = self.sock.fileno()
        reactor.outbound[self.fd] = self
        err = self.sock.connect_ex(target)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            reactor.call_later(0, self, lambda: self.lost(OSError(err, os.strerror(err))))
            return
        # Connected or not, the first writable event says so (or its SO_ERROR says why not).
        self._watch(select.EPOLLOUT)
        self.connect_timer = reactor.call_later(
            timeout, self, lambda: self.lost(TimeoutError(f"no connection within {timeout:g}s"))
        )

    @property
    def pending(self) -> int:
        return self.queued

    def _watch(self, mask: int) -> None:
        if mask == self.mask or self.closed:
            return
        if self.mask == 0:
            self.reactor.ep.register(self.fd, mask)
        else:
            self.reactor.ep.modify(self.fd, mask)
        self.mask = mask

    def _update(self) -> None:
        mask = select.EPOLLOUT if self.out else 0
        if not self.paused and not (self.udp and self.closing):
            mask |= select.EPOLLIN
        mask = mask or select.EPOLLERR  # epoll reports errors and hang-ups whatever the mask
        if mask != self.mask:
            self._watch(mask)

    def pause_reading(self) -> None:
        self.paused = True
        if self.state == self.OPEN:
            self._update()

    def resume_reading(self) -> None:
        self.paused = False
        if self.state == self.OPEN and not self.closed:
            self._update()

    # -- events ----------------------------------------------------------------------------------------------
    def ready(self, ev: int) -> None:
        if self.state == self.CONNECTING:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.lost(OSError(err, os.strerror(err)))  # OSError picks the subclass: ConnectionRefusedError...
                return
            self.connect_timer.cancel()
            self.state = self.OPEN
            self._update()
            try:
                peer, local = self.sock.getpeername(), self.sock.getsockname()
            except OSError as exc:
                self.lost(exc)
                return
            self.peer = peer
            self.run(lambda: self.protocol.connection_made(peer, local), None, "connection_made")
            if not self.closed and (self.out or self.closing or self.drain):
                self._flush()  # what was given, or a close asked for, before the connection was up
            return
        if ev & select.EPOLLOUT and self.out:
            self._flush()
            if self.closed:
                return
        if ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
            if not self.paused:
                self._read()
            elif self.mask:  # paused and gone: epoll would report it on every turn; look again when resumed
                self.reactor.ep.unregister(self.fd)
                self.mask = 0

    def _read(self) -> None:
        try:
            data = os.read(self.fd, RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.lost(exc)
            return
        if data:
            if self.closed:
                return
            try:  # End.run's work inline: this is every upstream read of a proxy
                reply = self.protocol.data_received(data)
                if type(reply) is not Reply:
                    reply = NOTHING if reply is None else as_reply(reply)
                    if not isinstance(reply, Reply):
                        raise TypeError(f"answered {type(reply).__name__}, not a Reply")
            except Exception as exc:
                protocol_failed(self.peer, "data_received", exc)
                self.abort()
                return
            self.carry_out(reply)
        elif not self.udp:  # an empty datagram is no end of anything: ignored
            self.eof = True
            self.run(lambda: self.protocol.eof_received()._replace(close=Close.AT_ONCE), None, "eof_received")

    # -- output --------------------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if data:
            self.out.append(data)
            self.queued += len(data)
        if self.state == self.OPEN:
            self._flush()
        else:
            self.check_backlog()

    def carry_out(self, reply: Reply) -> None:
        if self.closed:
            release(reply.send)
            return
        for piece in reply.send:
            if piece is WHEN_DRAINED:
                self.drain = True
                continue
            if isinstance(piece, FileRegion):
                try:
                    piece_bytes = piece.read()
                finally:
                    close_region(piece)
                piece = piece_bytes
            if piece:
                self.out.append(piece)
                self.queued += len(piece)
        if reply.alarm is not None:
            if self.alarm is not None:
                self.alarm.cancel()
                self.alarm = None
            if reply.alarm > 0:
                self.alarm = self.reactor.call_later(reply.alarm, self, self._timed_out)
        if reply.then is not None:
            log.error("%s: deferred work (Reply.then) is not offered to outbound connections", peer_name(self.peer))
            reply = reply._replace(close=Close.RESET)
        if reply.close:
            self.closing = Close(int(reply.close)) if not isinstance(reply.close, Close) else reply.close
        if self.state == self.OPEN:
            self._flush()
        else:  # still connecting: what piles up holds a linked partner back all the same
            self.check_backlog()

    def _flush(self) -> None:
        out = self.out
        try:
            while out:
                piece = out[0]
                sent = os.write(self.fd, piece)
                if self.udp or sent == len(piece):
                    out.popleft()
                    self.queued -= len(piece)
                else:
                    out[0] = memoryview(piece)[sent:]
                    self.queued -= sent
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self.lost(exc)
            return
        if not out and self.closing:
            if self.closing == Close.RESET or self.closing == Close.AT_ONCE or self.eof or self.udp:
                self.lost(None, reset=self.closing == Close.RESET)
                return
            if not self.half_closed:
                self.half_closed = True
                try:
                    self.sock.shutdown(socket.SHUT_WR)
                except OSError as exc:
                    self.lost(exc)
                    return
        self._update()
        if self.holding or self.queued > self.reactor.limits.write_buffer:  # check_backlog has something to do
            self.check_backlog()
        if self.drain and not out and not self.closed:  # what the protocol handed over has gone: it may give more
            self.drain = False
            self.run(self.protocol.output_drained, None, "output_drained")

    def _timed_out(self) -> None:
        self.alarm = None
        self.run(lambda: self.protocol.timed_out()._replace(close=Close.AT_ONCE), None, "timed_out")
        if not self.closed:
            self.lost(TimeoutError("timed out"))

    def lost(self, error: BaseException | None, *, reset: bool = False) -> None:
        """The end: close the socket and tell the protocol (``connection_failed`` if it never connected)."""
        if self.closed:
            return
        self.closed = True
        self.error = error
        if self.mask:
            try:
                self.reactor.ep.unregister(self.fd)
            except (OSError, ValueError):
                pass
        self.reactor.outbound.pop(getattr(self, "fd", -1), None)
        if reset:
            reset_on_close(self.sock)
        self.sock.close()
        release(tuple(self.out))
        self.out.clear()
        self.queued = 0
        if self.alarm is not None:
            self.alarm.cancel()
        if self.connect_timer is not None:
            self.connect_timer.cancel()
        if self.holding:
            self.check_backlog()  # let the partner be read again
        try:
            if self.state == self.CONNECTING:
                self.client.connection_failed(error or ConnectionError("closed before connecting"))
            else:
                self.protocol.connection_lost()
        except Exception as exc:
            protocol_failed(self.peer, "connection_lost", exc)

    def abort(self) -> None:
        self.lost(ConnectionAbortedError("the protocol failed"), reset=True)


# -- background jobs ---------------------------------------------------------------------------------------------


class JobEnd(End):
    """A job's side of its handle: a Reply's ``close`` ends the job; nothing is sent."""

    def __init__(self, reactor: Reactor, job: Job, jobs: Jobs) -> None:
        super().__init__(reactor)
        self.job = job
        self.jobs = jobs
        self.peer = type(job).__name__

    def carry_out(self, reply: Reply) -> None:
        release(reply.send)
        if reply.close and not self.closed:
            self.finish()

    def abort(self) -> None:
        self.finish()

    def finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.jobs.ends.remove(self)
        try:
            self.job.stopped()
        except Exception as exc:
            protocol_failed(self.peer, "stopped", exc)


class Jobs:
    """The background jobs of one server, on one reactor."""

    def __init__(self, jobs: list[Job], reactor: Reactor) -> None:
        self.reactor = reactor
        self.ends = [JobEnd(reactor, job, self) for job in jobs]
        self.stopping = False
        self.attached = False
        reactor.on_remote_wake = self.wake_all

    def attach(self) -> None:
        """Give each job its handle -- before any worker is forked, so a protocol in a worker can wake it."""
        if not self.attached:
            self.attached = True
            for end in self.ends:
                end.job.attach(Handle(end, end.job))

    def start(self) -> None:
        self.attach()
        for end in list(self.ends):
            end.run(end.job.started, None, "started")

    def wake_all(self) -> None:
        """A wake from another process (which job it meant is not known there): every job's ``woken()``."""
        for end in list(self.ends):
            end.run(end.job.woken, None, "woken")

    def stop(self) -> None:
        """The graceful stop: each job is asked to finish."""
        if self.stopping:
            return
        self.stopping = True
        for end in list(self.ends):
            end.run(end.job.stop_requested, None, "stop_requested")

    @property
    def running(self) -> bool:
        return bool(self.ends)

    def end_all(self) -> None:
        for end in list(self.ends):
            end.finish()


def run_jobs(runner: Jobs, limits: Limits, stop_fd: int) -> None:
    """A thread's whole life under the blocking models: run the jobs until the stop flag, then give them the grace
    period to finish."""
    reactor = runner.reactor
    poller = select.poll()
    poller.register(reactor.fileno(), select.POLLIN)
    poller.register(stop_fd, select.POLLIN)
    stop_at: float | None = None
    try:
        runner.start()
        while True:
            if stop_at is not None and (not runner.running or _now() >= stop_at):
                break
            cap = None if stop_at is None else max(0.0, stop_at - _now())
            timeout = reactor.timeout(cap)
            for fd, _ in poller.poll(None if timeout is None else timeout * 1000 + 1):
                if fd == stop_fd:
                    poller.unregister(stop_fd)
                    stop_at = _now() + limits.grace
                    runner.stop()
                else:
                    reactor.run_ready()
            reactor.run_due()
    except Exception as exc:
        log.error("background jobs failed: %s: %s", type(exc).__name__, exc)
        log.debug("traceback", exc_info=exc)
    finally:
        runner.end_all()
        reactor.close()


def start_job_thread(jobs: list[Job], limits: Limits, stop_fd: int) -> tuple[threading.Thread, Reactor]:
    reactor = Reactor(limits)
    runner = Jobs(jobs, reactor)
    runner.attach()  # here, not in the thread: a fork child made from now on has the handles
    thread = threading.Thread(target=run_jobs, args=(runner, limits, stop_fd), name="jobs", daemon=True)
    thread.start()
    return thread, reactor
