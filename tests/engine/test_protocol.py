"""The protocol contract's deferred work: a Handoff runs blocking where a thread per connection waits anyway, and
layers that map what deferred work answers keep a Handoff a Handoff (the event loop then waits for nothing)."""

from __future__ import annotations

import threading

from sockhop.engine.protocol import Handoff, Reply, then_mapped


class Background(Handoff):
    """Done by a thread of its own, as mail's group commit is; finish() tells where it ran."""

    def __init__(self) -> None:
        self.started_in: str | None = None

    def start(self, done) -> None:
        self.started_in = threading.current_thread().name
        threading.Thread(target=done, args=("stored",), name="doer").start()

    def finish(self, result: object) -> Reply:
        return Reply((f"{result} in {threading.current_thread().name}".encode(),))


def test_a_handoff_called_like_then_waits_for_its_doer_and_finishes_in_the_caller():
    work = Background()
    assert work() == Reply((b"stored in MainThread",))
    assert work.started_in == "MainThread"


def test_then_mapped_keeps_a_handoff_and_maps_its_reply():
    mapped = then_mapped(Background(), lambda reply: reply._replace(close=True))
    assert isinstance(mapped, Handoff)
    finished = threading.Event()
    results: list[object] = []
    mapped.start(lambda result: (results.append(result), finished.set()))
    assert finished.wait(10)
    assert mapped.finish(results[0]) == Reply((b"stored in MainThread",), close=True)


def test_then_mapped_wraps_a_plain_callable():
    mapped = then_mapped(lambda: Reply((b"x",)), lambda reply: reply._replace(alarm=5))
    assert not isinstance(mapped, Handoff)
    assert mapped() == Reply((b"x",), alarm=5)
