"""The mail client (``sockhop send``): build a message with the email package, find where it goes, and deliver it
over SMTP -- pipelined when the server offers PIPELINING.

Routing follows RFC 5321 section 5.1: ``--server`` if given; otherwise each recipient domain's MX hosts in
preference order, falling back to the domain's own A/AAAA. A host that cannot be reached, or answers 4xx, passes
the recipients it did not take to the next one; a 5xx is final.
"""

from __future__ import annotations

import argparse
import base64
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
from typing import TextIO

from sockhop.errors import SockhopError, UsageError
from sockhop.net.addresses import Endpoint, format_host_port, parse_endpoint, parse_host
from sockhop.tlsclient import client_context

from .address import split_address
from .codes import Code, ReplyReader, SMTPReply, is_positive, is_transient
from .mx import SMTP_PORT, RoutingError, mail_hops


class SendError(SockhopError):
    """The message could not be sent."""


# -- the message ----------------------------------------------------------------------------------------------------
def build_message(
    sender: str, recipients: list[str], subject: str, body: str, attachments: Iterable[str | Path] = (),
    cc: Iterable[str] = (),
) -> EmailMessage:  # fmt: skip
    """A proper RFC 5322 message: From, To, Cc, Subject, Date, Message-ID, and MIME parts for attachments. (Bcc
    recipients are in the envelope only: a Bcc header would tell every recipient who else got it.)"""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    if cc := list(cc):
        msg["Cc"] = ", ".join(cc)
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
    if b"\r" not in data:  # LF line ends, as the spool and the Maildir keep them: replace, not a regex (5-10x)
        data = data.replace(b"\n", b"\r\n")
        if data and not data.endswith(b"\r\n"):
            data += b"\r\n"
        if data.startswith(b".") or b"\n." in data:
            data = re.sub(rb"(?m)^\.", b"..", data)
        return data
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", data)


HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 2.2: printable ASCII but the colon


def split_headers(texts: Iterable[str]) -> list[tuple[str, str]]:
    """``--header``/``--add-header`` values as (name, value): ``'Name: value'``, several in one separated by a
    literal ``\\n``, as swaks takes them."""
    found = []
    for text in texts:
        for one in text.split("\\n"):
            name, colon, value = one.partition(":")
            if not colon or not HEADER_NAME.fullmatch(name) or "\r" in value or "\n" in value:
                raise SendError(f"bad header {one!r}: give 'Name: value'")
            found.append((name, value.strip()))
    return found


def set_headers(msg: EmailMessage, replace: list[tuple[str, str]], add: list[tuple[str, str]]) -> None:
    """swaks' ``--header`` (replaces a header the message has, else adds it) and ``--add-header`` (adds)."""
    try:
        for name, value in replace:
            if name in msg:
                msg.replace_header(name, value)
            else:
                msg[name] = value
        for name, value in add:
            msg[name] = value
    except ValueError as exc:
        raise SendError(f"bad header: {exc}") from None


def edit_headers(data: bytes, replace: list[tuple[str, str]], add: list[tuple[str, str]]) -> bytes:
    """The same on a message given whole (``--data``): a replaced header keeps its place (its folded lines go with
    it), a new one goes at the end of the header block; nothing else changes, byte for byte."""
    if not replace and not add:
        return data
    eol = b"\r\n" if b"\r\n" in data else b"\n"
    end = data.find(eol + eol)
    if end >= 0:
        head, rest = data[:end], data[end:]
    elif b":" in data.split(eol, 1)[0]:  # headers only, no body
        head = data.removesuffix(eol)
        rest = data[len(head) :]
    else:  # no header block at all: the data is all body
        head, rest = b"", eol + eol + data
    fields: list[list[bytes]] = []  # each header with its folded continuation lines
    for line in head.split(eol) if head else []:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    for name, value in replace:
        key = name.lower().encode() + b":"
        at = [i for i, field in enumerate(fields) if field[0].lower().startswith(key)]
        new = [f"{name}: {value}".encode()]
        if not at:
            fields.append(new)
            continue
        fields[at[0]] = new
        fields = [field for i, field in enumerate(fields) if i not in at[1:]]
    fields += [[f"{name}: {value}".encode()] for name, value in add]
    return eol.join(line for field in fields for line in field) + rest


