"""Mail as a service: ``sockhop serve mail MAILDIR``, ``sockhop send``, ``sockhop mailbox``, and the mail of
``sockhop up``."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import ipaddress
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

from sockhop.engine.listener import Listener
from sockhop.errors import SockhopError
from sockhop.options import positive_float, positive_int, size
from sockhop.service import Command, Opener, Problem, Service, Twin, UpContext, UpPlan

from . import mailbox, passwd, queue, send
from .protocol import (
    DEFAULT_AUTH_DELAY,
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_DATA_TIMEOUT,
    DEFAULT_MAX_RECIPIENTS,
    DEFAULT_MAX_SIZE,
)

DEFAULT_PORT = 2525  # SMTP's own port, 25, is privileged
UP_DOMAIN = "sockhop.test"
UP_SUBMISSION_PORT = 5587  # submission's own port, 587, is privileged
UP_USER = "you"


class MailSetupError(SockhopError):
    """The mail server cannot start that way."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("maildir", metavar="MAILDIR", help="folder of mailboxes, one per local part")
    parser.add_argument(
        "--domain", action="append", required=True, metavar="D", help="a domain to accept mail for; repeatable"
    )
    parser.add_argument(
        "--recipients", action="append", metavar="LIST",
        help="comma-separated local parts or addresses that exist (others get 550); default: any",
    )  # fmt: skip
    parser.add_argument("--catch-all", action="store_true", help="deliver every recipient into MAILDIR itself")
    parser.add_argument(
        "--max-size", type=size, default=DEFAULT_MAX_SIZE, metavar="BYTES", help="largest message (default 10M)"
    )
    parser.add_argument(
        "--max-recipients", type=positive_int, default=DEFAULT_MAX_RECIPIENTS, metavar="N", help="per message"
    )
    parser.add_argument("--hostname", help="name in the greeting and Received: (default this host's name)")
    parser.add_argument(
        "--command-timeout", type=positive_float, default=DEFAULT_COMMAND_TIMEOUT, metavar="S",
        help="deadline for each whole command line, however slowly it trickles (default 300, RFC 5321 4.5.3.2)",
    )  # fmt: skip
    parser.add_argument(
        "--data-timeout", type=positive_float, default=DEFAULT_DATA_TIMEOUT, metavar="S",
        help="deadline for the whole message after 354 (default 600, RFC 5321's DATA termination)",
    )  # fmt: skip
    parser.add_argument(
        "--sync", choices=("batch", "each"), default="batch",
        help="how a message is made durable before its 250: batch (default) -- messages arriving together share one "
        "syncfs of the Maildir's filesystem, which also flushes anything else pending there; each -- an fsync per "
        "message file, for a Maildir on a filesystem busy with other writes",
    )  # fmt: skip
    parser.add_argument(
        "--message-log", metavar="FILE|-", help="a line per message accepted to FILE, or - for standard output"
    )
    submission = parser.add_argument_group("submission (RFC 6409) and relaying")
    submission.add_argument(
        "--listen-submission", action="append", metavar="ENDPOINT",
        help="a submission port (587-style: STARTTLS, then AUTH before MAIL); needs --tls-cert and --users",
    )  # fmt: skip
    submission.add_argument(
        "--users", metavar="FILE",
        help="password file (`sockhop mail passwd FILE USER`): AUTH PLAIN/LOGIN is offered under TLS",
    )  # fmt: skip
    submission.add_argument(
        "--any-sender", action="store_true",
        help="a logged-in user may use any sender address (default: only their own, as the password file lists)",
    )  # fmt: skip
    submission.add_argument(
        "--auth-delay", type=positive_float, default=DEFAULT_AUTH_DELAY, metavar="S",
        help="a failed login is answered after S seconds, doubling with each failure (default 1)",
    )  # fmt: skip
    submission.add_argument(
        "--spool", metavar="DIR",
        help="queue mail for other domains here (from logins and --relay-networks), durably before its 250; "
        "`sockhop queue --spool DIR` lists it",
    )  # fmt: skip
    submission.add_argument(
        "--aliases", metavar="FILE", help="sendmail's aliases file (name: target, target): local recipients expand"
    )
    submission.add_argument(
        "--relay-networks", nargs="+", action="extend", type=network, metavar="CIDR",
        help="clients here may relay without logging in (mail for other domains goes to --spool)",
    )  # fmt: skip
    delivery = parser.add_argument_group("delivery from the queue (--spool)")
    delivery.add_argument(
        "--no-delivery", action="store_true",
        help="only queue: nothing is delivered from --spool while this server runs (Postfix's defer_transports)",
    )  # fmt: skip
    delivery.add_argument("--dns", metavar="ENDPOINT", help="DNS server for MX lookups (default the system's)")
    delivery.add_argument(
        "--relayhost", metavar="IP:PORT", help="deliver everything there instead of by MX (Postfix's relayhost)"
    )
    delivery.add_argument(
        "--relay-port", type=positive_int, metavar="N",
        help="port of every MX (default: an _smtp._tcp SRV record's, else 25)",
    )  # fmt: skip
    delivery.add_argument(
        "--relay-tls", action="append", type=tls_rule, metavar="[DOMAIN=]MODE",
        help="STARTTLS when delivering: opportunistic (default), required (the certificate verified), off; "
        "DOMAIN=MODE for one destination (repeatable)",
    )  # fmt: skip
    delivery.add_argument("--relay-cacert", metavar="FILE", help="trust this CA when checking an MX's certificate")
    delivery.add_argument(
        "--relay-concurrency", type=positive_int, default=20, metavar="N", help="connections per destination"
    )
    delivery.add_argument(
        "--retry-first", type=positive_float, default=300.0, metavar="S",
        help="first retry after a 4xx or an unreachable destination (default 300), doubling each time",
    )  # fmt: skip
    delivery.add_argument(
        "--retry-max", type=positive_float, default=4000.0, metavar="S", help="longest wait between tries (4000)"
    )
    delivery.add_argument(
        "--queue-lifetime", type=positive_float, default=5 * 86400.0, metavar="S",
        help="bounce what is still undelivered after this long (default 5 days)",
    )  # fmt: skip


