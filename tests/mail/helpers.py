"""In-memory pieces for driving the SMTP protocol without sockets."""

from __future__ import annotations

import os
import select

from sockhop.engine.protocol import Reply
from sockhop.engine.reactor import End, Handle, Reactor
from sockhop.mail.codes import SMTPReply, parse_reply, reply_complete
from sockhop.mail.protocol import Envelope, MailPolicy, Session, SMTPServer


class MemoryStore:
    """A Mailstore that keeps envelopes in a list (or fails, to test 451)."""

    def __init__(self, fail: bool = False, errno: int = 5) -> None:
        self.delivered: list[Envelope] = []
        self.fail = fail
        self.errno = errno  # EIO; ENOSPC (28) for a full disk

    def accepts(self, local_part: str) -> bool:
        return "/" not in local_part and not local_part.startswith(".")

    def deliver(self, session: Session, envelope: Envelope) -> str:
        if self.fail:
            raise OSError(self.errno, os.strerror(self.errno))
        self.delivered.append(envelope)
        return f"Q{len(self.delivered)}"


POLICY = MailPolicy(hostname="mx.example.test", domains=frozenset({"example.test"}), max_size=4096, max_recipients=5)


class _Conversing(End):
    """The engine's side of a Conversation's handle: what the protocol answers later (a timer) goes on record."""

    def __init__(self, reactor: Reactor, conversation: Conversation) -> None:
        super().__init__(reactor)
        self.conversation = conversation

    def carry_out(self, reply: Reply) -> None:
        self.conversation._apply(reply)


class Conversation:
    """A server protocol and what it sent; ``feed`` runs Reply.then chains at once, as the blocking driver does, and
    then -- for a protocol that asked for a handle -- the engine's own reactor until no call or timer is pending
    (a failed login's delay is waited out, as a thread per connection waits)."""

    def __init__(
        self,
        policy: MailPolicy = POLICY,
        store: MemoryStore | None = None,
        *,
        tls: bool = False,
        peer=("127.0.0.1", 40000),
    ) -> None:
        self.store = store or MemoryStore()
        self.server = SMTPServer(policy, self.store, tls=tls)
        self.closed = False
        self.out = bytearray()
        self.alarm: float | None = None  # the deadline the engine would hold now (seconds; None: none)
        self.reactor: Reactor | None = None
        if self.server.wakeable:
            self.reactor = Reactor()
            self.server.attach(Handle(_Conversing(self.reactor, self), self.server))
        self._apply(self.server.connection_made(peer, ("127.0.0.1", 25)))

    def _apply(self, reply: Reply) -> None:
        while True:
            for piece in reply.send:
                self.out += piece
            self.closed = self.closed or reply.close
            if reply.alarm is not None:
                self.alarm = reply.alarm or None
            if reply.then is None:
                return
            reply = reply.then()

    def feed(self, data: bytes, *, chunk: int = 0) -> None:
        if chunk:
            for i in range(0, len(data), chunk):
                assert not self.closed, "fed after close"
                self._apply(self.server.data_received(data[i : i + chunk]))
        elif data:
            self._apply(self.server.data_received(data))
        self._settle()

    def _settle(self) -> None:
        reactor = self.reactor
        while reactor is not None and (reactor.calls or reactor.deadline() is not None) and not self.closed:
            select.select([reactor.fileno()], [], [], reactor.timeout())
            reactor.run_ready()
            reactor.run_due()

    def event(self, name: str) -> None:
        self._apply(getattr(self.server, name)())

    def replies(self) -> list[SMTPReply]:
        """Every reply sent so far (the greeting first)."""
        return parse_all(bytes(self.out))

    def codes(self) -> list[int]:
        return [r.code for r in self.replies()]


def parse_all(data: bytes) -> list[SMTPReply]:
    assert data == b"" or data.endswith(b"\r\n"), data[-40:]
    replies, lines = [], []
    for line in data.split(b"\r\n")[:-1]:
        assert b"\n" not in line and b"\r" not in line
        lines.append(line)
        if reply_complete(line):
            replies.append(parse_reply(lines))
            lines = []
    assert not lines
    return replies