def read_data(argument: str) -> bytes:
    """swaks' ``--data``: ``-`` reads standard input; ``@FILE`` (or a word with no newline in it) names a file;
    anything else is the message itself, ``\\n`` standing for a line break. A closing dot line may be given."""
    if argument == "-":
        data = sys.stdin.buffer.read()
    elif argument.startswith("@@"):  # text that starts with @
        data = argument[1:].replace("\\n", "\n").replace("%NEWLINE%", "\n").encode()
    elif argument.startswith("@") or not any(n in argument for n in ("\n", "\\n", "%NEWLINE%")):
        name = argument.removeprefix("@")
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise SendError(f"cannot read --data {name}: {exc.strerror or exc}") from None
    else:
        data = argument.replace("\\n", "\n").replace("%NEWLINE%", "\n").encode()
    return re.sub(rb"(?:^|(?<=\n))\.(?:\r?\n)?\Z", b"", data)  # the closing dot, if given, is ours to send


# -- the transcript (-v) --------------------------------------------------------------------------------------------
class Transcript:
    """The conversation on standard error as swaks shows it: ``<-`` the server, ``->`` the client, ``===``
    what happened; ``~`` in place of ``-`` once TLS is on, ``**`` for a 4xx/5xx reply."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.tls = False

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def info(self, text: str) -> None:
        self.say(f"=== {text}")

    def sent(self, data: bytes) -> None:
        arrow = " ~> " if self.tls else " -> "
        for line in data.removesuffix(b"\r\n").split(b"\r\n"):
            self.say(arrow + line.decode("utf-8", "replace"))

    def received(self, line: bytes) -> None:
        error = line[:1] in (b"4", b"5")
        arrow = ("<~* " if error else "<~  ") if self.tls else ("<** " if error else "<-  ")
        self.say(arrow + line.decode("utf-8", "replace"))


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


NO_SMTPUTF8 = SMTPReply(Code.MAILBOX_NAME_NOT_ALLOWED, "5.6.7", ("the server does not offer SMTPUTF8",))


def mail_command(sender: str, data: bytes, *, utf8: bool, extensions: dict[str, str]) -> str | None:
    """MAIL FROM with the parameters the server's EHLO allows (SIZE, BODY=8BITMIME, SMTPUTF8); None when the
    message needs SMTPUTF8 and the server does not offer it (RFC 6531: it must not be sent)."""
    params = []
    if "SIZE" in extensions:
        params.append(f"SIZE={len(data)}")
    if "8BITMIME" in extensions and not data.isascii():
        params.append("BODY=8BITMIME")
    if utf8:
        if "SMTPUTF8" not in extensions:
            return None
        params.append("SMTPUTF8")
    return f"MAIL FROM:<{sender}>" + "".join(f" {p}" for p in params)


def parse_ehlo(answer: SMTPReply) -> dict[str, str]:
    """The extensions an EHLO reply offers: {KEYWORD: parameters}."""
    extensions = {}
    for line in answer.lines[1:]:
        keyword, _, value = line.partition(" ")
        extensions[keyword.upper()] = value
    return extensions


AUTH_MECHANISMS = ("PLAIN", "LOGIN")  # RFC 4616 and the draft every server speaks; in this order of preference
AUTH_OK, AUTH_CONTINUE = 235, 334  # RFC 4954


@dataclass(frozen=True)
class Credentials:
    """``--auth``: who to log in as, by which mechanisms (the first the server offers), and whether a password
    may go over a connection TLS does not protect (``--auth-insecure``)."""

    user: str
    password: str
    mechanisms: tuple[str, ...] = AUTH_MECHANISMS
    insecure: bool = False


class SMTPConnection:
    """A client conversation over one blocking socket. ``open_smtp`` returns one (greeted); close it when done."""

    def __init__(self, sock: socket.socket, where: str, trace: Transcript | None = None) -> None:
        self.sock = sock
        self.where = where
        self.reader = ReplyReader(trace.received if trace else None)
        self.replies: list[SMTPReply] = []
        self.extensions: dict[str, str] = {}
        self.trace = trace

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SMTPConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_reply(self) -> SMTPReply:
        while not self.replies:
            data = self.sock.recv(65536)
            if not data:
                raise SendError(f"{self.where} closed the connection")
            self.replies += self.reader.feed(data)
        return self.replies.pop(0)

    def send(self, data: bytes) -> None:
        if self.trace:
            self.trace.sent(data)
        self.sock.sendall(data)

    def starttls(self, context: ssl.SSLContext, name: str) -> None:
        """STARTTLS (RFC 3207): on 220, the TLS handshake over the same socket, then a new conversation (the
        caller says EHLO again; the extensions offered before are forgotten)."""
        answer = self.command("STARTTLS")
        if answer.code != Code.SERVICE_READY:
            raise SendError(f"{self.where} refused STARTTLS: {answer}")
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=name)
        except ssl.SSLCertVerificationError as exc:
            raise SendError(f"{self.where}: TLS certificate rejected: {certificate_problem(exc, name)}") from None
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise SendError(f"{self.where}: TLS handshake failed: {reason}") from None
        self.extensions = {}
        if self.trace and isinstance(self.sock, ssl.SSLSocket):
            version, cipher = self.sock.version(), self.sock.cipher()
            self.trace.info(f"TLS started with cipher {version}:{cipher[0] if cipher else '?'}")
            self.trace.tls = True

    def command(self, line: str) -> SMTPReply:
        self.send(line.encode("utf-8") + b"\r\n")
        return self.read_reply()

    def hello(self, name: str) -> None:
        """EHLO, falling back to HELO for an old server; remembers the extensions offered."""
        answer = self.command(f"EHLO {name}")
        if answer.code == Code.OK:
            self.extensions = parse_ehlo(answer)
            return
        answer = self.command(f"HELO {name}")
        if answer.code != Code.OK:
            raise SendError(f"{self.where} refused HELO: {answer}")

    def offers(self, extension: str) -> bool:
        return extension in self.extensions

    def auth_offered(self) -> list[str]:
        """The SASL mechanisms of the EHLO reply: ``AUTH PLAIN LOGIN`` (and the old ``AUTH=LOGIN`` form)."""
        found: list[str] = []
        for key, value in self.extensions.items():
            if key == "AUTH" or key.startswith("AUTH="):
                found += [key.partition("=")[2], *value.split()]
        return list(dict.fromkeys(word.upper() for word in found if word))

    def authenticate(self, credentials: Credentials) -> None:
        """AUTH (RFC 4954) with the first of ``credentials.mechanisms`` the server offers; only inside TLS unless
        ``insecure``: PLAIN and LOGIN carry the password as it is, merely base64-encoded."""
        if not isinstance(self.sock, ssl.SSLSocket) and not credentials.insecure:
            raise SendError(
                f"{self.where}: will not send the password unencrypted (no STARTTLS, or --tls off);"
                " --auth-insecure allows it"
            )
        offered = self.auth_offered()
        if not offered:
            raise SendError(f"{self.where} does not offer AUTH")
        mechanism = next((m for m in credentials.mechanisms if m in offered), None)
        if mechanism is None:
            wanted = ", ".join(credentials.mechanisms)
            raise SendError(f"{self.where} offers AUTH {' '.join(offered)}, and sockhop was told {wanted}")
        user, password = credentials.user.encode(), credentials.password.encode()
        if mechanism == "PLAIN":
            answer = self.command("AUTH PLAIN " + b64(b"\0" + user + b"\0" + password))  # RFC 4616: no authzid
        else:
            answer = self.command("AUTH LOGIN")
            for secret in (user, password):
                if answer.code != AUTH_CONTINUE:
                    break
                answer = self.command(b64(secret))
        if answer.code != AUTH_OK:
            raise SendError(f"{self.where}: authentication failed ({mechanism} as {credentials.user}): {answer}")

    def transaction(self, sender: str, recipients: list[str], data: bytes, *, utf8: bool) -> list[Outcome]:
        """MAIL, RCPT..., DATA, the message: pipelined when offered. One Outcome per recipient."""
        mail = mail_command(sender, data, utf8=utf8, extensions=self.extensions)
        if mail is None:
            return [Outcome(r, NO_SMTPUTF8, self.where) for r in recipients]
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
        if self.trace:
            self.trace.info("Connection closed with remote host.")


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
    ``may`` level does -- unauthenticated TLS still beats plaintext, and refusing would mean plaintext or no mail
    (unless ``--cacert`` names whom to trust); ``off`` never starts TLS."""
    if mode == "off":
        return None
    return client_context(cafile, verify=mode == "required" or cafile is not None)


