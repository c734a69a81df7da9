"""The mail commands: ``sockhop serve mail``, ``sockhop send``, ``sockhop mailbox``, and mail in ``sockhop up``."""

from __future__ import annotations

import argparse
import functools
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sockhop.errors import SockhopError

if TYPE_CHECKING:
    from sockhop.up import Offer, UpContext

    from .protocol import MailPolicy, SMTPServer

DEFAULT_PORT = 2525  # SMTP's own port, 25, is privileged
UP_DOMAIN = "sockhop.test"


class MailSetupError(SockhopError):
    """The mail server cannot start that way."""


def add_commands(sub: argparse._SubParsersAction, services: argparse._SubParsersAction) -> None:
    """Add ``serve mail`` to ``services`` and ``send``, ``mailbox`` to ``sub``."""
    from sockhop.cli import add_engine_options
    from sockhop.options import positive_float, positive_int, size

    from .protocol import DEFAULT_COMMAND_TIMEOUT, DEFAULT_DATA_TIMEOUT, DEFAULT_MAX_RECIPIENTS, DEFAULT_MAX_SIZE

    serve = services.add_parser("mail", help="SMTP server delivering to Maildir (the Sendmail role)")
    serve.add_argument("maildir", metavar="MAILDIR", help="folder of mailboxes, one per local part")
    serve.add_argument(
        "--domain", action="append", required=True, metavar="D", help="a domain to accept mail for; repeatable"
    )
    serve.add_argument(
        "--recipients", action="append", metavar="LIST",
        help="comma-separated local parts or addresses that exist (others get 550); default: any",
    )  # fmt: skip
    serve.add_argument("--catch-all", action="store_true", help="deliver every recipient into MAILDIR itself")
    serve.add_argument(
        "--max-size", type=size, default=DEFAULT_MAX_SIZE, metavar="BYTES", help="largest message (default 10M)"
    )
    serve.add_argument(
        "--max-recipients", type=positive_int, default=DEFAULT_MAX_RECIPIENTS, metavar="N", help="per message"
    )
    serve.add_argument("--hostname", help="name in the greeting and Received: (default this host's name)")
    serve.add_argument(
        "--command-timeout", type=positive_float, default=DEFAULT_COMMAND_TIMEOUT, metavar="S",
        help="deadline for each whole command line, however slowly it trickles (default 300, RFC 5321 4.5.3.2)",
    )  # fmt: skip
    serve.add_argument(
        "--data-timeout", type=positive_float, default=DEFAULT_DATA_TIMEOUT, metavar="S",
        help="deadline for the whole message after 354 (default 600, RFC 5321's DATA termination)",
    )  # fmt: skip
    serve.add_argument(
        "--sync", choices=("batch", "each"), default="batch",
        help="how a message is made durable before its 250: batch (default) -- messages arriving together share one "
        "syncfs of the Maildir's filesystem, which also flushes anything else pending there; each -- an fsync per "
        "message file, for a Maildir on a filesystem busy with other writes",
    )  # fmt: skip
    add_engine_options(serve, default_listen=f"127.0.0.1:{DEFAULT_PORT}")
    serve.set_defaults(func=cmd_serve_mail, idle_timeout=300.0)  # RFC 5321 4.5.3.2.7: at least 5 minutes
    for action in serve._actions:
        if action.dest == "idle_timeout":
            action.help = "default 300, as RFC 5321 asks of an SMTP server"

    from . import send as send_command

    send = sub.add_parser("send", help="build a message and deliver it over SMTP (to --server, or by MX)")
    send_command.add_arguments(send)
    send.set_defaults(func=send_command.run)

    mailbox = sub.add_parser("mailbox", help="list the messages in a Maildir, or print one")
    mailbox.add_argument("maildir", metavar="MAILDIR")
    mailbox.add_argument("--show", type=positive_int, metavar="N", help="print message N of the listing")
    mailbox.set_defaults(func=cmd_mailbox)


def make_factory(
    root: Path, policy: MailPolicy, *, catch_all: bool, tls: bool = False, sync: str = "batch"
) -> Callable[[], SMTPServer]:
    """One SMTPServer per connection, all delivering into the Maildir at ``root`` (created now). ``tls``: for an
    SMTPS listener, whose TLS layer finished its handshake before the protocol is greeted."""
    from .maildir import Maildir
    from .protocol import SMTPServer

    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MailSetupError(f"cannot create {root}: {exc.strerror}") from None
    store = Maildir(root, hostname=policy.hostname, catch_all=catch_all, sync=sync)
    return functools.partial(SMTPServer, policy, store, tls=tls)


