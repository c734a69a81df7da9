"""The mail client (``sockhop send``): build a message with the email package, find where it goes, and deliver it
over SMTP -- pipelined when the server offers PIPELINING.

Routing follows RFC 5321 section 5.1: ``--server`` if given; otherwise each recipient domain's MX hosts in
preference order, falling back to the domain's own A/AAAA. A host that cannot be reached, or answers 4xx, passes
the recipients it did not take to the next one; a 5xx is final.
"""

from __future__ import annotations

import argparse
import email.policy
import mimetypes
import re
import socket
import ssl
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from sockhop.errors import SockhopError
from sockhop.net.addresses import Endpoint, parse_endpoint, parse_host

from .address import split_address
from .codes import BadReply, Code, SMTPReply, is_positive, is_transient, parse_reply, reply_complete
from .mx import SMTP_PORT, RoutingError, mail_hops

MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100


class SendError(SockhopError):
    """The message could not be sent."""


# -- the message ----------------------------------------------------------------------------------------------------
def build_message(
    sender: str, recipients: list[str], subject: str, body: str, attachments: Iterable[str | Path] = ()
) -> EmailMessage:
    """A proper RFC 5322 message: From, To, Subject, Date, Message-ID, and MIME parts for attachments."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    if subject:
        msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=split_address(sender)[1] or None)
    msg.set_content(body)
    for name in attachments:
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SendError(f"cannot attach {name}: {exc.strerror}") from None
        ctype, encoding = mimetypes.guess_type(path.name)
        if ctype is None or encoding is not None:
            ctype = "application/octet-stream"
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return msg


def needs_smtputf8(sender: str, recipients: Iterable[str]) -> bool:
    return not all(a.isascii() for a in (sender, *recipients))


def to_wire(msg: EmailMessage, *, utf8: bool) -> bytes:
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    return msg.as_bytes(policy=policy)


def dot_stuff(data: bytes) -> bytes:
    """The DATA payload: every line ending made CRLF, a dot doubled at the start of a line, ending in CRLF."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", data)


# -- one SMTP connection --------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What happened to one recipient."""

    recipient: str
    reply: SMTPReply | None  # the server's last word on it; None if no server was reached
    where: str = ""
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.reply is not None and self.reply.code == Code.OK

    @property
    def retry_elsewhere(self) -> bool:
        return self.reply is None or is_transient(self.reply.code)

    def describe(self) -> str:
        said = str(self.reply) if self.reply is not None else self.error
        return f"{self.recipient}: {said}" + (f" (from {self.where})" if self.where else "")