def open_smtp(
    host: str, port: int, *, timeout: float, helo: str, tls: str = "opportunistic",
    context: ssl.SSLContext | None = None, name: str | None = None, trace: Transcript | None = None,
    auth: Credentials | None = None,
) -> SMTPConnection:  # fmt: skip
    """Connect, read the greeting, say EHLO, and STARTTLS as ``tls`` says (``context`` from :func:`tls_context`;
    ``name``: the name the certificate must carry; ``trace``: where the conversation is shown, for -v). Raises
    SendError (or OSError) when the server cannot be used."""
    where = format_host_port(host, port)
    if trace:
        trace.tls = False
        trace.info(f"Trying {where}...")
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise SendError(f"cannot connect to {where}: {exc.strerror or exc}") from None
    if trace:
        trace.info(f"Connected to {host}.")
    conn = SMTPConnection(sock, where, trace)
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
        if auth is not None:
            conn.authenticate(auth)
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
    cafile: str | None = None, trace: Transcript | None = None, auth: Credentials | None = None,
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
                opened = open_smtp(
                    host,
                    hop_port,
                    timeout=timeout,
                    helo=helo,
                    tls=tls,
                    context=context,
                    name=name,
                    trace=trace,
                    auth=auth,
                )
                with opened as conn:
                    results = conn.transaction(sender, waiting, data, utf8=utf8)
                    conn.quit()
            except (OSError, SockhopError) as exc:
                message = str(exc) if isinstance(exc, SockhopError) else f"{host}:{hop_port}: {exc.strerror or exc}"
                if trace:
                    trace.say(f"*** {message}")
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
    to, cc, bcc = (address_list(getattr(args, key, None) or []) for key in ("to", "cc", "bcc"))
    envelope = list(dict.fromkeys([*to, *cc, *bcc]))
    if not envelope:
        raise UsageError("give at least one recipient: --to, --cc or --bcc")
    for address in (args.sender, *envelope):
        try:
            check_mailbox(address, utf8=True)
        except AddressSyntaxError as exc:
            raise SendError(f"bad address {address!r}: {exc}") from None
    replace, add = split_headers(args.header or []), split_headers(args.add_header or [])
    utf8 = needs_smtputf8(args.sender, envelope)
    if args.data is not None:
        given = [flag for flag, value in (("--body", args.body), ("--attach", args.attach), ("--subject", args.subject))
                 if value]  # fmt: skip
        if given:
            raise UsageError(f"--data is the whole message: {', '.join(given)} cannot be added to it (--header can)")
        data = edit_headers(read_data(args.data), replace, add)
    else:
        body = args.body if args.body is not None else sys.stdin.read()
        msg = build_message(args.sender, to, args.subject, body, args.attach, cc=cc)
        set_headers(msg, replace, add)
        data = to_wire(msg, utf8=utf8)
    outcomes = deliver(
        args.sender, envelope, data, server=args.server, dns=args.dns, port=args.port,
        timeout=args.timeout, helo=args.helo, tls=args.tls, cafile=args.cacert,
        trace=Transcript() if args.trace else None, auth=credentials(args),
    )  # fmt: skip
    failed = 0
    for outcome in outcomes:
        if outcome.delivered:
            print(f"{outcome.recipient}: delivered via {outcome.where}: {outcome.reply}")
        else:
            failed += 1
            print(f"sockhop: {outcome.describe()}", file=sys.stderr)
    return 1 if failed else 0


def address_list(values: Iterable[str]) -> list[str]:
    """Repeated options, each possibly a comma-separated list (as swaks' --to takes them)."""
    return [address.strip() for value in values for address in value.split(",") if address.strip()]


def credentials(args: argparse.Namespace) -> Credentials | None:
    """``--auth [MECH,...]``, ``--auth-user``, ``--auth-password`` (asked for on the terminal when not given, so
    it need not sit in the shell's history), ``--auth-insecure``; None without --auth or --auth-user."""
    if args.auth is None and args.auth_user is None:
        return None
    mechanisms = tuple(m.strip().upper() for m in (args.auth or ",".join(AUTH_MECHANISMS)).split(",") if m.strip())
    unknown = [m for m in mechanisms if m not in AUTH_MECHANISMS]
    if unknown or not mechanisms:
        raise UsageError(f"--auth {args.auth}: sockhop speaks {' and '.join(AUTH_MECHANISMS)}")
    if not args.auth_user:
        raise UsageError("--auth needs --auth-user")
    password = args.auth_password
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError("--auth needs --auth-password (no terminal to ask on)")
        import getpass

        password = getpass.getpass(f"password for {args.auth_user}: ")
    return Credentials(args.auth_user, password, mechanisms, args.auth_insecure)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