TLS_MODES = ("required", "opportunistic", "off")


def tls_rule(text: str) -> tuple[str, str]:
    """``MODE`` (every destination) or ``DOMAIN=MODE``."""
    domain, _, mode = text.rpartition("=")
    if mode not in TLS_MODES:
        raise argparse.ArgumentTypeError(f"{text!r}: give [DOMAIN=]{'|'.join(TLS_MODES)}")
    return domain.lower().rstrip("."), mode


def queue_runner(args: argparse.Namespace):
    """The spool's queue runner (made once per parsed options: the store wakes it, the engine runs it), or None
    without a spool."""
    if not args.spool or args.no_delivery:
        return None
    found = vars(args).get("_queue_runner")
    if found is not None:
        return found
    from sockhop.errors import AddressError, UsageError
    from sockhop.tlsclient import CACertError

    from .client import server_endpoint
    from .runner import DeliveryPolicy, QueueRunner
    from .spool import Spool, SpoolError

    relayhost = None
    if args.relayhost:
        endpoint = server_endpoint(args.relayhost)
        try:
            infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise MailSetupError(f"--relayhost {args.relayhost}: {exc.strerror}") from None
        relayhost = (str(infos[0][4][0]), endpoint.port)
    rules = dict(args.relay_tls or ())
    default = rules.pop("", "opportunistic")
    tls = {domain: mode for domain, mode in rules.items()}
    policy = DeliveryPolicy(
        hostname=args.hostname or socket.gethostname(), dns=args.dns, port=args.relay_port, relayhost=relayhost,
        tls=tls, default_tls=default, cafile=args.relay_cacert, concurrency=args.relay_concurrency,
        first_retry=args.retry_first, max_retry=args.retry_max, lifetime=args.queue_lifetime,
    )  # fmt: skip
    try:
        runner = QueueRunner(Spool(args.spool), policy)
        for mode in {default, *tls.values()}:
            runner.context(mode)  # a --relay-cacert that cannot be used stops start-up, in one line
    except (SpoolError, CACertError, AddressError, UsageError) as exc:
        raise MailSetupError(str(exc).replace("--cacert", "--relay-cacert")) from None
    vars(args)["_queue_runner"] = runner
    return runner


def mail_jobs(args: argparse.Namespace) -> list:
    runner = queue_runner(args)
    return [runner] if runner is not None else []


def network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR (``127.0.0.0/8``, ``::1/128``) or a single address."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a network: {text!r} (write it as 192.0.2.0/24)") from None


