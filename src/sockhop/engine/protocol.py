"""The contract between a protocol and the engine that drives it.

A protocol knows the conversation and nothing about sockets: it is fed bytes (or one datagram) and answers with a
:class:`Reply` saying what to send and whether to close. It never blocks, never sleeps, never reads a clock, so the
same object runs unchanged under every concurrency model, and tests can feed it bytes directly.
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

Address = Any  # what the socket module reports: (host, port) for IPv4, (host, port, flow, scope) for IPv6


@dataclass(frozen=True, slots=True)
class FileRegion:
    """Part of an open file to send with ``os.sendfile`` (zero copy). The engine closes ``fd`` when done if
    ``close`` is true."""

    fd: int
    offset: int
    count: int
    close: bool = True

    def read(self) -> bytes:
        """The bytes of the region, for layers that cannot use sendfile (TLS)."""
        return os.pread(self.fd, self.count, self.offset)


class Close(enum.IntEnum):
    """How a :class:`Reply` ends its connection; ``False`` and ``True`` mean KEEP and LINGER.

    LINGER half-closes after the last bytes and reads until the peer closes (a couple of seconds at most): input
    already on its way, such as a request pipelined behind the last one, would otherwise make the kernel reset the
    connection and destroy the reply before the peer reads it. AT_ONCE closes as soon as the output is sent, as
    nginx does, when the peer has said it will send nothing more (an HTTP request with ``Connection: close``, read
    to its last byte): it saves a half-close, a read and a wakeup per connection.
    """

    KEEP = 0
    LINGER = 1
    AT_ONCE = 2
    #: Abort: send what is queued, then close with a TCP reset (SO_LINGER 0), so the peer sees a failure rather
    #: than a clean end -- a proxy whose upstream died mid-body must not hand its client a truncated reply that
    #: looks whole.
    RESET = 3


class Reply(NamedTuple):
    """What to do after an event: send these pieces in order, then close if asked.

    A NamedTuple rather than a dataclass: one is built per event on the hot path, and tuple construction is the
    cheapest object Python makes.
    """

    send: tuple[bytes | FileRegion, ...] = ()
    #: Close after sending: True (:attr:`Close.LINGER`) or :attr:`Close.AT_ONCE`.
    close: bool | Close = False
    #: Blocking work (an fsync before SMTP's 250) to run after ``send`` is sent. The engine runs it where it stalls
    #: no other connection (a worker thread under the event loop) and then carries out the Reply it returns. No
    #: other method of the protocol is called meanwhile, so it may touch the protocol's state freely. A
    #: :class:`Handoff` here is work someone else carries out, so that no thread waits for it at all.
    then: Callable[[], Reply] | None = None
    #: Seconds from now after which ``timed_out()`` is called however much traffic flows (an HTTP header deadline
    #: against slowloris, SMTP's DATA timeout); a later alarm replaces it, 0 clears it. The idle timeout applies
    #: regardless. The protocol never reads a clock: the engine keeps this one.
    alarm: float | None = None


NOTHING = Reply()
CLOSE = Reply(close=True)


class _StartTLS(bytes):
    """The marker a protocol puts last in ``Reply.send`` to switch the connection to TLS after what precedes it.
    An empty bytes, so an engine without the layer would send nothing; recognised by identity."""

    def __repr__(self) -> str:
        return "START_TLS"


#: STARTTLS (SMTP's, RFC 3207): what comes before it in ``Reply.send`` goes out in plaintext, everything after the
#: handshake the TLS layer (engine/tls.py) then does is encrypted.
START_TLS = _StartTLS()


class _WhenDrained(bytes):
    """The marker a protocol puts last in ``Reply.send`` to be called back (``output_drained``) once everything
    before it has been handed to the kernel. An empty bytes, like :data:`START_TLS`; recognised by identity."""

    def __repr__(self) -> str:
        return "WHEN_DRAINED"


#: Write-side backpressure for a protocol that produces output in bursts (HTTP/2 reading a file a window at a
#: time): it sends a bounded burst ending in this marker, and the engine calls ``output_drained()`` for the next one
#: only when the socket has taken the burst -- so a slow reader holds one burst in memory, never the whole file.
WHEN_DRAINED = _WhenDrained()


def as_reply(answer: Reply | bytes) -> Reply:
    """A protocol's answer as a :class:`Reply`: ``data_received`` may answer plain bytes, shorthand for
    ``Reply((data,))``."""
    return Reply((answer,)) if isinstance(answer, bytes) else answer


class Handoff:
    """Deferred work (``Reply.then``) that is handed to whoever does it best -- a group commit thread making many
    messages durable with one sync -- rather than blocking one of the engine's threads per connection.

    ``start(done)`` hands it over and returns at once; the doer calls ``done(result)`` once, from any thread; the
    engine then calls ``finish(result)`` where it calls the protocol's other methods, and carries out the Reply.
    Called like a plain ``then`` it does all three and waits: models with a thread per connection do just that.
    """

    __slots__ = ()

    def start(self, done: Callable[[object], None]) -> None:
        raise NotImplementedError

    def finish(self, result: object) -> Reply:
        raise NotImplementedError

    def __call__(self) -> Reply:
        return self.finish(wait_for(self.start))


def wait_for(start: Callable[[Callable[[object], None]], None]) -> object:
    """Call ``start(done)`` and block until ``done(result)`` has been called, from any thread; the result."""
    finished = threading.Event()
    box: list[object] = []

    def done(result: object) -> None:
        box.append(result)
        finished.set()

    start(done)
    finished.wait()
    return box[0]


class _Mapped(Handoff):
    __slots__ = ("inner", "then")

    def __init__(self, inner: Handoff, then: Callable[[Reply], Reply]) -> None:
        self.inner = inner
        self.then = then

    def start(self, done: Callable[[object], None]) -> None:
        self.inner.start(done)

    def finish(self, result: object) -> Reply:
        return self.then(self.inner.finish(result))


def then_mapped(then: Callable[[], Reply], mapping: Callable[[Reply], Reply]) -> Callable[[], Reply]:
    """Deferred work whose Reply passes through ``mapping`` (a layer encrypting or counting what the protocol it
    wraps answers); a :class:`Handoff` stays one."""
    if isinstance(then, Handoff):
        return _Mapped(then, mapping)
    return lambda: mapping(then())


class Results(NamedTuple):
    """What a protocol counts when results are counted (``--admin``): the Prometheus counter's name (``_total`` is
    added), its help text, and the labels the protocol gives ``on_result`` -- after the engine's own labels
    (service, model). Protocols declaring the same name share one counter (DNS over UDP and over TCP)."""

    name: str
    documentation: str
    labels: tuple[str, ...]


class _Counting:
    """The two class attributes by which a protocol reports results, shared by both kinds of protocol.

    ``on_result`` is None unless results are counted; the metrics layer then sets it on each protocol that
    declares ``results``, and the protocol calls it with its label values ("404"; "udp", "NXDOMAIN") where a
    request, query or message is settled -- only if it is set, so counting costs one comparison when metrics are
    off. Layers that wrap a protocol (TLS, PROXY, metrics) keep it as ``inner``, so the metrics layer can find the
    protocol that knows the results."""

    results: ClassVar[Results | None] = None
    on_result: Callable[..., None] | None = None


class StreamProtocol(_Counting):
    """One instance per connection. Override what you need; every method returns a :class:`Reply` (or, from
    ``data_received``, the bytes to send).

    A protocol that must act when no bytes arrive -- a stream written to later (Server-Sent Events), a timer, a
    proxy waiting on its upstream -- sets ``wakeable = True``. The engine then calls ``attach(handle)`` before
    ``connection_made`` with a :class:`sockhop.engine.reactor.Handle`: any thread may ``handle.wake()`` (the
    engine then calls ``woken()`` on its own thread), and from the engine's thread the protocol may set timers
    (``handle.call_later``) and open outbound connections (``handle.connect``). Protocols that leave it False cost
    the engine nothing.
    """

    #: Ask for a handle (``attach``) -- read once per connection, never per event.
    wakeable: ClassVar[bool] = False
    #: Set True by a TLS layer around the protocol: the connection is encrypted (a proxy's X-Forwarded-Proto).
    secure: bool = False

    def attach(self, handle: Any) -> None:
        """The engine's handle for this connection (only if ``wakeable``), before ``connection_made``."""
        self.handle = handle

    def woken(self) -> Reply:
        """Someone called ``handle.wake()``: answer what is to be sent now (the next event of a stream)."""
        return NOTHING

    def connection_made(self, peer: Address, local: Address) -> Reply:
        """A client connected (SMTP sends its 220 greeting here)."""
        return NOTHING

    def data_received(self, data: bytes) -> Reply | bytes:
        """Some bytes arrived; ``data`` is never empty. Plain bytes are an answer too, meaning ``Reply((them,))``:
        no object is built per event, which is most of what an echo costs the engine beyond the kernel's work."""
        return NOTHING

    def eof_received(self) -> Reply:
        """The peer half-closed (recv returned b""). By default: finish sending, then close."""
        return CLOSE

    def stop_requested(self) -> Reply:
        """The server is stopping gracefully: finish the conversation soon. Called once; the connection is closed
        anyway when the grace period ends. Protocols with idle points (HTTP keep-alive, SMTP between commands) can
        close at once; the default lets the conversation run on."""
        return NOTHING

    def timed_out(self) -> Reply:
        """The idle timeout or the protocol's alarm expired. The reply is sent (best effort) and the connection
        closed."""
        return CLOSE

    def output_drained(self) -> Reply:
        """Everything up to a :data:`WHEN_DRAINED` the protocol sent has gone to the kernel: send the next burst."""
        return NOTHING

    def connection_lost(self) -> None:
        """The connection is gone, whoever closed it. Release what the protocol holds."""


