"""The queue (--spool) and the routing in front of it: remote recipients durable in queue/ in the same commit as the
Maildir copies, the runner's contract (due, read, defer, delivered), the administrator's verbs, no scan per message,
and aliases expanding before delivery."""

from __future__ import annotations

import os
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockhop.mail.aliases import AliasesError, expand, parse_aliases
from sockhop.mail.maildir import Maildir
from sockhop.mail.protocol import Envelope, Session
from sockhop.mail.router import Router
from sockhop.mail.spool import Spool, SpoolError, iter_lines

LOCAL = frozenset({"example.test", "mx.example.test"})


def make_router(tmp_path, aliases=None, spool=True) -> Router:
    maildir = Maildir(tmp_path / "mail", hostname="mx.example.test")
    return Router(maildir, LOCAL, spool=Spool(tmp_path / "spool") if spool else None, aliases=aliases)


def accept(router, *recipients, sender="a@example.test") -> str:
    env = Envelope(sender=sender, recipients=list(recipients), content=b"Subject: hi\n\nhello\n")
    return router.deliver(Session(peer=("127.0.0.1", 1), helo="client.test"), env)


def test_remote_recipients_queued_local_delivered_in_one_commit(tmp_path):
    router = make_router(tmp_path)
    queue_id = accept(router, "bob@example.test", "x@remote.test", "y@other.test")
    assert len(os.listdir(tmp_path / "mail" / "bob" / "new")) == 1
    assert os.listdir(tmp_path / "spool" / "queue") == [queue_id]
    assert os.listdir(tmp_path / "spool" / "tmp") == []
    [entry] = router.spool.entries()
    assert (entry.id, entry.sender, entry.recipients) == (queue_id, "a@example.test", ("x@remote.test", "y@other.test"))
    envelope, text = router.spool.read(queue_id)
    assert envelope["to"] == ["x@remote.test", "y@other.test"] and text.startswith(b"Return-Path: <a@example.test>\n")
    assert text.endswith(b"\n\nhello\n") and entry.size == len(text)


def test_the_runner_contract(tmp_path):
    router = make_router(tmp_path)
    spool = router.spool
    first = accept(router, "x@remote.test", "y@other.test")
    second = accept(router, "z@remote.test", sender="")
    assert [e.id for e in spool.due()] == [first, second]
    spool.defer(first, "451 4.3.0 try later", time.time() + 300)
    assert [e.id for e in spool.due()] == [second]
    assert spool.delivered(first, ["x@remote.test"]) is False
    [entry] = [e for e in spool.entries() if e.id == first]
    assert (entry.recipients, entry.attempts, entry.last_error) == (("y@other.test",), 1, "451 4.3.0 try later")
    assert spool.flush() == 1 and [e.id for e in spool.due()] == [first, second]
    assert spool.hold(second) and not spool.hold(second)
    assert [e.id for e in spool.due()] == [first]
    listing = "\n".join(iter_lines(spool.entries(), time.time()))
    assert f"{second}!" in listing and "(451 4.3.0 try later)" in listing and "MAILER-DAEMON" in listing
    assert listing.endswith("in 2 Requests.")
    assert spool.release(second) and not spool.release(second)
    assert spool.delivered(first, ["y@other.test"]) is True  # the last recipient: the message goes
    assert [e.id for e in spool.entries()] == [second] and os.listdir(tmp_path / "spool" / "state") == []
    spool.delete(second)
    assert list(iter_lines(spool.entries(), time.time())) == ["Mail queue is empty"]
    with pytest.raises(SpoolError, match="no such message"):
        spool.delete("../../etc/passwd")


def test_acceptance_never_scans_the_queue(tmp_path, monkeypatch):
    """A queue of any size costs acceptance nothing: no listing of a folder per message (os.scandir, os.listdir
    and Path.iterdir are what would read 100,000 names)."""
    router = make_router(tmp_path)
    accept(router, "x@remote.test", "bob@example.test")  # the mailbox folder made once

    def refuse(*args, **kwargs):
        raise AssertionError("a folder was listed while accepting a message")

    for name in ("scandir", "listdir"):
        monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr("pathlib.Path.iterdir", refuse)
    for _ in range(3):
        accept(router, "x@remote.test", "bob@example.test")
    monkeypatch.undo()
    assert len(router.spool.entries()) == 4