def make_store(args: argparse.Namespace, policy):
    """The Maildir at MAILDIR (created now), behind a Router when there is a spool or aliases."""
    from .aliases import AliasesError, load_aliases
    from .maildir import Maildir
    from .router import Router
    from .spool import Spool

    root = Path(args.maildir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MailSetupError(f"cannot create {root}: {exc.strerror}") from None
    store = Maildir(root, hostname=policy.hostname, catch_all=args.catch_all, sync=args.sync)
    if not args.spool and not args.aliases:
        return store
    try:
        aliases = load_aliases(args.aliases) if args.aliases else None
        spool = Spool(args.spool) if args.spool else None
        runner = queue_runner(args)
        router = Router(store, policy.domains | {policy.hostname.lower()}, spool=spool, aliases=aliases,
                        on_queued=runner.wake if runner is not None else None)  # fmt: skip
        if runner is not None:
            runner.local = router  # a bounce to one of the server's own addresses goes straight to its mailbox
        return router
    except AliasesError as exc:
        raise MailSetupError(str(exc)) from None


def make_factory(store, policy, *, tls: bool = False) -> Callable:
    """One SMTPServer per connection, all delivering into ``store``. ``tls``: for an SMTPS listener, whose TLS
    layer finished its handshake before the protocol is greeted."""
    from .protocol import SMTPServer

    return functools.partial(SMTPServer, policy, store, tls=tls)


def policy_from(args: argparse.Namespace):
    from .protocol import MailPolicy

    recipients = None
    if args.recipients:
        recipients = frozenset(r.strip().lower() for item in args.recipients for r in item.split(",") if r.strip())
    message_log = None
    if args.message_log:
        from .messagelog import open_message_log

        message_log = open_message_log(args.message_log)
    users = None
    if args.users:
        from .auth import PasswordFileError, Users

        try:
            users = Users.load(args.users)
        except PasswordFileError as exc:
            raise MailSetupError(str(exc)) from None
    return MailPolicy(
        users=users,
        sender_login_match=not args.any_sender,
        auth_delay=args.auth_delay,
        relay_networks=tuple(args.relay_networks or ()),
        hostname=args.hostname or socket.gethostname(),
        domains=frozenset(d.lower().rstrip(".") for d in args.domain),
        recipients=recipients,
        max_size=args.max_size,
        max_recipients=args.max_recipients,
        command_timeout=args.command_timeout,
        data_timeout=args.data_timeout,
        message_log=message_log,
    )


def open_mail(args: argparse.Namespace, opener: Opener) -> list[Listener]:
    """--listen plain (offering STARTTLS when a certificate is given: the TLS layer waits in plaintext for it),
    --listen-tls SMTPS (implicit TLS: the greeting comes after the handshake), --listen-submission (STARTTLS, then
    AUTH before MAIL). AUTH is offered on all of them once encrypted, when there are --users."""
    from .protocol import busy_reply

    policy = policy_from(args)
    if args.listen_submission and (opener.certificates() is None or policy.users is None):
        raise MailSetupError("--listen-submission needs --tls-cert/--tls-key and --users (AUTH only under TLS)")
    store = make_store(args, policy)
    if policy.recipients is not None and getattr(store, "aliases", None):  # an alias is a recipient that exists
        policy = dataclasses.replace(policy, recipients=policy.recipients | frozenset(store.aliases))
    starttls = dataclasses.replace(policy, starttls=opener.certificates() is not None)
    plain = opener.starttls(make_factory(store, starttls))
    smtps = make_factory(store, policy, tls=True)
    busy = busy_reply(policy.hostname)
    listeners = opener.open(plain, busy=busy, tls_factory=smtps)
    if args.listen_submission:
        submission = dataclasses.replace(starttls, submission=True)
        factory = opener.starttls(make_factory(store, submission))
        try:
            listeners += opener.open_at(args.listen_submission, factory, busy=busy)
        except BaseException:
            for listener in listeners:
                listener.sock.close()
            raise
    return listeners


def mail_folders(args: argparse.Namespace) -> list[Path]:
    return [Path(args.maildir)] + ([Path(args.spool)] if args.spool else [])


def check_mail(args: argparse.Namespace) -> list[Problem]:
    """The Maildir and the spool can be made and written (as far as can be told without writing); the password
    file and the aliases file read, every line of them right."""
    problems = [p for option in ("maildir", "spool") if getattr(args, option) for p in _check_folder(args, option)]
    if args.users:
        from .auth import PasswordFileError, Users

        try:
            Users.load(args.users)
        except PasswordFileError as exc:
            problems.append(Problem("users", str(exc)))
    if args.aliases:
        from .aliases import AliasesError, load_aliases
        from .router import check_targets

        try:
            aliases = load_aliases(args.aliases)
            local = {d.lower().rstrip(".") for d in args.domain or ()} | {(args.hostname or "").lower()}
            check_targets(aliases, lambda d: not d or d.lower().rstrip(".") in local, args.catch_all,
                          queue=bool(args.spool))  # fmt: skip
        except AliasesError as exc:
            problems.append(Problem("aliases", str(exc)))
    if args.listen_submission and (not args.users or not getattr(args, "tls_cert", None)):
        problems.append(Problem("listen-submission", "needs --users and --tls-cert/--tls-key: AUTH only under TLS"))
    return problems


def _check_folder(args: argparse.Namespace, option: str) -> list[Problem]:
    given = getattr(args, option)
    folder = Path(given).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return [Problem(option, f"cannot create {given}: {existing} is not a folder")]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [Problem(option, f"cannot write to {existing}: permission denied")]
    return []


def up_plans(ctx: UpContext) -> list[UpPlan]:
    """Mail for @sockhop.test on port 2525, into <data>/mail; STARTTLS there and SMTPS on the twin; with TLS,
    submission on 5587 for the user "you", whose fresh password is printed (the file keeps only its scrypt), and a
    queue in <data>/spool for what a login sends elsewhere."""
    from sockhop.dns.builtin import DEFAULT_PORT as DNS_PORT
    from sockhop.net.addresses import format_host_port

    maildir = ctx.data / "mail"
    log = [] if ctx.quiet else ["--message-log", "-"]
    argv = [str(maildir), "--domain", UP_DOMAIN, "--hostname", f"mail.{UP_DOMAIN}", *log]
    try_it = [  # the MX of sockhop.test is mail.sockhop.test; its _smtp._tcp SRV record gives the port
        f"echo hello | {ctx.command} send --dns {ctx.url_host()}:{DNS_PORT} --to you@{UP_DOMAIN}; "
        f"{ctx.command} mailbox {maildir}"
    ]
    if ctx.tls:
        from .auth import set_password

        # hex: a printed command line takes it as is (a URL-safe token began with "-" once in 64, which swaks took
        # for an option)
        users, password = ctx.data / "mail-users", secrets.token_hex(9)
        try:
            ctx.data.mkdir(parents=True, exist_ok=True)
            set_password(users, UP_USER, password)
        except (OSError, SockhopError) as exc:
            raise MailSetupError(f"cannot write {users}: {getattr(exc, 'strerror', None) or exc}") from None
        argv += ["--listen-submission", format_host_port(ctx.host, UP_SUBMISSION_PORT), "--users", str(users),
                 "--spool", str(ctx.data / "spool"), "--dns", f"{ctx.url_host()}:{DNS_PORT}"]  # fmt: skip
        try_it.append(
            f"swaks --server {ctx.host} --port {UP_SUBMISSION_PORT} --tls --auth PLAIN --auth-user {UP_USER} "
            f"--auth-password {password} --from {UP_USER}@{UP_DOMAIN} --to {UP_USER}@{UP_DOMAIN}"
        )
    return [UpPlan(argv, try_it)]


SERVICE = Service(
    name="mail",
    help="SMTP server delivering to Maildir (the Sendmail role)",
    default_port=DEFAULT_PORT,
    add_arguments=add_arguments,
    open=open_mail,
    up=up_plans,
    twin=Twin(4465, (), "swaks --server {host} --port 4465 --tls-on-connect --to you@sockhop.test"),
    defaults={"idle_timeout": 300.0},  # RFC 5321 4.5.3.2.7: at least 5 minutes
    folders=mail_folders,
    check=check_mail,
    jobs=mail_jobs,
    inbox=lambda args: Path(args.maildir),  # what the dashboard's inbox shows
    commands=(
        Command(
            "send", "build a message and deliver it over SMTP (to --server, or by MX)", send.add_arguments, send.run
        ),
        Command("mailbox", "list the messages in a Maildir, or print one", mailbox.add_arguments, mailbox.run),
        Command(
            "queue",
            "list the mail queue of a --spool (as mailq), or flush, delete, hold or release messages",
            queue.add_arguments,
            queue.run,
        ),
        Command("mail", "manage the mail server's files: `mail passwd FILE USER`", passwd.add_arguments, passwd.run),
    ),  # fmt: skip
)
