"""``sockhop up``: every service sockhop has, on loopback, with built-in defaults, in one server.

All services share one engine -- one event loop (or whichever model is asked for) serving every listener -- and
stop together on Ctrl-C. Each service contributes a function ``(UpContext) -> list[Offer]`` to ``SERVICES``.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sockhop.console import say
from sockhop.dns.builtin import dns_service
from sockhop.engine import Limits, Listener, make_server
from sockhop.engine.protocol import format_address
from sockhop.net.addresses import Endpoint
from sockhop.net.listeners import inherited, open_socket
from sockhop.web.cli import web_service

if TYPE_CHECKING:
    from sockhop.engine.tls import ServerCertificates


@dataclass(frozen=True)
class UpContext:
    host: str
    data: Path  # where services keep what they store (mail, certificates)
    tls: bool = False  # TLS is on: the local CA's certificate is there for services that want it (STARTTLS)
    user: str | None = None  # --user: services will run as this user, who can read only what is in the data folder
    _certificates: dict = field(default_factory=dict, compare=False, repr=False)

    def open(self, port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> socket.socket:
        given = inherited()
        if given:  # a SIGUSR2 restart: the previous master's sockets, not new ones
            return given.claim(Endpoint(self.host, port), kind)[0]
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        return open_socket(family, (self.host, port), kind)

    @property
    def ca(self) -> Path:
        """The local CA certificate clients are told to trust."""
        return self.data / "tls" / "ca.pem"

    def certificates(self, alpn: tuple[str, ...] = ()) -> ServerCertificates:
        """The server certificate of the local CA (made on first use, in the data folder), one context per ALPN
        list, re-read on SIGHUP by whoever puts its ``reload`` on a listener."""
        from sockhop.engine.tls import ServerCertificates
        from sockhop.localca import ensure_local_pki

        if alpn not in self._certificates:
            pki = ensure_local_pki(self.data / "tls")
            self._certificates[alpn] = ServerCertificates([(str(pki.server.cert), str(pki.server.key))], alpn=alpn)
        return self._certificates[alpn]


@dataclass(frozen=True)
class Offer:
    """One listener of one service, and a command that shows it working. ``tls_factory``, if given, is what the
    listener's TLS twin serves inside TLS (a protocol that knows it is encrypted: SMTPS says ESMTPS); otherwise the
    twin wraps the listener's own factory."""

    listener: Listener
    try_it: str
    tls_factory: Callable | None = None


def curl_command(ca: Path, host: str, port: int = 8443) -> str:
    """The one curl command that trusts the local CA and fetches from the HTTPS twin. The certificate is for
    localhost, 127.0.0.1 and ::1; any other loopback address is reached as localhost with --resolve."""
    if host in ("127.0.0.1", "::1", "localhost"):
        return f"curl --cacert {ca} https://localhost:{port}/"
    address = f"[{host}]" if ":" in host else host
    return f"curl --cacert {ca} --resolve localhost:{port}:{address} https://localhost:{port}/"


def echo_service(ctx: UpContext) -> list[Offer]:
    from sockhop.echo import DEFAULT_PORT, EchoDatagram, EchoStream

    return [
        Offer(Listener(ctx.open(DEFAULT_PORT), EchoStream, name="echo"), f"echo hello | sockhop talk {ctx.host} 7007"),
        Offer(
            Listener(ctx.open(DEFAULT_PORT, socket.SOCK_DGRAM), EchoDatagram, name="echo"),
            f"echo hello | sockhop talk --udp {ctx.host} 7007",
        ),
    ]


def _mail_service(ctx: UpContext) -> list[Offer]:
    from sockhop.mail.cli import mail_service

    return mail_service(ctx)


SERVICES: list[Callable[[UpContext], list[Offer]]] = [echo_service, web_service, dns_service, _mail_service]