class ClientProtocol(StreamProtocol):
    """The client side of an outbound connection (``handle.connect``): the same contract as a server's protocol --
    ``connection_made`` once connected (send the request), ``data_received``, ``eof_received`` for the peer's clean
    end, ``timed_out`` for its ``Reply.alarm``, ``connection_lost`` at the end -- plus ``connection_failed`` when it
    never connected (refused, unreachable, the connect timeout). Over UDP every piece sent is one datagram and every
    datagram received one ``data_received``. It always gets a handle (``attach``), so it can reach its partner.

    ``Reply.close`` on an outbound connection half-closes once the output is sent and goes on delivering what
    arrives until the peer closes (a forwarder passing a client's EOF on); ``Close.AT_ONCE`` closes at once,
    ``Close.RESET`` aborts. After ``connection_lost``, ``handle.error`` says why: None for the peer's clean end.
    """

    wakeable: ClassVar[bool] = True

    def connection_failed(self, error: Exception) -> None:
        """The connection could not be opened; ``connection_lost`` is not called after it."""


class Job:
    """Work that runs inside the server and is no connection: a mail queue runner, a zone refresher.

    Started once when the server serves -- in the event loop's own loop, in a prefork master's loop, on a thread
    of its own under the blocking models -- with a handle (``attach``) for timers, wake-ups and outbound
    connections. Its methods answer a :class:`Reply` of which only ``close`` counts: True means the job is done.
    On a graceful stop ``stop_requested`` is called; the job may finish what it is doing within the grace period.
    """

    def attach(self, handle: Any) -> None:
        self.handle = handle

    def started(self) -> Reply:
        return NOTHING

    def woken(self) -> Reply:
        return NOTHING

    def stop_requested(self) -> Reply:
        return CLOSE

    def stopped(self) -> None:
        """The job has ended (itself, at the stop or at the end of the grace period): release what it holds."""


class DatagramProtocol(_Counting):
    """One instance per socket and worker. Returns the datagrams to send back to ``peer``."""

    def tick(self, now: float) -> None:
        """The engine's clock (seconds since the epoch), read once per batch of waiting datagrams before they are
        handed over: a protocol that keeps rates (DNS's response rate limiting) reads time here, never itself,
        and pays nothing per datagram for it."""

    def datagram_received(self, data: bytes, peer: Address) -> list[bytes]:
        return []