class FakeHandle:
    """A job's handle without an engine: calls at once, keeps timers and connections to look at."""

    def __init__(self) -> None:
        self.later: list = []
        self.connected: list = []

    def call_soon(self, fn):
        fn()

    def wake(self) -> None:
        raise AssertionError("a wake without the message's id: the runner would rescan queue/")

    def call_later(self, seconds, fn=None):
        self.later.append((seconds, fn))

    def connect(self, address, protocol, **kwargs):
        self.connected.append((address, protocol))


def test_the_runner_woken_with_an_id_reads_that_message_only(tmp_path, monkeypatch):
    """A message queued wakes the runner with its id and the text the commit wrote: it is tried without a listing
    of queue/ or state/ per message -- which grows with the queue -- nor a read of its file, and settling it reads
    nothing either; what it is handed is what the file holds."""
    from sockhop.mail.client import Outcome
    from sockhop.mail.codes import SMTPReply
    from sockhop.mail.runner import DeliveryPolicy, QueueRunner

    router = make_router(tmp_path)
    spool = router.spool
    runner = QueueRunner(spool, DeliveryPolicy("mx.example.test", relayhost=("127.0.0.1", 9)))
    runner.attach(handle := FakeHandle())
    router.on_queued = runner.wake
    opened: list[str] = []
    real_open = open

    def refuse(*args, **kwargs):
        raise AssertionError("a folder was listed for a message queued")

    def counted(path, *args, **kwargs):
        opened.append(os.path.basename(path))
        return real_open(path, *args, **kwargs)

    for name in ("scandir", "listdir"):
        monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr("builtins.open", counted)
    queue_id = accept(router, "x@remote.test", "y@remote.test")
    for _seconds, fn in handle.later:  # the runner's own hop to try what is due
        fn()
    [(_address, talk)] = handle.connected  # one connection to the relayhost, carrying the message
    message = talk.take()
    assert message.queue_id == queue_id and message.recipients == ("x@remote.test", "y@remote.test")
    assert opened == [] and runner.written == {}
    monkeypatch.undo()
    assert spool.load(queue_id)[1:] == ({"from": "a@example.test", "to": ["x@remote.test", "y@remote.test"],
                                         "arrival": spool.load(queue_id)[0].arrival}, message.data)  # fmt: skip
    ok = SMTPReply(250, "2.0.0", ("ok",))
    gate, delete = threading.Event(), spool.delete
    spool.delete = lambda *args, **kwargs: gate.wait(10) and delete(*args, **kwargs)
    talk.report(message, [Outcome(r, ok, "relayhost") for r in message.recipients])
    assert os.listdir(tmp_path / "spool" / "queue") == [queue_id] and runner.removing == {queue_id}
    tries = len(handle.later)
    runner.scan()  # a rescan (a flush) while the file is being removed off the loop does not try it again
    assert len(handle.later) == tries and not runner.due and queue_id not in runner.scheduled
    gate.set()
    runner.stopped()  # the removals asked for are done before the server exits
    assert os.listdir(tmp_path / "spool" / "queue") == []
    assert os.listdir(tmp_path / "spool" / "state") == [] and runner.removing == set()


def test_a_failed_spool_write_leaves_nothing_anywhere(tmp_path):
    router = make_router(tmp_path)
    os.rmdir(tmp_path / "spool" / "tmp")  # the spool's write fails after the Maildir copy was written
    with pytest.raises(OSError):
        accept(router, "bob@example.test", "x@remote.test")
    box = tmp_path / "mail" / "bob"
    assert os.listdir(box / "new") == [] and os.listdir(box / "tmp") == []
    assert os.listdir(tmp_path / "spool" / "queue") == []