# Each plaintext stream service also on TLS, on these ports: (port, ALPN, how to try it). {ca} is the CA to trust.
TLS_PORTS: dict[str, tuple[int, tuple[str, ...], str]] = {
    "web": (8443, ("http/1.1",), "{curl}{get}"),
    "dns": (8853, ("dot",), "kdig @{host} -p 8853 +tls-ca={ca} +tls-hostname=localhost sockhop.test MX"),
    "mail": (4465, (), "swaks --server {host} --port 4465 --tls-on-connect --to you@sockhop.test"),
    "echo": (7443, (), "openssl s_client -quiet -CAfile {ca} -connect {host}:7443"),
}


def tls_offers(ctx: UpContext, plain: list[Offer]) -> list[Offer]:
    """The TLS twins of the plaintext stream listeners, with a local CA made (once) in the data folder."""
    from sockhop.cli import with_reload
    from sockhop.engine.tls import TLSLayer

    offers = []
    for offer in plain:
        listener = offer.listener
        if not listener.is_stream or listener.name not in TLS_PORTS:
            continue
        port, alpn, try_it = TLS_PORTS[listener.name]
        certificates = ctx.certificates(alpn)
        factory = TLSLayer.factory(certificates, offer.tls_factory or listener.factory)  # type: ignore[arg-type]
        twin = Listener(ctx.open(port), factory, name=listener.name, tls=True, reload=certificates.reload)
        if listener.reload is not None and listener.reload != certificates.reload:
            twin = with_reload([twin], listener.reload)[0]  # the service's own reload (DNS zones) as well
        curl = curl_command(ctx.ca, ctx.host)
        get = f"   (or: sockhop get --cacert {ctx.ca} https://localhost:8443/)" if "--resolve" not in curl else ""
        offers.append(Offer(twin, try_it.format(ca=ctx.ca, host=ctx.host, curl=curl, get=get)))
    return offers


def up(args: argparse.Namespace) -> int:
    """Every service in one engine. The production options mean what they mean for ``sockhop serve``: --admin
    counts every listener under its service's name, --user drops privileges once everything is bound (and hands
    the data folder over), --log-format json shapes the log."""
    from sockhop.cli import open_admin, outer_layers, restart_fds, settle_privileges
    from sockhop.engine.restart import serve_restartable

    ctx = UpContext(host=args.host, data=Path(args.data), tls=not args.no_tls, user=getattr(args, "user", None))
    offers: list[Offer] = []
    admin = None
    model = args.model
    try:
        for service in SERVICES:
            offers.extend(service(ctx))
        if not args.no_tls:
            offers.extend(tls_offers(ctx, offers))
        limits = Limits(
            idle_timeout=args.idle_timeout, max_connections=args.max_connections, grace=args.grace, workers=args.workers
        )
        if model in ("fork", "thread"):
            print(f"sockhop: --model {model} cannot serve UDP; `sockhop up` uses eventloop", file=sys.stderr)
            model = "eventloop"
        listeners = outer_layers(args, [offer.listener for offer in offers], model)
        admin = open_admin(args)
        settle_privileges(args, listeners)
        server = make_server(model, listeners, limits)
    except BaseException:
        for offer in offers:
            offer.listener.sock.close()
        if admin is not None:
            admin.sock.close()
        raise

    def announce() -> None:
        say(f"sockhop up: every service on {args.host} (model {model}); Ctrl-C stops them all")
        for offer in offers:
            say(f"sockhop: {offer.listener.describe()} (model {model})")
            say(f"    try: {offer.try_it}")
        if admin is not None:
            admin.start()
            where = format_address(admin.sock.getsockname())
            say(f"sockhop: admin tcp {where} (model {model})")
            say(f"    try: curl -s http://{where}/metrics | grep ^sockhop_")
        if not args.no_tls:
            say(
                f"sockhop up: TLS certificates come from a local CA in {ctx.ca.parent}; make curl trust it with:\n"
                f"    {curl_command(ctx.ca, ctx.host)}"
            )

    try:
        serve_restartable(server, restart_fds(listeners, admin), announce)  # SIGUSR2: a new `up` takes over
    finally:
        if admin is not None:
            admin.stop()
    say("sockhop up: stopped")
    return 0
