"""``sockhop serve dns`` and ``sockhop resolve``: argument parsing and wiring, nothing more."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import socket
import sys

from sockhop.cli import (
    UsageError,
    add_engine_options,
    open_service,
    run_server,
    with_reload,
)
from sockhop.dns.builtin import DEFAULT_PORT
from sockhop.engine.models import DATAGRAM_MODELS
from sockhop.engine.protocol import Listener
from sockhop.errors import AddressInUseError
from sockhop.net.addresses import parse_endpoint

log = logging.getLogger("sockhop.dns")

EPHEMERAL_TRIES = 20  # port 0: find one free for both UDP and TCP


def add_commands(sub: argparse._SubParsersAction, services: argparse._SubParsersAction) -> None:
    """Add ``serve dns`` to the serve sub-commands and ``resolve`` to the top level."""
    serve = services.add_parser(
        "dns",
        help="an authoritative name server for RFC 1035 zone files, on UDP and TCP",
        description="Answer authoritatively for the zones in the master files, on UDP and TCP on the same port. "
        "SIGHUP reloads the files (a broken file keeps the old data).",
    )
    serve.add_argument("zonefiles", nargs="+", metavar="ZONEFILE", help="RFC 1035 master file ($ORIGIN sets the zone)")
    add_engine_options(serve, default_listen=f"127.0.0.1:{DEFAULT_PORT}")
    serve.add_argument(
        "--allow-transfer",
        action="append",
        default=[],
        metavar="ADDRESS[/PREFIX]",
        help="who may AXFR the zones over TCP; repeatable (default: nobody)",
    )
    serve.add_argument("--query-log", metavar="FILE|-", help="log every query to FILE, or - for standard output")
    serve.add_argument(
        "--tcp-only",
        action="store_true",
        help="serve only TCP (the fork and thread models cannot serve UDP, which has no connections)",
    )
    serve.set_defaults(func=cmd_serve_dns)

    from sockhop.dns import lookup

    resolve = sub.add_parser(
        "resolve",
        help="ask a name server a question and print the answer (as dig)",
        description="A stub resolver: NAME [TYPE] [@SERVER[:PORT]]; without @SERVER, the nameservers of "
        "/etc/resolv.conf.",
    )
    lookup.add_arguments(resolve)
    resolve.set_defaults(func=lookup.run)


# -- serve dns ------------------------------------------------------------------------------------------------------
def cmd_serve_dns(args: argparse.Namespace) -> int:
    import ipaddress

    from sockhop.dns.protocol import DnsDatagram, DnsStream
    from sockhop.dns.server import NameServer
    from sockhop.dns.zone import read_zones

    plain_udp = not args.tcp_only and (args.listen or not args.listen_tls)  # only --listen-tls: DNS over TLS alone
    if args.model not in DATAGRAM_MODELS and plain_udp:
        raise UsageError(
            f"the {args.model} model cannot serve UDP (datagrams have no connections to hand out): "
            f"use --model {', '.join(DATAGRAM_MODELS)}, or add --tcp-only to serve DNS over TCP alone"
        )
    for net in args.allow_transfer:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise UsageError(
                f"--allow-transfer {net}: not an address or network (such as 192.0.2.1 or 10.0.0.0/8)"
            ) from None
    paths = list(args.zonefiles)
    zones = read_zones(paths)
    query_log = None
    if args.query_log:
        from sockhop.dns.querylog import open_query_log

        query_log = open_query_log(args.query_log)
    server = NameServer(
        zones, allow_transfer=args.allow_transfer, query_log=query_log, loader=lambda: read_zones(paths)
    )
    for zone in zones:
        log.info(
            "serving %s (serial %d, %d records) from %s", zone.origin, zone.serial, zone.record_count(), zone.source
        )
    listeners = open_both(args, lambda: DnsDatagram(server), lambda: DnsStream(server), tcp_only=args.tcp_only)
    listeners = with_reload(listeners, reloader(server))  # the zones, and the TLS listeners' certificates
    return run_server(args, listeners)


def reloader(server):
    """The SIGHUP hook (Listener.reload): re-read the zone files; a broken one keeps the old data and says why."""

    def reload() -> None:
        outcome = server.reload()
        # one write per line: a prefork master and its workers report at the same moment on one stderr
        sys.stderr.write(f"sockhop: dns: {outcome.message}\n")
        sys.stderr.flush()

    return reload


def open_both(args: argparse.Namespace, datagram, stream, *, tcp_only: bool = False) -> list[Listener]:
    """UDP and TCP listeners on the same ports, endpoint by endpoint (DNS clients expect the TCP port to be the UDP
    one). For port 0, the port the kernel picks for UDP is tried for TCP, and again with a fresh one if taken.
    --listen-tls endpoints serve the TCP protocol inside TLS (DNS over TLS, RFC 7858); given alone, only them."""
    if tcp_only:
        return open_service(args, stream, socket.SOCK_STREAM, name="dns")
    listeners: list[Listener] = []
    plain = args.listen or ([] if args.listen_tls else [args.default_listen])
    try:
        if args.listen_tls:
            listeners.extend(open_service(_only(args, None), stream, socket.SOCK_STREAM, name="dns"))
        for text in plain:
            endpoint = parse_endpoint(text, proto="udp", default_port=parse_endpoint(args.default_listen).port)
            for attempt in range(EPHEMERAL_TRIES):
                udp = open_service(_only(args, str(endpoint)), datagram, socket.SOCK_DGRAM, name="dns")
                port = udp[0].sock.getsockname()[1]
                same = dataclasses.replace(endpoint, port=port)
                try:
                    tcp = open_service(_only(args, str(same)), stream, socket.SOCK_STREAM, name="dns")
                except AddressInUseError:
                    for listener in udp:
                        listener.sock.close()
                    if endpoint.port != 0 or attempt == EPHEMERAL_TRIES - 1:
                        raise
                    continue
                listeners.extend(udp + tcp)
                break
    except BaseException:
        for listener in listeners:
            listener.sock.close()
        raise
    return listeners


def _only(args: argparse.Namespace, endpoint: str | None) -> argparse.Namespace:
    """The arguments with one plain endpoint and no TLS ones -- or, for None, the TLS endpoints alone."""
    copy = argparse.Namespace(**vars(args))
    if endpoint is None:
        copy.listen = []
    else:
        copy.listen, copy.listen_tls = [endpoint], None
    return copy
