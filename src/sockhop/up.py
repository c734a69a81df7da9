"""``sockhop up``: every service sockhop has, on loopback, with built-in defaults, in one server.

All services share one engine -- one event loop (or whichever model is asked for) serving every listener -- and
stop together on Ctrl-C. Each service contributes a function ``(UpContext) -> list[Offer]`` to ``SERVICES``.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sockhop.dns.builtin import dns_service
from sockhop.engine import Limits, Listener, make_server
from sockhop.net.listeners import open_socket
from sockhop.web.cli import web_service


@dataclass(frozen=True)
class UpContext:
    host: str
    data: Path  # where services keep what they store (mail, certificates)

    def open(self, port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        return open_socket(family, (self.host, port), kind)


@dataclass(frozen=True)
class Offer:
    """One listener of one service, and a command that shows it working."""

    listener: Listener
    try_it: str


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


def up(args: argparse.Namespace) -> int:
    ctx = UpContext(host=args.host, data=Path(args.data))
    offers: list[Offer] = []
    try:
        for service in SERVICES:
            offers.extend(service(ctx))
        limits = Limits(
            idle_timeout=args.idle_timeout, max_connections=args.max_connections, grace=args.grace, workers=args.workers
        )
        model = args.model
        if model in ("fork", "thread"):
            print(f"sockhop: --model {model} cannot serve UDP; `sockhop up` uses eventloop", file=sys.stderr)
            model = "eventloop"
        server = make_server(model, [offer.listener for offer in offers], limits)
    except BaseException:
        for offer in offers:
            offer.listener.sock.close()
        raise

    def announce() -> None:
        print(f"sockhop up: every service on {args.host} (model {model}); Ctrl-C stops them all", file=sys.stderr)
        for offer in offers:
            print(f"sockhop: {offer.listener.describe()} (model {model})", file=sys.stderr)
            print(f"    try: {offer.try_it}", file=sys.stderr)
        sys.stderr.flush()

    server.serve(on_ready=announce)
    print("sockhop up: stopped", file=sys.stderr)
    return 0
