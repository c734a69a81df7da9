"""The client side of SMTP for the queue runner, sans-IO: one connection to one destination, carrying as many
messages as it is handed, driven by the engine (``handle.connect``) like any protocol.

It greets (EHLO, falling back to HELO), starts TLS when offered unless told not to (``opportunistic``, as Postfix's
``may``) or insists on it (``required``), pipelines MAIL, RCPT and DATA when PIPELINING is offered (RFC 2920), and
asks its runner for the next message after each one. Replies are read by :class:`~sockhop.mail.codes.ReplyReader`
and commands built by the same functions as ``sockhop send``'s; each step has RFC 5321 4.5.3.2's timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sockhop.engine.protocol import START_TLS, ClientProtocol, Close, Reply

from .client import NO_SMTPUTF8, Outcome, dot_stuff, mail_command, parse_ehlo
from .codes import BadReply, Code, ReplyReader, SMTPReply, is_positive

# RFC 5321 4.5.3.2: how long each reply may take
GREETING_TIMEOUT = 300.0
MAIL_TIMEOUT = 300.0
RCPT_TIMEOUT = 300.0
DATA_TIMEOUT = 120.0
BLOCK_TIMEOUT = 180.0
DOT_TIMEOUT = 600.0


@dataclass(frozen=True)
class Message:
    """One message for one destination: its recipients there, and the text (LF line ends, as the spool keeps it)."""

    queue_id: str
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    utf8: bool = False


class Conversation(ClientProtocol):
    """One SMTP connection. ``take()`` hands the next message (None: say QUIT), ``report(message, outcomes)`` hears
    how each went, ``ended(conversation, error)`` is called once at the end (``error``: None after a clean QUIT;
    ``self.ready`` says whether the server was usable at all, so the runner knows to try its next address)."""

    def __init__(
        self, where: str, helo: str, *, take: Callable[[], Message | None],
        report: Callable[[Message, list[Outcome]], None], ended: Callable[[Conversation, str | None], None],
        tls: str = "opportunistic", can_tls: bool = True, timeout_scale: float = 1.0,
        idle: Callable[[Conversation], float] = lambda conversation: 0.0,
    ) -> None:  # fmt: skip
        self.where = where
        self.helo = helo
        self.take = take
        self.report = report
        self.ended = ended
        self.tls = tls
        self.can_tls = can_tls  # the engine was given a context for STARTTLS
        self.scale = timeout_scale
        self.idle = idle  # no message now: how long to stay connected waiting for one (0: QUIT at once)
        self.reader = ReplyReader()
        self.state = "connect"
        self.encrypted = False
        self.ready = False  # greeted and said hello: a usable server
        self.extensions: dict[str, str] = {}
        self.message: Message | None = None
        self.expect: list[str] = []  # what the replies still due answer, in order
        self.replies: list[SMTPReply] = []
        self.error: str | None = None
        self.done = False

    # -- the engine's events ---------------------------------------------------------------------------------------
    def connection_made(self, peer, local) -> Reply:
        if self.state == "tls":  # encrypted now (RFC 3207): the conversation begins again with EHLO
            self.encrypted = True
            return self._command(f"EHLO {self.helo}", "ehlo", MAIL_TIMEOUT)
        self.state = "greeting"
        return Reply(alarm=GREETING_TIMEOUT * self.scale)

    def connection_failed(self, error: Exception) -> None:
        self._end(f"cannot connect to {self.where}: {describe(error)}")

    def data_received(self, data: bytes) -> Reply:
        try:
            replies = self.reader.feed(data)
        except BadReply as exc:
            return self._fail(f"{self.where} answered what is not SMTP: {exc}")
        out: list = []
        for answer in replies:
            reply = self._on_reply(answer)
            out += reply.send
            if reply.close or reply.alarm is not None:
                return Reply(tuple(out), reply.close, None, reply.alarm)
        return Reply(tuple(out))

    def woken(self) -> Reply:
        """A message came for this destination while the connection was idle."""
        if self.state != "idle":
            return Reply()
        return self._next()

    def eof_received(self) -> Reply:
        if self.state == "idle":  # the server ended an idle connection: nothing was lost
            self.state = "quit"
        if self.state != "quit":
            self._lost(f"{self.where} closed the connection")
        return Reply(close=Close.AT_ONCE)

    def timed_out(self) -> Reply:
        if self.state == "idle":  # nothing more came: goodbye
            self.state = "quit"
            return Reply((b"QUIT\r\n",), close=Close.AT_ONCE)
        return self._fail(f"{self.where} did not answer in time ({self.state})", Close.AT_ONCE)

    def connection_lost(self) -> None:
        if self.state in ("quit", "idle") and self.message is None:
            self._end(None)
            return
        if self.state == "tls" and not self.encrypted:
            self._lost(f"{self.where}: TLS handshake failed")
        why = self.handle.error
        self._lost(f"lost connection with {self.where}" + (f": {describe(why)}" if why else ""))

    # -- the conversation -----------------------------------------------------------------------------------------
    def _command(self, line: str, expect: str, timeout: float) -> Reply:
        self.state = expect
        self.expect = [expect]
        return Reply((line.encode("utf-8") + b"\r\n",), alarm=timeout * self.scale)

    def _on_reply(self, answer: SMTPReply) -> Reply:
        if not self.expect and self.state != "greeting":
            return self._fail(f"{self.where} said what was not asked: {answer}")
        state = self.state
        if answer.code == Code.SERVICE_UNAVAILABLE and state not in ("quit",):
            return self._fail(f"{self.where} is closing: {answer}", Close.AT_ONCE)
        if state == "greeting":
            if answer.code != Code.SERVICE_READY:
                return self._fail(f"{self.where} greeted: {answer}")
            return self._command(f"EHLO {self.helo}", "ehlo", MAIL_TIMEOUT)
        if state == "ehlo":
            if answer.code != Code.OK:
                return self._command(f"HELO {self.helo}", "helo", MAIL_TIMEOUT)
            self.extensions = parse_ehlo(answer)
            return self._hello_done()
        if state == "helo":
            if answer.code != Code.OK:
                return self._fail(f"{self.where} refused HELO: {answer}")
            self.extensions = {}
            return self._hello_done()
        if state == "starttls":
            if answer.code != Code.SERVICE_READY:
                if self.tls == "required":
                    return self._fail(f"{self.where} refused STARTTLS: {answer}")
                return self._next()
            self.state = "tls"
            self.expect = []
            return Reply((START_TLS,), alarm=MAIL_TIMEOUT * self.scale)
        if state == "quit":
            self.expect = []
            return Reply(close=Close.AT_ONCE)
        if state == "rset":
            return self._next()
        if state == "dot":
            return self._delivered(answer)
        if state == "discard":  # the empty message sent to a server that said 354 with nobody to deliver to
            return self._settle()
        return self._transaction_reply(answer)

    def _hello_done(self) -> Reply:
        if not self.encrypted and self.tls != "off" and self.can_tls and "STARTTLS" in self.extensions:
            return self._command("STARTTLS", "starttls", MAIL_TIMEOUT)
        if not self.encrypted and self.tls == "required":
            return self._fail(f"{self.where} does not offer STARTTLS, and TLS is required for it")
        self.ready = True
        return self._next()

    def _next(self) -> Reply:
        """The next message, or QUIT."""
        self.message = message = self.take()
        if message is None:
            linger = self.idle(self)
            if linger > 0:  # kept for the next message to this destination (woken), as Postfix's connection cache
                self.state, self.expect = "idle", []
                return Reply(alarm=linger)
            self.state = "quit"
            self.expect = ["quit"]
            return Reply((b"QUIT\r\n",), alarm=MAIL_TIMEOUT * self.scale)
        mail = mail_command(message.sender, message.data, utf8=message.utf8, extensions=self.extensions)
        if mail is None:
            self.report(message, [Outcome(r, NO_SMTPUTF8, self.where) for r in message.recipients])
            return self._next()
        self.replies = []
        rcpts = [f"RCPT TO:<{r}>" for r in message.recipients]
        self.state = "transaction"
        if "PIPELINING" in self.extensions:
            self.expect = ["mail", *["rcpt"] * len(rcpts), "data"]
            lines = "".join(f"{c}\r\n" for c in [mail, *rcpts, "DATA"])
            return Reply((lines.encode("utf-8"),), alarm=RCPT_TIMEOUT * self.scale)
        self.expect = ["mail"]
        self.pending_lines = [*rcpts, "DATA"]
        return Reply((mail.encode("utf-8") + b"\r\n",), alarm=MAIL_TIMEOUT * self.scale)

    def _transaction_reply(self, answer: SMTPReply) -> Reply:
        self.replies.append(answer)
        what = self.expect.pop(0)
        if "PIPELINING" not in self.extensions:
            message = self.message
            assert message is not None
            if what == "mail" and not is_positive(answer.code):
                return self._settle()
            last_rcpt = what == "rcpt" and len(self.replies) == 1 + len(message.recipients)
            if last_rcpt and not any(a.code == Code.OK for a in self.replies[1:]):
                self.state = "rset"
                self.expect = ["rset"]
                self._report_now()
                return Reply((b"RSET\r\n",), alarm=MAIL_TIMEOUT * self.scale)
            if self.pending_lines:
                line = self.pending_lines.pop(0)
                self.expect = ["data" if line == "DATA" else "rcpt"]
                timeout = DATA_TIMEOUT if line == "DATA" else RCPT_TIMEOUT
                return Reply((line.encode("utf-8") + b"\r\n",), alarm=timeout * self.scale)
        if self.expect:
            return Reply()
        return self._after_data_command()

    def _after_data_command(self) -> Reply:
        message = self.message
        assert message is not None
        mail_reply, rcpt_replies, data_reply = self.replies[0], self.replies[1:-1], self.replies[-1]
        accepted = is_positive(mail_reply.code) and any(a.code == Code.OK for a in rcpt_replies)
        if data_reply.code == Code.START_MAIL_INPUT and not accepted:
            self.state, self.expect = "discard", ["discard"]
            return Reply((b".\r\n",), alarm=DOT_TIMEOUT * self.scale)
        if data_reply.code != Code.START_MAIL_INPUT or not accepted:
            return self._settle()
        self.state, self.expect = "dot", ["dot"]
        return Reply((dot_stuff(message.data) + b".\r\n",), alarm=DOT_TIMEOUT * self.scale)

    def _outcomes(self, final: SMTPReply | None) -> list[Outcome]:
        message = self.message
        assert message is not None
        mail_reply, rcpt_replies = self.replies[0], self.replies[1 : 1 + len(message.recipients)]
        if not is_positive(mail_reply.code):
            return [Outcome(r, mail_reply, self.where) for r in message.recipients]
        data_reply = self.replies[1 + len(message.recipients)] if len(self.replies) > 1 + len(rcpt_replies) else None
        found = []
        for i, rcpt in enumerate(message.recipients):
            said = rcpt_replies[i] if i < len(rcpt_replies) else mail_reply
            if said.code == Code.OK:
                said = final if final is not None else data_reply if data_reply is not None else said
            found.append(Outcome(rcpt, said, self.where))
        return found

    def _report_now(self, final: SMTPReply | None = None) -> None:
        if self.message is not None:
            outcomes = self._outcomes(final)
            message, self.message = self.message, None
            self.report(message, outcomes)

    def _settle(self) -> Reply:
        self._report_now()
        return self._next()

    def _delivered(self, final: SMTPReply) -> Reply:
        self._report_now(final)
        return self._next()

    # -- the end ------------------------------------------------------------------------------------------------------
    def _fail(self, error: str, how: Close = Close.AT_ONCE) -> Reply:
        self._lost(error)
        if self.state not in ("connect",) and not self.handle.closed and how != Close.RESET:
            return Reply((b"QUIT\r\n",), close=how)
        return Reply(close=how)

    def _lost(self, error: str) -> None:
        """The connection is no use any more: the message in flight is retried later, the runner told once."""
        if self.done:
            return
        message, self.message = self.message, None
        if message is not None:
            self.report(message, [Outcome(r, None, self.where, error) for r in message.recipients])
        self._end(error)

    def _end(self, error: str | None) -> None:
        if not self.done:
            self.done = True
            self.error = error
            self.ended(self, error)


def describe(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