# -- aliases -------------------------------------------------------------------------------------------------------
def test_aliases_format_continuations_and_comments():
    text = "# a comment\n\nPostmaster: root\nroot: root,\n    alice, bob@example.test,\n\tcarol@remote.test\nx:y\n"
    aliases = parse_aliases(text)
    assert aliases == {
        "postmaster": ("root",),
        "root": ("root", "alice", "bob@example.test", "carol@remote.test"),
        "x": ("y",),
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  bob\n", "a continuation line with nothing to continue"),
        ("bob alice\n", "expected name: target"),
        ("bob:\n", "has no targets"),
        ("bob: |/usr/bin/procmail\n", "pipes, files and :include: are not supported"),
        ("bob: /var/mail/bob\n", "not supported"),
        ("bob: :include:/etc/list\n", "not supported"),
        ("bob: a\nbob: b\n", "defined twice"),
        ("bob@x.test: a\n", "not an address"),
        ("bob: a b@\n", "bad target"),
    ],
)
def test_aliases_mistakes_name_the_line(text, message):
    with pytest.raises(AliasesError, match=message) as caught:
        parse_aliases(text, "aliases")
    assert str(caught.value).startswith("aliases:")


def test_expansion_recursive_self_and_loops():
    aliases = parse_aliases(
        "root: root, alice\npostmaster: root\nloop1: loop2\nloop2: loop1, carol\nall: x@remote.test, root\n"
    )
    is_local = LOCAL.__contains__
    assert expand("postmaster@example.test", aliases, is_local) == ["root", "alice"]
    assert expand("loop1", aliases, is_local) == ["loop1", "carol"]
    assert expand("all@example.test", aliases, is_local) == ["x@remote.test", "root", "alice"]
    assert expand("root@remote.test", aliases, is_local) == ["root@remote.test"]  # not ours: not expanded


NAME = st.from_regex(r"[a-z][a-z0-9_-]{0,6}(\.[a-z0-9_-]{1,4})?", fullmatch=True)


@given(st.dictionaries(NAME, st.lists(st.one_of(NAME, NAME.map(lambda n: n + "@remote.test")), min_size=1, max_size=4),
                       max_size=8), st.booleans())  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_aliases_parse_what_they_print_and_expansion_ends(aliases, wrap):
    def line(name, targets):
        if wrap and len(targets) > 1:
            return f"{name}: {targets[0]},\n  " + ",\n\t".join(targets[1:])
        return f"{name}: {', '.join(targets)}"

    text = "# generated\n" + "\n".join(line(n, t) for n, t in aliases.items()) + "\n"
    parsed = parse_aliases(text)
    assert parsed == {n: tuple(t) for n, t in aliases.items()}
    for name in parsed:
        out = expand(name, parsed, LOCAL.__contains__)
        assert out and len(out) == len(set(out))
        assert all(o.endswith("@remote.test") or o.split("@")[0] not in parsed or o in parsed for o in out)


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_aliases_parser_takes_anything(text):
    try:
        parse_aliases(text)
    except AliasesError as exc:
        assert str(exc).startswith("aliases:") and "\n" not in str(exc)


def test_router_expands_local_and_queues_remote_targets(tmp_path):
    aliases = parse_aliases("team: alice, bob@example.test, carol@remote.test\n")
    router = make_router(tmp_path, aliases)
    assert router.accepts("team") and router.accepts("anyone")
    accept(router, "team@example.test")
    assert {p.name for p in (tmp_path / "mail").iterdir()} == {"alice", "bob"}
    [entry] = router.spool.entries()
    assert entry.recipients == ("carol@remote.test",)


def test_remote_alias_targets_need_a_spool(tmp_path):
    with pytest.raises(AliasesError, match="remote targets need --spool"):
        make_router(tmp_path, parse_aliases("team: carol@remote.test\n"), spool=False)
    with pytest.raises(AliasesError, match="cannot be a mailbox name"):
        make_router(tmp_path, parse_aliases("team: x/y\n"), spool=False)