class SMTPConnection:
    """A client conversation over one blocking socket. ``open_smtp`` returns one (greeted); close it when done."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where
        self.file = sock.makefile("rb")
        self.extensions: dict[str, str] = {}

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> SMTPConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_reply(self) -> SMTPReply:
        lines: list[bytes] = []
        while len(lines) < MAX_REPLY_LINES:
            line = self.file.readline(MAX_REPLY_LINE)
            if not line:
                raise SendError(f"{self.where} closed the connection")
            lines.append(line.rstrip(b"\r\n"))
            if reply_complete(lines[-1]):
                return parse_reply(lines)
        raise BadReply(f"{self.where}: reply too long")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def starttls(self, context: ssl.SSLContext, name: str) -> None:
        """STARTTLS (RFC 3207): on 220, the TLS handshake over the same socket, then a new conversation (the
        caller says EHLO again; the extensions offered before are forgotten)."""
        answer = self.command("STARTTLS")
        if answer.code != Code.SERVICE_READY:
            raise SendError(f"{self.where} refused STARTTLS: {answer}")
        self.file.close()
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=name)
        except ssl.SSLCertVerificationError as exc:
            raise SendError(f"{self.where}: TLS certificate rejected: {certificate_problem(exc, name)}") from None
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise SendError(f"{self.where}: TLS handshake failed: {reason}") from None
        self.file = self.sock.makefile("rb")
        self.extensions = {}

    def command(self, line: str) -> SMTPReply:
        self.send(line.encode("utf-8") + b"\r\n")
        return self.read_reply()

    def hello(self, name: str) -> None:
        """EHLO, falling back to HELO for an old server; remembers the extensions offered."""
        answer = self.command(f"EHLO {name}")
        if answer.code == Code.OK:
            for line in answer.lines[1:]:
                keyword, _, value = line.partition(" ")
                self.extensions[keyword.upper()] = value
            return
        answer = self.command(f"HELO {name}")
        if answer.code != Code.OK:
            raise SendError(f"{self.where} refused HELO: {answer}")

    def offers(self, extension: str) -> bool:
        return extension in self.extensions

    def transaction(self, sender: str, recipients: list[str], data: bytes, *, utf8: bool) -> list[Outcome]:
        """MAIL, RCPT..., DATA, the message: pipelined when offered. One Outcome per recipient."""
        params = []
        if self.offers("SIZE"):
            params.append(f"SIZE={len(data)}")
        if self.offers("8BITMIME") and not data.isascii():
            params.append("BODY=8BITMIME")
        if utf8:
            if not self.offers("SMTPUTF8"):
                answer = SMTPReply(Code.MAILBOX_NAME_NOT_ALLOWED, "5.6.7", ("the server does not offer SMTPUTF8",))
                return [Outcome(r, answer, self.where) for r in recipients]
            params.append("SMTPUTF8")
        mail = f"MAIL FROM:<{sender}>" + "".join(f" {p}" for p in params)
        rcpts = [f"RCPT TO:<{r}>" for r in recipients]
        if self.offers("PIPELINING"):
            self.send("".join(f"{c}\r\n" for c in [mail, *rcpts, "DATA"]).encode("utf-8"))
            mail_reply = self.read_reply()
            rcpt_replies = [self.read_reply() for _ in rcpts]
            data_reply = self.read_reply()
        else:
            mail_reply = self.command(mail)
            if not is_positive(mail_reply.code):
                return [Outcome(r, mail_reply, self.where) for r in recipients]
            rcpt_replies = [self.command(c) for c in rcpts]
            if not any(r.code == Code.OK for r in rcpt_replies):
                self.command("RSET")
                return [Outcome(r, a, self.where) for r, a in zip(recipients, rcpt_replies, strict=True)]
            data_reply = self.command("DATA")
        accepted = is_positive(mail_reply.code) and any(a.code == Code.OK for a in rcpt_replies)
        if data_reply.code == Code.START_MAIL_INPUT and not accepted:
            self.send(b".\r\n")  # a server that says 354 with nobody to deliver to gets an empty message (RFC 2920)
            self.read_reply()
        if not is_positive(mail_reply.code):
            return [Outcome(r, mail_reply, self.where) for r in recipients]
        if data_reply.code != Code.START_MAIL_INPUT or not accepted:
            return [Outcome(r, a if a.code != Code.OK else data_reply, self.where)
                    for r, a in zip(recipients, rcpt_replies, strict=True)]  # fmt: skip
        self.send(dot_stuff(data) + b".\r\n")
        final = self.read_reply()
        return [Outcome(r, final if a.code == Code.OK else a, self.where)
                for r, a in zip(recipients, rcpt_replies, strict=True)]  # fmt: skip

    def quit(self) -> None:
        try:
            self.command("QUIT")
        except (OSError, SockhopError):
            pass


TLS_MODES = ("required", "opportunistic", "off")


def certificate_problem(exc: ssl.SSLCertVerificationError, name: str) -> str:
    """What was wrong with a certificate, in words a user acts on: expired, wrong name, untrusted."""
    code, detail = exc.verify_code, exc.verify_message or str(exc)
    if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
        return f"expired ({detail})"
    if code == 9:  # X509_V_ERR_CERT_NOT_YET_VALID
        return f"not yet valid ({detail})"
    if code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH / IP_ADDRESS_MISMATCH (64)
        return f"wrong name: it is not valid for {name} ({detail})"
    if code == 64:
        return f"wrong address: it is not valid for {name} ({detail})"
    if code in (18, 19, 20, 21, 2):  # self-signed, unknown issuer...
        return f"untrusted: no trusted authority signed it ({detail}; --cacert FILE names another)"
    return detail


def tls_context(mode: str, cafile: str | None) -> ssl.SSLContext | None:
    """The client context for ``--tls``: ``required`` verifies the certificate and the server's name against
    the system's trust store (or ``--cacert``); ``opportunistic`` encrypts whatever certificate comes, as Postfix's
    ``may`` level does -- unauthenticated TLS still beats plaintext, and refusing would mean plaintext or no mail;
    ``off`` never starts TLS."""
    if mode == "off":
        return None
    if mode == "opportunistic" and cafile is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        try:
            context = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise SendError(f"cannot use --cacert {cafile}: {reason}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def open_smtp(
    host: str, port: int, *, timeout: float, helo: str, tls: str = "opportunistic",
    context: ssl.SSLContext | None = None, name: str | None = None,
) -> SMTPConnection:  # fmt: skip
    """Connect, read the greeting, say EHLO, and STARTTLS as ``tls`` says (``context`` from :func:`tls_context`;
    ``name``: the name the certificate must carry). Raises SendError (or OSError) when the server cannot be used."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise SendError(f"cannot connect to {where}: {exc.strerror or exc}") from None
    conn = SMTPConnection(sock, where)
    try:
        greeting = conn.read_reply()
        if greeting.code != Code.SERVICE_READY:
            raise SendError(f"{where} is not taking mail: {greeting}")
        conn.hello(helo)
        if tls != "off" and conn.offers("STARTTLS"):
            conn.starttls(context or tls_context(tls, None), name or host)
            conn.hello(helo)
        elif tls == "required":
            raise SendError(f"{where} does not offer STARTTLS, and --tls required")
    except BaseException:
        conn.close()
        raise
    return conn


