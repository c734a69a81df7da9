"""The server side of SMTP (RFC 5321) as a sans-IO state machine: fed bytes, it answers with engine Replies.

One method per verb (``smtp_MAIL``), collected by name; the legal moves sit in one table, ``TRANSITIONS``: a verb
missing from the current state's row gets 503 naming the state, and a verb whose reply is positive moves to the
state the row names. The message itself goes to a :class:`Mailstore` in ``Reply.then``, so the fsync that makes
delivery durable runs where it stalls no other connection, and the 250 is sent only after it returned.

The end of data is exactly CRLF "." CRLF. A bare CR or LF anywhere in the message gets the whole message refused
(the 2023 "SMTP smuggling" attacks hide a second message behind ``LF . LF``), so no other line ending around a dot
can end a message early or smuggle one in -- here or in whatever reads the Maildir later.

Extensions advertised and honoured: PIPELINING (replies to a batch go out together), SIZE (refused at MAIL FROM's
SIZE= and again at the end of data), 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8, and STARTTLS (RFC 3207) when the
server has a certificate: the 220 is followed by the engine's ``START_TLS`` marker (the TLS layer around this
protocol then does the handshake), whatever the client pipelined after its STARTTLS is thrown away -- commands
sent in plaintext must never count as sent under TLS -- and the session starts over: the client says EHLO again.

AUTH (RFC 4954: PLAIN and LOGIN) is offered only under TLS and only when the server has users. The password check
(an scrypt) runs in ``Reply.then``; a failed login is answered 535 only after a delay (``auth_delay``, doubling
with each failure) by a timer of the engine's (``handle.call_later``), so guessing is slow, no thread sleeps, and
what the client sends meanwhile is kept, not answered; after
``max_auth_failures`` the client is shown the door. On a submission port (RFC 6409) MAIL needs a login first, and
an authenticated user may only use their own addresses as the sender (unless the policy says otherwise).

Relaying: a recipient outside the server's domains is accepted only from an authenticated user or a peer in
``relay_networks``, and only when the store can queue remote mail; everyone else gets 550 5.7.1.
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from sockhop.engine.protocol import NOTHING, START_TLS, Address, Close, Handoff, Reply, Results, StreamProtocol
from sockhop.net.addresses import format_address, peer_ip

from .address import AddressSyntaxError, check_mailbox, parse_path, split_address
from .auth import MECHANISMS, Exchange, SASLError, User, Users
from .codes import Code, SMTPReply, reply

log = logging.getLogger("sockhop.mail")

MAX_COMMAND_LINE = 2048  # RFC 5321 says 512 octets, plus what extensions add; generous, still bounded
MAX_TEXT_LINE = 1000  # octets including CRLF (RFC 5321 4.5.3.1.6)
DEFAULT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_RECIPIENTS = 100  # RFC 5321 4.5.3.1.8: at least 100 must be accepted
DEFAULT_MAX_ERRORS = 20  # bogus commands before a client is shown the door (as Postfix's smtpd_hard_error_limit)
#: RFC 5321 4.5.3.2: a client gets 5 minutes for each command and 10 for the whole message ("DATA termination").
#: These are deadlines, kept with ``Reply.alarm``: a client trickling a byte a second does not stretch them.
DEFAULT_COMMAND_TIMEOUT = 300.0
DEFAULT_DATA_TIMEOUT = 600.0


class State(enum.Enum):
    START = "start"  # greeted the client; no EHLO/HELO yet
    READY = "ready"  # EHLO/HELO done, no mail transaction
    MAIL = "mail"  # MAIL FROM accepted
    RCPT = "rcpt"  # at least one RCPT TO accepted
    DATA = "data"  # receiving the message
    DELIVERING = "delivering"  # the message is being made durable (Reply.then)
    WAITING = "waiting"  # a failed login's delay: what the client sends is kept until it is answered
    CLOSED = "closed"


S = State
#: Legal moves: for each state, the verbs it accepts and the state a positive reply leads to. A verb missing from
#: a row is a bad sequence (503); a negative reply leaves the state as it was.
TRANSITIONS: dict[State, dict[str, State]] = {
    S.START: {
        "EHLO": S.READY, "HELO": S.READY, "RSET": S.START, "NOOP": S.START, "HELP": S.START, "VRFY": S.START,
        "QUIT": S.CLOSED,
    },
    S.READY: {
        "EHLO": S.READY, "HELO": S.READY, "RSET": S.READY, "NOOP": S.READY, "HELP": S.READY, "VRFY": S.READY,
        "QUIT": S.CLOSED, "MAIL": S.MAIL, "STARTTLS": S.START, "AUTH": S.READY,
    },
    S.MAIL: {
        "EHLO": S.READY, "HELO": S.READY, "RSET": S.READY, "NOOP": S.MAIL, "HELP": S.MAIL, "VRFY": S.MAIL,
        "QUIT": S.CLOSED, "RCPT": S.RCPT,
    },
    S.RCPT: {
        "EHLO": S.READY, "HELO": S.READY, "RSET": S.READY, "NOOP": S.RCPT, "HELP": S.RCPT, "VRFY": S.RCPT,
        "QUIT": S.CLOSED, "RCPT": S.RCPT, "DATA": S.DATA,
    },
    S.DATA: {},  # bytes are message text, not commands
    S.DELIVERING: {},
    S.WAITING: {},
    S.CLOSED: {},
}  # fmt: skip

#: Verbs of other extensions and of the past: recognised, so they get 502 rather than 500.
NOT_IMPLEMENTED = frozenset({"EXPN", "TURN", "ETRN", "SEND", "SOML", "SAML", "BDAT", "ATRN"})
DEFAULT_AUTH_DELAY = 1.0  # seconds before a failed login is answered, doubling with each failure
DEFAULT_MAX_AUTH_FAILURES = 3  # failed logins before the connection is closed


@dataclass(frozen=True)
class MailPolicy:
    """What this server accepts. ``recipients``: local parts (or whole addresses) that exist; None: any."""

    hostname: str
    domains: frozenset[str]
    recipients: frozenset[str] | None = None
    max_size: int = DEFAULT_MAX_SIZE
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    max_errors: int = DEFAULT_MAX_ERRORS
    starttls: bool = False  # a TLS layer (implicit=False) wraps the protocol: offer STARTTLS
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT  # seconds for the next whole command line to arrive
    data_timeout: float = DEFAULT_DATA_TIMEOUT  # seconds from 354 for the whole message to arrive
    #: Told of every message accepted (--message-log): (peer, sender, recipients, size, queue id).
    message_log: Callable[[Address, str, list[str], int, str], None] | None = None
    users: Users | None = None  # who may log in (AUTH offered under TLS); None: no AUTH
    submission: bool = False  # RFC 6409: MAIL needs a login first
    sender_login_match: bool = True  # a logged-in user may only send as their own addresses
    auth_delay: float = DEFAULT_AUTH_DELAY
    max_auth_failures: int = DEFAULT_MAX_AUTH_FAILURES
    relay_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # may relay without a login

    def relays_for(self, peer: Address) -> bool:
        """Whether ``peer`` is in ``relay_networks``."""
        if not self.relay_networks or not isinstance(peer, tuple):
            return False
        ip = peer_ip(peer)
        return ip is not None and any(ip in network for network in self.relay_networks)


@dataclass
class Session:
    """What lasts for the whole connection."""

    peer: Address = None
    local: Address = None
    helo: str = ""
    esmtp: bool = False
    tls: bool = False  # the conversation is encrypted (SMTPS, or after STARTTLS)
    user: User | None = None  # logged in with AUTH


@dataclass
class Envelope:
    """One mail transaction: MAIL FROM, RCPT TO and the message (CRLF turned into LF, dots unstuffed)."""

    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    smtputf8: bool = False
    eight_bit: bool = False
    content: bytes = b""


class Mailstore(Protocol):
    """Where accepted mail goes (``maildir.Maildir``)."""

    def accepts(self, local_part: str) -> bool:
        """Whether a mailbox can exist under this name (no ``/``, no leading dot...)."""
        ...

    # A store may also say ``relays = True``: it queues mail for other domains (``router.Router`` with a spool).

    def deliver(self, session: Session, envelope: Envelope) -> str:
        """Store the message durably for every recipient, or raise OSError. Returns a queue id for the 250."""
        ...

    # A store may also offer ``submit(session, envelope, done)``: deliver in the background and call ``done`` with
    # the queue id or the OSError, from any thread. The protocol then hands it the message (:class:`_Handed`) and
    # no engine thread waits for the disk: the store can make many messages durable at once (group commit).


class _Handed(Handoff):
    """The message at the end of DATA, handed to a store that submits: the engine resumes the session when the
    store calls back."""

    __slots__ = ("server",)

    def __init__(self, server: SMTPServer) -> None:
        self.server = server

    def start(self, done: Callable[[object], None]) -> None:
        server = self.server
        server.store.submit(server.session, server.envelope, done)  # type: ignore[attr-defined]

    def finish(self, result: object) -> Reply:
        return self.server._delivered(result)


def syntax(text: str) -> Callable:
    """Keep a verb's HELP text beside its code."""

    def mark(method: Callable) -> Callable:
        method.syntax = text  # type: ignore[attr-defined]
        return method

    return mark


