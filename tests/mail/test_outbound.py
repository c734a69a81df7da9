"""The queue runner's SMTP client protocol, sans-IO: fed the server's bytes, it answers what to send -- pipelined
when offered, step by step when not, STARTTLS insisted on when required -- and reports each recipient's fate."""

from __future__ import annotations

import email
import email.policy

from sockhop.engine.protocol import START_TLS, Reply
from sockhop.mail.bounce import Failure, make_bounce
from sockhop.mail.codes import ReplyReader
from sockhop.mail.outbound import Conversation, Message


class Handle:
    closed = False
    error = None


class Run:
    """A Conversation and what it told its runner."""

    def __init__(self, messages: list[Message], tls: str = "opportunistic", can_tls: bool = False) -> None:
        self.waiting = list(messages)
        self.reports: list = []
        self.ends: list = []
        self.talk = Conversation("mx[127.0.0.1]:25", "relay.test", take=self.take, report=self.report,
                                 ended=lambda c, e: self.ends.append(e), tls=tls, can_tls=can_tls)  # fmt: skip
        self.talk.attach(Handle())

    def take(self):
        return self.waiting.pop(0) if self.waiting else None

    def report(self, message, outcomes):
        self.reports.append((message.queue_id, [(o.recipient, o.reply.code if o.reply else None) for o in outcomes]))

    def server(self, text: str) -> bytes:
        reply = self.talk.data_received(text.replace("\n", "\r\n").encode())
        return b"".join(p for p in reply.send if isinstance(p, bytes))


MSG = Message("q1", "a@relay.test", ("b@far.test", "c@far.test"), b"Subject: x\n\n.dot\n")


def test_pipelined_two_messages_on_one_connection_then_quit():
    run = Run([MSG, Message("q2", "", ("d@far.test",), b"hi\n")])
    assert run.talk.connection_made(("127.0.0.1", 25), ("127.0.0.1", 4000)).alarm == 300
    assert run.server("220 mx ESMTP\n") == b"EHLO relay.test\r\n"
    sent = run.server("250-mx\n250-PIPELINING\n250 SIZE 1000\n")
    assert sent == (b"MAIL FROM:<a@relay.test> SIZE=17\r\nRCPT TO:<b@far.test>\r\nRCPT TO:<c@far.test>\r\nDATA\r\n")
    assert run.server("250 ok\n250 ok\n") == b""  # replies may come in any pieces
    body = run.server("450 4.2.1 busy\n354 go\n")
    assert body == b"Subject: x\r\n\r\n..dot\r\n.\r\n"  # CRLF and dot-stuffing
    assert run.server("250 2.0.0 queued\n").startswith(b"MAIL FROM:<>")
    assert run.reports == [("q1", [("b@far.test", 250), ("c@far.test", 450)])]
    assert run.server("250 ok\n250 ok\n354 go\n") == b"hi\r\n.\r\n"
    assert run.server("250 ok\n") == b"QUIT\r\n"
    assert run.reports[1] == ("q2", [("d@far.test", 250)])
    run.server("221 bye\n")
    run.talk.connection_lost()
    assert run.ends == [None]


def test_step_by_step_without_pipelining_and_rset_when_nobody_is_taken():
    run = Run([MSG])
    run.talk.connection_made(None, None)
    run.server("220 mx\n")
    assert run.server("250 mx\n") == b"MAIL FROM:<a@relay.test>\r\n"
    assert run.server("250 ok\n") == b"RCPT TO:<b@far.test>\r\n"
    assert run.server("550 5.1.1 no\n") == b"RCPT TO:<c@far.test>\r\n"
    assert run.server("551 no\n") == b"RSET\r\n"
    assert run.reports == [("q1", [("b@far.test", 550), ("c@far.test", 551)])]
    assert run.server("250 ok\n") == b"QUIT\r\n"


def test_required_tls_is_never_skipped():
    run = Run([MSG], tls="required", can_tls=True)
    run.talk.connection_made(None, None)
    run.server("220 mx\n")
    assert run.server("250-mx\n250 PIPELINING\n") == b"QUIT\r\n"  # no STARTTLS offered: no mail either
    assert "does not offer STARTTLS" in run.ends[0] and run.reports == []


def test_starttls_then_ehlo_again_inside():
    run = Run([], can_tls=True)
    run.talk.connection_made(None, None)
    run.server("220 mx\n")
    assert run.server("250-mx\n250 STARTTLS\n") == b"STARTTLS\r\n"
    reply = run.talk.data_received(b"220 go ahead\r\n")
    assert isinstance(reply, Reply) and reply.send == (START_TLS,)
    again = run.talk.connection_made(None, None)  # the engine's TLS layer: the handshake is done
    assert again.send == (b"EHLO relay.test\r\n",) and run.talk.encrypted


def test_a_dropped_connection_leaves_the_message_for_later():
    run = Run([MSG])
    run.talk.connection_made(None, None)
    run.server("220 mx\n")
    run.server("250-mx\n250 PIPELINING\n")
    run.talk.connection_lost()
    assert run.reports == [("q1", [("b@far.test", None), ("c@far.test", None)])]
    assert "lost connection" in run.ends[0]


def test_reply_reader_joins_pieces_and_multiline_replies():
    lines: list[bytes] = []
    reader = ReplyReader(lines.append)
    assert reader.feed(b"250-a\r\n25") == []
    [one, two] = reader.feed(b"0 b\r\n354 go\r\n")
    assert (one.code, one.lines, two.code) == (250, ("a", "b"), 354)
    assert lines == [b"250-a", b"250 b", b"354 go"]


def test_bounce_is_a_delivery_status_report():
    data = make_bounce("mx.relay.test", "a@relay.test", 0.0, b"Subject: hi\nFrom: a@relay.test\n\nbody\n",
                       [Failure("b@far.test", "5.1.1", "550 5.1.1 no such user", "mx.far.test")])  # fmt: skip
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report" and msg["To"] == "a@relay.test"
    _, status, headers = msg.iter_parts()
    head, rcpt = status.get_payload()
    assert head["Reporting-MTA"] == "dns; mx.relay.test"
    assert (rcpt["Action"], rcpt["Status"], rcpt["Remote-MTA"]) == ("failed", "5.1.1", "dns; mx.far.test")
    assert "Subject: hi" in headers.get_payload() and "body" not in headers.get_payload()


def test_an_idle_connection_waits_for_the_next_message_then_quits():
    run = Run([MSG])
    run.talk.idle = lambda talk: 2.0
    run.talk.connection_made(None, None)
    run.server("220 mx\n")
    run.server("250-mx\n250 PIPELINING\n")
    run.server("250 ok\n250 ok\n250 ok\n354 go\n")
    assert run.talk.data_received(b"250 queued\r\n") == Reply(alarm=2.0)  # nothing to send: it waits, connected
    run.waiting.append(Message("q2", "", ("d@far.test",), b"hi\n"))
    assert run.talk.woken().send[0].startswith(b"MAIL FROM:<>")  # woken with a message: on the same connection
    run.server("250 ok\n250 ok\n354 go\n")
    run.server("250 ok\n")
    assert run.talk.timed_out().send == (b"QUIT\r\n",)  # nothing more within the idle time
    run.talk.connection_lost()
    assert run.ends == [None] and [r[0] for r in run.reports] == ["q1", "q2"]