def mail_listeners(args: argparse.Namespace, root: Path, policy: MailPolicy, *, catch_all: bool) -> list:
    """The listeners ``serve mail`` asks for: --listen plain (offering STARTTLS when --tls-cert is given, the TLS
    layer waiting in plaintext for it), --listen-tls SMTPS (implicit TLS: the greeting comes after the handshake)."""
    import dataclasses

    from sockhop.cli import open_service, tls_context_from
    from sockhop.engine.tls import TLSLayer

    from .protocol import busy_reply

    context = tls_context_from(args) if args.tls_cert else None
    sync = getattr(args, "sync", "batch")
    smtps = make_factory(root, policy, catch_all=catch_all, tls=True, sync=sync)  # open_service wraps it in TLS
    starttls = dataclasses.replace(policy, starttls=context is not None)
    plain: Callable = make_factory(root, starttls, catch_all=catch_all, sync=sync)
    if context is not None:
        plain = TLSLayer.factory(context, plain, implicit=False, handshake_timeout=args.tls_handshake_timeout)
    listeners = open_service(args, smtps, busy=busy_reply(policy.hostname), name="mail")
    reload = context.reload if context is not None else None  # SIGHUP: STARTTLS's certificates re-read too
    return [listener if listener.tls else dataclasses.replace(listener, factory=plain, reload=reload)
            for listener in listeners]  # fmt: skip


def cmd_serve_mail(args: argparse.Namespace) -> int:
    from sockhop.cli import run_server

    from .protocol import MailPolicy

    recipients = None
    if args.recipients:
        recipients = frozenset(r.strip().lower() for item in args.recipients for r in item.split(",") if r.strip())
    hostname = args.hostname or socket.gethostname()
    policy = MailPolicy(
        hostname=hostname,
        domains=frozenset(d.lower().rstrip(".") for d in args.domain),
        recipients=recipients,
        max_size=args.max_size,
        max_recipients=args.max_recipients,
        command_timeout=args.command_timeout,
        data_timeout=args.data_timeout,
    )
    listeners = mail_listeners(args, Path(args.maildir), policy, catch_all=args.catch_all)
    return run_server(args, listeners)


def cmd_mailbox(args: argparse.Namespace) -> int:
    from .maildir import list_messages

    if not Path(args.maildir).is_dir():
        raise MailSetupError(f"no such folder: {args.maildir}")
    messages = list_messages(args.maildir)
    if args.show is not None:
        if args.show > len(messages):
            raise MailSetupError(f"there is no message {args.show}: the mailbox holds {len(messages)}")
        import sys

        sys.stdout.buffer.write(messages[args.show - 1].path.read_bytes())
        sys.stdout.flush()
        return 0
    if not messages:
        print("no messages")
        return 0
    many = len({m.mailbox for m in messages}) > 1 or messages[0].mailbox != "."
    for i, m in enumerate(messages, 1):
        box = f"{m.mailbox:<12.12} " if many else ""
        print(f"{i:>4}  {box}{m.date[:31]:<31}  {m.sender[:30]:<30}  {m.subject[:60]}")
    return 0


def mail_service(ctx: UpContext) -> list[Offer]:
    """``sockhop up``: mail for @sockhop.test on port 2525, into <data>/mail."""
    from sockhop.engine.protocol import Listener
    from sockhop.up import Offer

    from .protocol import MailPolicy, busy_reply

    hostname = f"mail.{UP_DOMAIN}"
    policy = MailPolicy(hostname=hostname, domains=frozenset({UP_DOMAIN}), starttls=ctx.tls)
    factory: Callable = make_factory(ctx.data / "mail", policy, catch_all=False)
    smtps = make_factory(ctx.data / "mail", policy, catch_all=False, tls=True)  # up's SMTPS twin (4465) serves it
    reload = None
    if ctx.tls:  # STARTTLS on 2525 with the local CA's certificate
        from sockhop.engine.tls import TLSLayer

        certificates = ctx.certificates()
        factory = TLSLayer.factory(certificates, factory, implicit=False)
        reload = certificates.reload
    from sockhop.dns.builtin import DEFAULT_PORT as DNS_PORT

    host = f"[{ctx.host}]" if ":" in ctx.host else ctx.host
    try_it = (  # the MX of sockhop.test is mail.sockhop.test; its _smtp._tcp SRV record gives the port
        f"echo hello | sockhop send --dns {host}:{DNS_PORT} --to you@{UP_DOMAIN}; sockhop mailbox {ctx.data / 'mail'}"
    )
    listener = Listener(ctx.open(DEFAULT_PORT), factory, busy=busy_reply(hostname), name="mail", reload=reload)
    return [Offer(listener, try_it, tls_factory=smtps)]