# -- routing --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    """Where to try, in order: (address, port, name) -- the name is what the server's certificate must carry."""

    hops: tuple[tuple[str, int, str], ...]


def server_endpoint(text: str, port: int = SMTP_PORT) -> Endpoint:
    """``host:port``, ``[v6]:port``, or a bare host (then ``port``)."""
    if ":" not in text:
        return Endpoint(parse_host(text), port)
    endpoint = parse_endpoint(text, default_port=port)
    return Endpoint(parse_host(endpoint.host), endpoint.port)  # a host is needed: ":2525" names no server


def route_for(domain: str, *, dns: str | None, port: int | None) -> Route:
    """The mail exchangers of ``domain``, best first, each at every address it has. Raises RoutingError."""
    hops = mail_hops(domain, dns, port)
    if not hops:
        raise RoutingError(f"{domain}: no address for its mail exchangers")
    return Route(tuple(hops))


def deliver(
    sender: str, recipients: list[str], data: bytes, *, server: str | None = None, dns: str | None = None,
    port: int | None = None, timeout: float = 30.0, helo: str | None = None, tls: str = "opportunistic",
    cafile: str | None = None,
) -> list[Outcome]:  # fmt: skip
    """Deliver ``data`` to every recipient; one Outcome each, never raising for a recipient's failure."""
    helo = helo or socket.gethostname()
    context = tls_context(tls, cafile)
    utf8 = needs_smtputf8(sender, recipients)
    outcomes: dict[str, Outcome] = {}
    for route, rcpts in _routes(recipients, server, dns, port, outcomes):
        waiting = list(rcpts)
        for host, hop_port, name in route.hops:
            if not waiting:
                break
            try:
                with open_smtp(host, hop_port, timeout=timeout, helo=helo, tls=tls, context=context, name=name) as conn:
                    results = conn.transaction(sender, waiting, data, utf8=utf8)
                    conn.quit()
            except (OSError, SockhopError) as exc:
                message = str(exc) if isinstance(exc, SockhopError) else f"{host}:{hop_port}: {exc.strerror or exc}"
                for rcpt in waiting:
                    outcomes[rcpt] = Outcome(rcpt, None, error=message)
                continue
            for result in results:
                outcomes[result.recipient] = result
            waiting = [r.recipient for r in results if r.retry_elsewhere]
    return [outcomes[r] for r in recipients]


def _routes(
    recipients: list[str], server: str | None, dns: str | None, port: int | None, outcomes: dict[str, Outcome]
) -> list[tuple[Route, list[str]]]:
    """Recipients grouped by route; those whose domain cannot be routed get their Outcome at once."""
    if server:
        endpoint = server_endpoint(server, port or SMTP_PORT)
        return [(Route(((endpoint.host, endpoint.port, endpoint.host),)), recipients)]
    by_domain: dict[str, list[str]] = {}
    for rcpt in recipients:
        by_domain.setdefault(split_address(rcpt)[1], []).append(rcpt)
    found = []
    for domain, rcpts in by_domain.items():
        try:
            found.append((route_for(domain, dns=dns, port=port), rcpts))
        except RoutingError as exc:
            for rcpt in rcpts:
                outcomes[rcpt] = Outcome(rcpt, None, error=str(exc))
    return found


# -- the command ----------------------------------------------------------------------------------------------------
def send_command(args: argparse.Namespace) -> int:
    """``sockhop send``: one line per recipient; exit 1 if any was not delivered."""
    from .address import AddressSyntaxError, check_mailbox

    if not args.sender:
        import getpass

        args.sender = f"{getpass.getuser()}@{socket.gethostname()}"  # as sendmail(1) does
    for address in (args.sender, *args.to):
        try:
            check_mailbox(address, utf8=True)
        except AddressSyntaxError as exc:
            raise SendError(f"bad address {address!r}: {exc}") from None
    body = args.body if args.body is not None else sys.stdin.read()
    msg = build_message(args.sender, args.to, args.subject, body, args.attach)
    utf8 = needs_smtputf8(args.sender, args.to)
    data = to_wire(msg, utf8=utf8)
    outcomes = deliver(
        args.sender, args.to, data, server=args.server, dns=args.dns, port=args.port,
        timeout=args.timeout, helo=args.helo, tls=args.tls, cafile=args.cacert,
    )  # fmt: skip
    failed = 0
    for outcome in outcomes:
        if outcome.delivered:
            print(f"{outcome.recipient}: delivered via {outcome.where}: {outcome.reply}")
        else:
            failed += 1
            print(f"sockhop: {outcome.describe()}", file=sys.stderr)
    return 1 if failed else 0
