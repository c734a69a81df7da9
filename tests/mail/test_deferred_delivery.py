"""Under the event loop, a delivery that blocks (a slow fsync) must not stall the other connections: the engine
runs Reply.then off the loop, or hands the message to a store that submits (a Handoff). Here the store holds one
sender's delivery on an Event while another client talks."""

from __future__ import annotations

import functools
import smtplib
import threading

import pytest

from sockhop.engine import Listener
from sockhop.engine.eventloop import EventLoopServer
from sockhop.engine.limits import Limits
from sockhop.mail.codes import Code
from sockhop.mail.protocol import SMTPServer
from sockhop.net.addresses import Endpoint
from sockhop.net.listeners import open_listeners
from tests.mail.helpers import POLICY, MemoryStore


class SlowStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def deliver(self, session, envelope):
        if envelope.sender.startswith("slow@"):
            self.entered.set()
            assert self.release.wait(30)
        return super().deliver(session, envelope)


class SlowSubmittingStore(SlowStore):
    """Delivers in the background, as Maildir's group commit does: submit returns at once, done comes later."""

    def submit(self, session, envelope, done):
        threading.Thread(target=lambda: done(self.deliver(session, envelope))).start()


@pytest.mark.parametrize("store_kind", [SlowStore, SlowSubmittingStore], ids=["then-thread", "handoff"])
def test_a_slow_delivery_does_not_stall_other_connections(store_kind):
    store = store_kind()
    [sock] = open_listeners([Endpoint("127.0.0.1", 0)])
    port = sock.getsockname()[1]
    server = EventLoopServer([Listener(sock, functools.partial(SMTPServer, POLICY, store), name="mail")],
                             Limits(idle_timeout=30, grace=5))  # fmt: skip
    loop = threading.Thread(target=server.run)
    loop.start()
    slow_result: list[object] = []

    def slow_client() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            slow_result.append(smtp.sendmail("slow@b.test", ["bob@example.test"], b"Subject: slow\r\n\r\nx\r\n"))

    slow = threading.Thread(target=slow_client)
    try:
        slow.start()
        assert store.entered.wait(20)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as fast:  # the loop answers while the fsync "runs"
            assert fast.noop()[0] == Code.OK
            assert fast.sendmail("fast@b.test", ["bob@example.test"], b"Subject: fast\r\n\r\ny\r\n") == {}
        assert [e.sender for e in store.delivered] == ["fast@b.test"]
        assert not slow_result  # the slow client has not had its 250 yet
    finally:
        store.release.set()
        slow.join(30)
        server.stop()
        loop.join(30)
    assert slow_result == [{}]
    assert [e.sender for e in store.delivered] == ["fast@b.test", "slow@b.test"]


class GatheringStore(MemoryStore):
    """Holds each delivery until ``count`` of them are inside at once, as a group commit gathers them."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(count, timeout=20)

    def deliver(self, session, envelope):
        self.barrier.wait()
        return super().deliver(session, envelope)


def test_deferred_threads_let_that_many_deliveries_wait_together():
    store = GatheringStore(3)
    [sock] = open_listeners([Endpoint("127.0.0.1", 0)])
    port = sock.getsockname()[1]
    server = EventLoopServer([Listener(sock, functools.partial(SMTPServer, POLICY, store), name="mail")],
                             Limits(idle_timeout=30, grace=5, deferred_threads=3))  # fmt: skip
    loop = threading.Thread(target=server.run)
    loop.start()
    results: list[object] = []

    def client(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            results.append(smtp.sendmail(f"s{n}@b.test", ["bob@example.test"], b"Subject: x\r\n\r\nx\r\n"))

    clients = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    try:
        for c in clients:
            c.start()
        for c in clients:
            c.join(30)
        assert results == [{}, {}, {}]
        assert not store.barrier.broken
    finally:
        server.stop()
        loop.join(30)