def _ok(status: str = "2.0.0", text: str = "Ok") -> SMTPReply:
    return reply(Code.OK, status, text)


#: What smtp_AUTH answers when it has the credentials: no reply yet, the check runs in Reply.then.
_CHECKING = SMTPReply(0, "", ("checking",))


class SMTPServer(StreamProtocol):
    """One SMTP conversation. ``policy`` says what is accepted, ``store`` keeps it."""

    VERBS: dict[str, Callable[[SMTPServer, str], SMTPReply]] = {}
    #: With --admin: one "accepted" per message stored (250), one "refused" per refusal of a message -- of its
    #: announced size (MAIL FROM ... SIZE=), of one of its recipients (RCPT TO) or of its text (after DATA) --
    #: with the reply code (4xx: try later; 5xx: for good). Syntax errors and bad sequences are not counted. A failed
    #: login counts as "login-failed" with its 535.
    results = Results("sockhop_smtp_messages", "Mail messages accepted or refused, by reply code", ("result", "code"))

    def __init__(self, policy: MailPolicy, store: Mailstore, *, tls: bool = False) -> None:
        """``tls``: the connection is already encrypted (SMTPS: the TLS layer greets after its handshake)."""
        self.policy = policy
        self.store = store
        self.store_submits = hasattr(store, "submit")  # hands messages over rather than blocking a thread
        self.state = State.START
        self.session = Session(tls=tls)
        self.starting_tls = False  # STARTTLS was answered 220: the switch goes last in this reply
        self.envelope = Envelope()
        self.buffer = bytearray()
        self.errors = 0
        self.rcpt_refused = 0  # RCPTs refused in this transaction: DATA then gets 554 rather than 503
        self.skipping = False  # discarding the rest of an over-long command line
        self.quit = False  # the client said QUIT
        self.stopping = False
        # the message being received
        self.parts: list[bytes] = []
        self.size = 0
        self.fault: SMTPReply | None = None
        self.mid_line = False  # discarding the rest of an over-long text line
        # AUTH
        self.sasl: Exchange | None = None  # an exchange waiting for the client's next response
        self.credentials: tuple[str, str] | None = None  # to check in Reply.then
        self.auth_failures = 0
        self.waited_in = State.START  # the state a failed login's delay returns to
        # a server with users answers failed logins later, on the engine's timers: it asks for a handle (the
        # engine reads this once per connection; servers without users cost nothing more)
        self.wakeable = policy.users is not None

    # -- the engine's side -------------------------------------------------------------------------------------
    def connection_made(self, peer: Address, local: Address) -> Reply:
        self.session.peer, self.session.local = peer, local
        greeting = reply(Code.SERVICE_READY, "", f"{self.policy.hostname} ESMTP sockhop").format()
        return Reply((greeting,), alarm=self.policy.command_timeout)

    def data_received(self, data: bytes) -> Reply:
        self.buffer += data
        if self.state is State.DELIVERING or self.state is State.WAITING:  # kept for later
            return NOTHING
        return self._advance()

    def eof_received(self) -> Reply:
        """The client is gone: a message still arriving is dropped (it never got its 250)."""
        self._reset_transaction()
        self.state = State.CLOSED
        return Reply(close=True)

    def stop_requested(self) -> Reply:
        """Between commands: 421 and close at once. Mid-message: let it finish, then 421 after its reply."""
        self.stopping = True
        if self.state in (State.DATA, State.DELIVERING, State.CLOSED):
            return NOTHING
        self.state = State.CLOSED
        return Reply((self._closing("4.3.2", "shutting down").format(),), close=True)

    def timed_out(self) -> Reply:
        """The idle timeout, or a deadline: the next command, or the whole message after 354, did not arrive in
        time. A message still arriving is dropped (it never got its 250)."""
        if self.state is State.DATA:
            log.info("%s: message not complete within %gs, dropped", self._peer(), self.policy.data_timeout)
        self._reset_transaction()
        self.state = State.CLOSED
        return Reply((self._closing("4.4.2", "timeout exceeded").format(),), close=True)

    def connection_lost(self) -> None:
        self.buffer.clear()
        self.parts.clear()

    def _peer(self) -> str:
        return format_address(self.session.peer) if self.session.peer else "?"

    # -- the conversation ----------------------------------------------------------------------------------------
    def _deadline(self) -> float:
        """The alarm for what the client owes next: the whole message in DATA, else the next command."""
        return self.policy.data_timeout if self.state is State.DATA else self.policy.command_timeout

    def _advance(self) -> Reply:
        """Answer every complete command in the buffer (a pipelined batch gets its replies in one Reply); stop at
        the end of a message and hand its delivery to ``Reply.then``.

        The alarm is set again only when something complete was answered: bytes that complete nothing (a client
        trickling) leave the deadline where it was."""
        out: list[bytes] = []
        while self.state is not State.CLOSED:
            if self.state is State.DATA:
                if not self._take_data():
                    break
                fault = self._end_of_data()
                if fault is None:
                    then = _Handed(self) if self.store_submits else self._deliver
                    return Reply(tuple(out), then=then, alarm=0)  # no deadline while the disk works
                out.append(fault.format())
                continue
            line = self._take_line()
            if line is None:
                break
            if not isinstance(line, bytes):
                answer = line
            elif self.sasl is not None:
                answer = self._auth_response(line)
            else:
                answer = self._command(line)
            if answer is _CHECKING:  # the password check is blocking work: off the event loop
                return Reply(tuple(out), then=self._check_login, alarm=0)
            out.append(answer.format())
            if self.starting_tls:  # RFC 3207: nothing sent before the handshake counts after it
                self.starting_tls = False
                self.buffer.clear()
                self.skipping = False
                return Reply((*out, START_TLS), alarm=self.policy.command_timeout)
            if self.errors >= self.policy.max_errors and self.state is not State.CLOSED:
                out.append(self._closing("4.7.0", "too many errors").format())
                self.state = State.CLOSED
        if self.stopping and self.state not in (State.DATA, State.CLOSED):
            out.append(self._closing("4.3.2", "shutting down").format())
            self.state = State.CLOSED
        if self.state is not State.CLOSED:
            return Reply(tuple(out), alarm=self._deadline() if out else None)
        # After QUIT and nothing behind it the client sends no more: close as soon as the 221 is out (no lingering
        # half-close). Any other end (errors, shutdown) lingers, so input still on its way cannot destroy the reply.
        return Reply(tuple(out), close=Close.AT_ONCE if self.quit and not self.buffer else Close.LINGER)

    def _deliver(self) -> Reply:
        """Runs in Reply.then: store the message (fsync and all), answer, then go on with pipelined input."""
        try:
            result: str | OSError = self.store.deliver(self.session, self.envelope)
        except OSError as exc:
            result = exc
        return self._delivered(result)

    def _delivered(self, result: object) -> Reply:
        """The store has the message durably (a queue id) or failed (an exception): answer, then go on."""
        if isinstance(result, BaseException):
            log.error("delivery failed: %s", result)
            if isinstance(result, OSError) and result.errno in (errno.ENOSPC, errno.EDQUOT):
                answer = reply(Code.INSUFFICIENT_STORAGE, "4.3.1", "insufficient system storage, try again later")
            else:
                answer = reply(Code.LOCAL_ERROR, "4.3.0", "delivery failed, try again later")
        else:
            answer = _ok("2.0.0", f"Ok: queued as {result}")
            log.info("%s: delivered to %d recipient(s)", result, len(self.envelope.recipients))
            if self.policy.message_log is not None:
                envelope = self.envelope
                self.policy.message_log(
                    self.session.peer, envelope.sender, envelope.recipients, len(envelope.content), str(result)
                )
        if self.on_result is not None:
            self._count(answer.code)
        self._reset_transaction()
        self.state = State.READY
        rest = self._advance()
        alarm = self._deadline() if rest.alarm is None else rest.alarm
        return Reply((answer.format(), *rest.send), rest.close, rest.then, alarm)

    def _then_go_on(self, answer: SMTPReply) -> Reply:
        """``answer``, then whatever the client pipelined behind the command it answers."""
        rest = self._advance()
        alarm = self._deadline() if rest.alarm is None else rest.alarm
        return Reply((answer.format(), *rest.send), rest.close, rest.then, alarm)

    # -- AUTH ------------------------------------------------------------------------------------------------------
    def _auth_response(self, line: bytes) -> SMTPReply:
        """A line of an AUTH exchange: the client's base64 response, or ``*`` to cancel."""
        assert self.sasl is not None
        text = line.decode("utf-8", "replace").strip()
        if text == "*":
            self.sasl = None
            return self._error(Code.PARAMETER_SYNTAX, "5.0.0", "authentication cancelled")
        return self._sasl_step(lambda: self.sasl.step(text))  # type: ignore[union-attr]

    def _sasl_step(self, step: Callable[[], tuple[str, object]]) -> SMTPReply:
        try:
            kind, value = step()
        except SASLError as exc:
            self.sasl = None
            return self._error(Code.PARAMETER_SYNTAX, "5.5.2", f"cannot decode response: {exc}")
        if kind == "challenge":
            return reply(Code.AUTH_CONTINUE, "", str(value))
        self.sasl = None
        self.credentials = value  # type: ignore[assignment]
        return _CHECKING

    def _check_login(self) -> Reply:
        """Runs in Reply.then: the scrypt. A success is answered at once; a failure after the delay (the alarm)."""
        assert self.credentials is not None and self.policy.users is not None
        name, password = self.credentials
        self.credentials = None
        user = self.policy.users.verify(name, password)
        if user is not None:
            self.session.user = user
            log.info("%s: logged in as %s", self._peer(), user.name)
            return self._then_go_on(reply(Code.AUTH_SUCCEEDED, "2.7.0", "Authentication successful"))
        self.auth_failures += 1
        if self.on_result is not None:
            self.on_result("login-failed", str(int(Code.AUTH_FAILED)))
        log.warning("%s: failed login for %r (%d on this connection, %d in all)",
                    self._peer(), name[:64], self.auth_failures, self.policy.users.failures)  # fmt: skip
        delay = self.policy.auth_delay * 2 ** (self.auth_failures - 1)
        self.waited_in, self.state = self.state, State.WAITING
        # this runs off the engine's thread (Reply.then): the timer is set from the engine's, where timers are set
        self.handle.call_soon(lambda: self._wait(delay))
        return Reply(alarm=0)

    def _wait(self, delay: float) -> Reply:
        self.handle.call_later(delay, self._waited)
        return NOTHING

    def _waited(self) -> Reply:
        if self.state is not State.WAITING:  # stopped or timed out meanwhile
            return NOTHING
        self.state = self.waited_in
        return self._login_failed()

    def _login_failed(self) -> Reply:
        """The delay after a failed login is over: 535, or the door after too many."""
        answer = reply(Code.AUTH_FAILED, "5.7.8", "Authentication credentials invalid")
        self.errors += 1
        if self.auth_failures >= self.policy.max_auth_failures:
            self.state = State.CLOSED
            closing = self._closing("4.7.0", "too many failed logins")
            return Reply((answer.format(), closing.format()), close=Close.LINGER)
        return self._then_go_on(answer)

    def _can_auth(self) -> bool:
        return self.policy.users is not None and self.session.tls

    def _take_line(self) -> bytes | SMTPReply | None:
        """The next command line without its line ending, a 500 for an over-long one, or None for "need more"."""
        buf = self.buffer
        end = buf.find(b"\n")
        if self.skipping:
            if end < 0:
                buf.clear()
                return None
            del buf[: end + 1]
            self.skipping = False
            end = buf.find(b"\n")
        if end < 0:
            if len(buf) > MAX_COMMAND_LINE:
                buf.clear()
                self.skipping = True
                return self._error(Code.SYNTAX_ERROR, "5.5.2", "line too long")
            return None
        line = bytes(buf[:end])
        del buf[: end + 1]
        if len(line) >= MAX_COMMAND_LINE:
            return self._error(Code.SYNTAX_ERROR, "5.5.2", "line too long")
        return line[:-1] if line.endswith(b"\r") else line

    def _command(self, line: bytes) -> SMTPReply:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(Code.SYNTAX_ERROR, "5.5.2", "command is not valid UTF-8")
        if not text.isprintable():
            return self._error(Code.SYNTAX_ERROR, "5.5.2", "control characters in command")
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        handler = self.VERBS.get(verb)
        if handler is None:
            if verb in NOT_IMPLEMENTED:
                return self._error(Code.NOT_IMPLEMENTED, "5.5.1", f"{verb} not implemented")
            return self._error(Code.SYNTAX_ERROR, "5.5.2", "command not recognized")
        target = TRANSITIONS[self.state].get(verb)
        if target is None:
            return self._bad_sequence(verb)
        answer = handler(self, arg.strip())
        if answer.code < 400:
            self.state = target
        return answer

    def _bad_sequence(self, verb: str) -> SMTPReply:
        if verb == "DATA" and self.state is State.MAIL and self.rcpt_refused:
            return reply(Code.TRANSACTION_FAILED, "5.5.1", "no valid recipients")
        hints = {
            State.START: "send EHLO or HELO first",
            State.READY: "send MAIL FROM first",
            State.MAIL: "send RCPT TO first" if verb == "DATA" else "a transaction is already open",
            State.RCPT: "a transaction is already open",
        }
        hint = hints.get(self.state, "")
        return self._error(Code.BAD_SEQUENCE, "5.5.1", f"bad sequence of commands: {verb} in state {self.state.name}"
                           + (f"; {hint}" if hint else ""))  # fmt: skip

    def _error(self, code: Code, status: str, text: str) -> SMTPReply:
        self.errors += 1
        return reply(code, status, text)

    def _count(self, code: int) -> None:
        assert self.on_result is not None
        self.on_result("accepted" if code < 400 else "refused", str(int(code)))

    def _closing(self, status: str, why: str) -> SMTPReply:
        return reply(Code.SERVICE_UNAVAILABLE, status, f"{self.policy.hostname} {why}, closing connection")

    def _reset_transaction(self) -> None:
        self.envelope = Envelope()
        self.rcpt_refused = 0
        self.parts = []
        self.size = 0
        self.fault = None
        self.mid_line = False

    # -- message text --------------------------------------------------------------------------------------------
    def _take_data(self) -> bool:
        """Consume message lines from the buffer; True once the line "." has been consumed.

        The buffer always starts at the start of a line (only whole lines are consumed), so the end of data is
        ``.CRLF`` at the start or ``CRLF.CRLF`` anywhere; CRLFs cannot overlap, so every match is a real line
        boundary.
        """
        buf = self.buffer
        if self.mid_line:
            end = buf.find(b"\r\n")
            if end < 0:
                del buf[:-1]  # the last byte may be the CR of the CRLF that ends this line
                return False
            del buf[: end + 2]
            self.mid_line = False
        if buf.startswith(b".\r\n"):
            end = 0
        else:
            end = buf.find(b"\r\n.\r\n")
            end = end + 2 if end >= 0 else -1
        if end >= 0:
            self._keep(bytes(buf[:end]))
            del buf[: end + 3]
            return True
        cut = buf.rfind(b"\r\n")
        if cut >= 0:
            self._keep(bytes(buf[: cut + 2]))
            del buf[: cut + 2]
        if len(buf) > MAX_TEXT_LINE:
            self._fault(reply(Code.TRANSACTION_FAILED, "5.6.0", f"line longer than {MAX_TEXT_LINE} octets"))
            self.size += len(buf) - 1
            self.mid_line = True
            del buf[:-1]
        return False

    def _keep(self, segment: bytes) -> None:
        """Whole lines (each ending in CRLF): check them, unstuff dots, keep them with LF line ends."""
        if not segment:
            return
        self.size += len(segment)
        if self.fault is not None:
            return
        if self.size > self.policy.max_size:
            self._fault(reply(Code.EXCEEDED_STORAGE, "5.3.4", "message size exceeds fixed maximum message size"))
            return
        crlf = segment.count(b"\r\n")
        if segment.count(b"\n") != crlf or segment.count(b"\r") != crlf:
            self._fault(reply(Code.TRANSACTION_FAILED, "5.6.0", "bare CR or LF in message: lines end in CRLF"))
            return
        lines = segment.split(b"\r\n")
        lines.pop()  # after the last CRLF
        if len(segment) > MAX_TEXT_LINE and max(map(len, lines)) > MAX_TEXT_LINE - 2:
            self._fault(reply(Code.TRANSACTION_FAILED, "5.6.0", f"line longer than {MAX_TEXT_LINE} octets"))
            return
        if segment.startswith(b".") or b"\r\n." in segment:
            lines = [line[1:] if line.startswith(b".") else line for line in lines]
        lines.append(b"")
        self.parts.append(b"\n".join(lines))

    def _fault(self, answer: SMTPReply) -> None:
        if self.fault is None:
            self.fault = answer
            self.parts = []

    def _end_of_data(self) -> SMTPReply | None:
        """The message is complete: a refusal, or None to deliver it."""
        fault = self.fault
        if fault is not None:
            if self.on_result is not None:
                self._count(fault.code)
            self._reset_transaction()
            self.state = State.READY
            return fault
        self.envelope.content = b"".join(self.parts)
        self.parts = []
        self.state = State.DELIVERING
        return None

    # -- the verbs -----------------------------------------------------------------------------------------------
    def _greet(self, arg: str, esmtp: bool) -> SMTPReply | None:
        if not arg or " " in arg:
            return self._error(Code.PARAMETER_SYNTAX, "5.5.4", f"Syntax: {'EHLO' if esmtp else 'HELO'} hostname")
        self._reset_transaction()
        self.session.helo = arg
        self.session.esmtp = esmtp
        return None

    @syntax("EHLO hostname")
    def smtp_EHLO(self, arg: str) -> SMTPReply:
        refused = self._greet(arg, esmtp=True)
        if refused is not None:
            return refused
        extensions = ["PIPELINING", f"SIZE {self.policy.max_size}", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]
        if self._can_starttls():
            extensions.append("STARTTLS")
        if self._can_auth():
            extensions.append("AUTH " + " ".join(MECHANISMS))
        return reply(Code.OK, "", f"{self.policy.hostname} Hello {arg}", *extensions, "HELP")

    def _can_starttls(self) -> bool:
        return self.policy.starttls and not self.session.tls

    @syntax("STARTTLS")
    def smtp_STARTTLS(self, arg: str) -> SMTPReply:
        if self.session.tls:
            return self._error(Code.BAD_SEQUENCE, "5.5.1", "TLS already active")
        if not self.policy.starttls:
            return self._error(Code.NOT_IMPLEMENTED, "5.5.1", "STARTTLS not available: the server has no certificate")
        if arg:
            return self._error(Code.PARAMETER_SYNTAX, "5.5.4", "Syntax: STARTTLS")
        self._reset_transaction()
        self.session = Session(peer=self.session.peer, local=self.session.local, tls=True)  # EHLO again (RFC 3207)
        self.starting_tls = True
        return reply(Code.SERVICE_READY, "2.0.0", "Ready to start TLS")

    @syntax("AUTH mechanism [initial-response]")
    def smtp_AUTH(self, arg: str) -> SMTPReply:
        if self.policy.users is None:
            return self._error(Code.NOT_IMPLEMENTED, "5.5.1", "AUTH not available here")
        if not self.session.tls:
            return self._error(Code.ENCRYPTION_REQUIRED, "5.7.11", "Must issue a STARTTLS command first")
        if self.session.user is not None:
            return self._error(Code.BAD_SEQUENCE, "5.5.1", "already authenticated")
        mechanism, _, initial = arg.partition(" ")
        if mechanism.upper() not in MECHANISMS:
            return self._error(
                Code.PARAMETER_NOT_IMPLEMENTED, "5.5.4", f"unrecognized authentication type {mechanism[:20]!r}"
            )
        self.sasl = Exchange(mechanism)
        first = initial.strip() or None
        return self._sasl_step(lambda: self.sasl.start(first))  # type: ignore[union-attr]

    @syntax("HELO hostname")
    def smtp_HELO(self, arg: str) -> SMTPReply:
        refused = self._greet(arg, esmtp=False)
        return refused or reply(Code.OK, "", self.policy.hostname)

    @syntax("MAIL FROM:<address> [SIZE=octets] [BODY=7BIT|8BITMIME] [SMTPUTF8]")
    def smtp_MAIL(self, arg: str) -> SMTPReply:
        try:
            sender, params = parse_path(arg, "FROM")
            if params and not self.session.esmtp:
                return self._error(Code.PARAMETERS_NOT_RECOGNIZED, "5.5.4", "parameters need EHLO")
            smtputf8 = "SMTPUTF8" in params
            if sender:
                check_mailbox(sender, utf8=smtputf8)
        except AddressSyntaxError as exc:
            return self._error(Code(exc.hint or Code.PARAMETER_SYNTAX), "5.1.7", f"sender: {exc}")
        user = self.session.user
        if self.policy.submission and user is None:
            return self._error(Code.AUTH_REQUIRED, "5.7.0", "Authentication required")
        if user is not None and sender and not self._may_send_as(user, sender):
            return self._error(
                Code.MAILBOX_NAME_NOT_ALLOWED, "5.7.1", f"<{sender}>: sender address not owned by {user.name}"
            )
        eight_bit = False
        for name, value in params.items():
            if name == "SIZE":
                if value is None or not value.isdigit() or len(value) > 20:
                    return self._error(Code.PARAMETER_SYNTAX, "5.5.4", "Syntax: SIZE=octets")
                if int(value) > self.policy.max_size:
                    if self.on_result is not None:
                        self._count(Code.EXCEEDED_STORAGE)
                    return reply(Code.EXCEEDED_STORAGE, "5.3.4", "message size exceeds fixed maximum message size")
            elif name == "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    return self._error(Code.PARAMETER_SYNTAX, "5.5.4", "Syntax: BODY=7BIT or BODY=8BITMIME")
                eight_bit = value.upper() == "8BITMIME"
            elif name == "SMTPUTF8":
                if value is not None:
                    return self._error(Code.PARAMETER_SYNTAX, "5.5.4", "SMTPUTF8 takes no value")
            else:
                return reply(Code.PARAMETERS_NOT_RECOGNIZED, "5.5.4", f"unsupported parameter {name}")
        self._reset_transaction()
        self.envelope.sender = sender
        self.envelope.smtputf8 = smtputf8
        self.envelope.eight_bit = eight_bit
        return _ok("2.1.0")

    @syntax("RCPT TO:<address>")
    def smtp_RCPT(self, arg: str) -> SMTPReply:
        answer = self._recipient(arg)
        if answer.code >= 400:
            self.rcpt_refused += 1
            self.errors += 1  # every refusal counts: a client guessing names is shown the door too
            if self.on_result is not None:
                self._count(answer.code)
        return answer

    def _recipient(self, arg: str) -> SMTPReply:
        utf8 = self.envelope.smtputf8
        try:
            address, params = parse_path(arg, "TO")
            local, domain = split_address(address)
            check_mailbox(address, utf8=utf8, domain_required=local.lower() != "postmaster")
        except AddressSyntaxError as exc:
            return reply(Code(exc.hint or Code.PARAMETER_SYNTAX), "5.1.3", f"recipient: {exc}")
        if params:
            return reply(Code.PARAMETERS_NOT_RECOGNIZED, "5.5.4", f"unsupported parameter {next(iter(params))}")
        if len(self.envelope.recipients) >= self.policy.max_recipients:
            return reply(Code.INSUFFICIENT_STORAGE, "4.5.3", "too many recipients")
        if domain and domain not in self.policy.domains:
            if not self._may_relay():
                return reply(Code.MAILBOX_UNAVAILABLE, "5.7.1", f"<{address}>: relay access denied")
            self.envelope.recipients.append(address)
            return _ok("2.1.5")
        postmaster = local.lower() == "postmaster"  # RFC 5321 4.5.1: must always be accepted
        allowed = self.policy.recipients
        if not postmaster and allowed is not None and local.lower() not in allowed and address.lower() not in allowed:
            return reply(Code.MAILBOX_UNAVAILABLE, "5.1.1", f"<{address}>: no such user here")
        if not self.store.accepts(local):
            return reply(Code.MAILBOX_NAME_NOT_ALLOWED, "5.1.3", f"<{address}>: mailbox name not allowed")
        self.envelope.recipients.append(address if domain else f"{local}@{self.policy.hostname}")
        return _ok("2.1.5")

    def _may_send_as(self, user: User, sender: str) -> bool:
        users = self.policy.users
        return (
            not self.policy.sender_login_match or users is None or users.may_send_as(user, sender, self.policy.domains)
        )

    def _may_relay(self) -> bool:
        """Mail for other domains: only into a queue, and only from a logged-in user or a relay network."""
        if not getattr(self.store, "relays", False):
            return False
        return self.session.user is not None or self.policy.relays_for(self.session.peer)

    @syntax("DATA")
    def smtp_DATA(self, arg: str) -> SMTPReply:
        if arg:
            return self._error(Code.PARAMETER_SYNTAX, "5.5.4", "Syntax: DATA")
        self.parts, self.size, self.fault, self.mid_line = [], 0, None, False
        return reply(Code.START_MAIL_INPUT, "", "End data with <CR><LF>.<CR><LF>")

    @syntax("RSET")
    def smtp_RSET(self, arg: str) -> SMTPReply:
        if arg:
            return self._error(Code.PARAMETER_SYNTAX, "5.5.4", "Syntax: RSET")
        self._reset_transaction()
        return _ok()

    @syntax("NOOP [text]")
    def smtp_NOOP(self, arg: str) -> SMTPReply:
        return _ok()

    @syntax("QUIT")
    def smtp_QUIT(self, arg: str) -> SMTPReply:
        if arg:
            return self._error(Code.PARAMETER_SYNTAX, "5.5.4", "Syntax: QUIT")
        self._reset_transaction()
        self.quit = True
        return reply(Code.CLOSING, "2.0.0", "Bye")

    @syntax("VRFY address")
    def smtp_VRFY(self, arg: str) -> SMTPReply:
        if not arg:
            return self._error(Code.PARAMETER_SYNTAX, "5.5.4", "Syntax: VRFY address")
        return reply(Code.CANNOT_VRFY, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery")

    @syntax("HELP [verb]")
    def smtp_HELP(self, arg: str) -> SMTPReply:
        if arg:
            method = self.VERBS.get(arg.upper())
            if method is None:
                return self._error(Code.PARAMETER_SYNTAX, "5.5.4", f"no help for {arg[:20]!r}")
            return reply(Code.HELP, "2.0.0", f"Syntax: {method.syntax}")  # type: ignore[attr-defined]
        return reply(Code.HELP, "2.0.0", "Supported commands: " + " ".join(sorted(self.VERBS)))


SMTPServer.VERBS = {name[5:]: fn for name, fn in vars(SMTPServer).items() if name.startswith("smtp_")}


def busy_reply(hostname: str) -> bytes:
    """What a client over the connection limit is told before the engine closes it."""
    return reply(Code.SERVICE_UNAVAILABLE, "4.3.2", f"{hostname} too many connections, try again later").format()
