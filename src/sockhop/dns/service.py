"""DNS as a service: ``sockhop serve dns ZONEFILE...``, ``sockhop resolve``, and the built-in zone of ``sockhop up``."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from pathlib import Path

from sockhop.dns import keycommands, lookup
from sockhop.dns.builtin import DEFAULT_PORT, ORIGIN, zone_text
from sockhop.engine.listener import Listener, with_reload
from sockhop.engine.models import DATAGRAM_MODELS
from sockhop.errors import SockhopError, UsageError
from sockhop.options import whole_number
from sockhop.service import Command, Opener, Problem, Service, Twin, UpContext, UpPlan

log = logging.getLogger("sockhop.dns")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "zonefiles", nargs="*", metavar="ZONEFILE", help="RFC 1035 master file ($ORIGIN sets the zone): a primary zone"
    )
    parser.add_argument(
        "--secondary",
        action="append",
        default=[],
        metavar="ZONE@PRIMARY[:PORT][,key=NAME]",
        help="serve ZONE as a secondary: transfer it from PRIMARY (an IP address; port 53) by IXFR or AXFR, signed "
        "with TSIG key NAME if given, refresh it on its SOA's timers and on NOTIFY from PRIMARY, answer SERVFAIL "
        "once its SOA's expire time passes without contact; kept in --data DIR if given; repeatable",
    )
    parser.add_argument(
        "--notify",
        action="append",
        default=[],
        metavar="ADDRESS[:PORT][,key=NAME]",
        help="send NOTIFY to ADDRESS (port 53) when a zone changes (at start, on reload, update or transfer), "
        "TSIG-signed with key NAME if given, again until answered; repeatable",
    )
    parser.add_argument(
        "--allow-transfer",
        action="append",
        default=[],
        metavar="ADDRESS[/PREFIX]|key:NAME",
        help="who may transfer the zones (AXFR, IXFR): addresses, networks, or key:NAME for requests signed with "
        "that TSIG key; repeatable (default: nobody)",
    )
    parser.add_argument(
        "--allow-update",
        action="append",
        default=[],
        metavar="ADDRESS[/PREFIX]|key:NAME",
        help="who may change the zones by dynamic update (nsupdate): as --allow-transfer; repeatable "
        "(default: nobody). Every accepted update is synced to a journal beside the zone before it is answered",
    )
    parser.add_argument(
        "--tsig",
        action="append",
        default=[],
        metavar="[ALGORITHM:]NAME:SECRET",
        help="a TSIG key, written as nsupdate -y and dig -y take it (hmac-sha256 without ALGORITHM); repeatable",
    )
    parser.add_argument(
        "--tsig-keyfile",
        action="append",
        default=[],
        metavar="FILE",
        help='TSIG keys in BIND\'s format (key "NAME" { algorithm hmac-sha256; secret "..."; };), as tsig-keygen '
        "writes them; repeatable",
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="keep the zones' journals (ZONE.jnl) in DIR rather than beside the zone files",
    )
    parser.add_argument("--query-log", metavar="FILE|-", help="log every query to FILE, or - for standard output")
    parser.add_argument(
        "--sign",
        action="append",
        default=[],
        metavar="KEYFILE",
        help="sign the key's zone online (DNSSEC) with a key made by 'sockhop dns keygen ZONE'; repeatable",
    )
    parser.add_argument(
        "--rrl-rate",
        type=whole_number,
        default=200,
        metavar="N",
        help="response rate limiting: UDP replies per second to one client prefix (/24, /56) for one answer "
        "class, as NSD's rrl-ratelimit; 0 turns it off (default 200)",
    )
    parser.add_argument(
        "--rrl-slip",
        type=whole_number,
        default=2,
        metavar="N",
        help="every Nth reply over the rate goes out truncated (TC), so a real client retries over TCP; "
        "0 drops them all (default 2)",
    )
    parser.add_argument(
        "--rrl-exempt",
        action="append",
        default=[],
        metavar="ADDRESS[/PREFIX]",
        help="clients never rate limited; repeatable",
    )
    parser.add_argument(
        "--tcp-only",
        action="store_true",
        help="serve only TCP (the fork and thread models cannot serve UDP, which has no connections)",
    )


def _check_options(args: argparse.Namespace) -> None:
    if not args.zonefiles and not args.secondary:
        raise UsageError("give a ZONEFILE to serve, or --secondary ZONE@PRIMARY to serve a copy of")
    if args.secondary and args.model == "prefork" and not args.data:
        raise UsageError(
            "--secondary under prefork needs --data DIR: the master transfers the zone and keeps it there, and the "
            "workers read it from there"
        )
    plain_udp = not args.tcp_only and (args.listen or not args.listen_tls)  # only --listen-tls: DNS over TLS alone
    if args.model not in DATAGRAM_MODELS and plain_udp:
        raise UsageError(
            f"the {args.model} model cannot serve UDP (datagrams have no connections to hand out): "
            f"use --model {', '.join(DATAGRAM_MODELS)}, or add --tcp-only to serve DNS over TCP alone"
        )
    if (args.allow_update or (args.data and not args.secondary)) and args.model in ("fork", "prefork"):
        option = "--allow-update" if args.allow_update else "--data"
        raise UsageError(
            f"{option}: the {args.model} model serves from several processes, which would each change their "
            "own copy of the zone and its journal: use --model eventloop, pool, thread or iterative"
        )
    _access(args)
    for option, nets in (("--rrl-exempt", args.rrl_exempt),):
        for net in nets:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise UsageError(
                    f"{option} {net}: not an address or network (such as 192.0.2.1 or 10.0.0.0/8)"
                ) from None


def _access(args: argparse.Namespace):
    """The TSIG keyring and who may transfer and update; a key or an entry that cannot be used is one line."""
    from sockhop.dns.tsig import Acl, keyring

    ring = keyring(args.tsig, args.tsig_keyfile)
    transfer = Acl.parse("--allow-transfer", args.allow_transfer, ring)
    update = Acl.parse("--allow-update", args.allow_update, ring)
    return ring, transfer, update


def _moving(args: argparse.Namespace, ring) -> tuple[list, list]:
    """The --secondary zones (origin, primary) and the --notify targets; a mistake is one line."""
    from sockhop.dns.secondary import parse_secondary, parse_target

    secondaries = [parse_secondary(text, ring) for text in args.secondary]
    seen = set()
    for origin, _ in secondaries:
        if origin in seen:
            raise UsageError(f"--secondary {origin}: given twice")
        seen.add(origin)
    return secondaries, [parse_target("--notify", text, ring) for text in args.notify]


def _kept(args: argparse.Namespace, secondaries: list) -> dict:
    """What --data holds of each secondary zone: (zone, seconds since the last contact), or nothing."""
    from sockhop.dns.secondary import load_kept, zone_path

    if not args.data:
        return {}
    Path(args.data).mkdir(parents=True, exist_ok=True)
    kept = {}
    for origin, _ in secondaries:
        found = load_kept(zone_path(args.data, origin), origin)
        if found is not None:
            kept[origin] = found
    return kept


def open_dns(args: argparse.Namespace, opener: Opener) -> list[Listener]:
    from sockhop.dns.protocol import DnsDatagram, DnsStream
    from sockhop.dns.rrl import RateLimiter
    from sockhop.dns.server import NameServer

    _check_options(args)
    paths = list(args.zonefiles)
    keys = _signing_keys(args)
    ring, allow_transfer, allow_update = _access(args)
    secondaries, notify = _moving(args, ring)
    journals: dict = {}
    several = args.model in ("fork", "prefork")  # processes that would each journal: --data holds transfers alone
    if allow_update or (args.data and not several):  # updates to keep, or changed zone files to journal for IXFR
        if args.data:
            Path(args.data).mkdir(parents=True, exist_ok=True)
        zones, journals = _with_journals(paths, keys, args.data)

        def load() -> list:
            return _with_journals(paths, keys, args.data, journals)[0]
    else:
        zones = _zones(paths, keys)

        def load() -> list:
            return _zones(paths, keys)

    query_log = None
    if args.query_log:
        from sockhop.dns.querylog import open_query_log

        query_log = open_query_log(args.query_log)
    rrl = RateLimiter(args.rrl_rate, args.rrl_slip, args.rrl_exempt) if args.rrl_rate else None
    kept = _kept(args, secondaries)
    served = {zone.origin for zone in zones}
    for origin, _ in secondaries:
        if origin in served:
            raise UsageError(f"--secondary {origin}: a zone file here holds it already (a zone has one role)")
    fresh = {origin: found for origin, found in kept.items() if found[1] < _expire(found[0])}
    server = NameServer(
        [*zones, *(zone for zone, _ in fresh.values())],
        down=[origin for origin, _ in secondaries if origin not in fresh],
        allow_transfer=allow_transfer,
        query_log=query_log,
        loader=load,
        rrl=rrl,
        keyring=ring,
        allow_update=allow_update,
        journals=journals,
    )
    for zone in zones:
        log.info(
            "serving %s (serial %d, %d records) from %s", zone.origin, zone.serial, zone.record_count(), zone.source
        )
    args.dns_jobs = _jobs(args, server, secondaries, notify, kept)
    if args.tcp_only:
        listeners = opener.open(lambda: DnsStream(server), alpn=("dot",))
    else:
        listeners = opener.open_pair(lambda: DnsDatagram(server), lambda: DnsStream(server), alpn=("dot",))
    return with_reload(listeners, reloader(server))  # the zones, and the TLS listeners' certificates


def _expire(zone) -> float:
    from sockhop.dns.secondary import timers

    return timers(zone)[2]


def _jobs(args: argparse.Namespace, server, secondaries: list, notify: list, kept: dict) -> list:
    """The engine jobs: one per secondary zone, and the NOTIFY sender."""
    from sockhop.dns.notify import Notifier
    from sockhop.dns.secondary import Secondary

    jobs: list = []
    for origin, primary in secondaries:
        found = kept.get(origin)
        if found is not None:
            zone = found[0]
            log.info("serving %s (serial %d) as kept in %s", origin, zone.serial, args.data)
        jobs.append(Secondary(origin, primary, server, args.data, found, workers=args.model == "prefork"))
    if notify:
        jobs.append(Notifier(notify, server))
    return jobs


def _signing_keys(args: argparse.Namespace) -> list:
    """The --sign keys; one that does not load stops start-up with one line."""
    if not args.sign:
        return []
    from sockhop.dns.keys import load

    return [load(path) for path in args.sign]


def _zones(paths: list[str], keys: list) -> list:
    """Read the zone files; give the zones with a key their online signer."""
    import time

    from sockhop.dns.zone import read_zones

    zones = read_zones(paths)
    if any(zone.presigned for zone in zones):
        from sockhop.dns.proofs import problems

        for zone in zones:
            for problem in problems(zone, time.time()):
                log.warning("%s", problem)
    if not keys:
        return zones
    from sockhop.dns.signer import attach

    served = {zone.origin for zone in zones}
    for key in keys:
        if key.zone not in served:
            raise UsageError(f"--sign {key.source}: the key is for {key.zone}, which no zone file here holds")
    return attach(zones, keys, time.time)


def _with_journals(paths: list[str], keys: list, data: str | None, journals: dict | None = None):
    """The zones with the changes their journals hold since each file's serial applied again, and the journals
    (given: the ones in use, whose files are read afresh, as a reload finds them)."""
    from sockhop.dns.journal import Journal, journal_path
    from sockhop.dns.update import apply_diff

    zones = _zones(paths, keys)
    journals = {} if journals is None else journals
    out = []
    for path, zone in zip(paths, zones, strict=True):
        journal = journals.get(zone.origin)
        if journal is None:
            journal = journals[zone.origin] = Journal(journal_path(path, data, zone.origin), zone.origin)
        from_file = zone.serial
        journal.changes = []
        for change in journal.read():
            journal.remember(change)
            if change.old_serial == zone.serial:  # the changes that follow the file's serial, in order
                zone = apply_diff(zone, change)
        if zone.serial != from_file:
            log.info("%s: changes from %s applied again, now serial %d", zone.origin, journal.path, zone.serial)
        out.append(zone)
    return out, journals


def reloader(server):
    """The SIGHUP hook (Listener.reload): re-read the zone files; a broken one keeps the old data and says why."""

    def reload() -> None:
        outcome = server.reload()
        # one write per line: a prefork master and its workers report at the same moment on one stderr
        sys.stderr.write(f"sockhop: dns: {outcome.message}\n")
        sys.stderr.flush()

    return reload


def check_dns(args: argparse.Namespace) -> list[Problem]:
    from sockhop.dns.zone import read_zones

    problems = []
    try:
        _check_options(args)
    except SockhopError as exc:
        problems.append(Problem("model", str(exc)))
    for path in args.zonefiles:
        try:
            read_zones([path])
        except SockhopError as exc:
            problems.append(Problem("zonefiles", str(exc)))
    try:
        _signing_keys(args)
    except SockhopError as exc:
        problems.append(Problem("sign", str(exc)))
    try:
        ring = _access(args)[0]
    except SockhopError:
        return problems  # said already, under the model's checks
    try:
        _moving(args, ring)
    except SockhopError as exc:
        problems.append(Problem("notify" if str(exc).startswith("--notify") else "secondary", str(exc)))
    return problems


def up_plans(ctx: UpContext) -> list[UpPlan]:
    """The built-in zone ``sockhop.test.`` (written to the data folder, so it can be read and copied) on UDP and TCP
    port 5353 (53 needs privilege)."""
    ctx.data.mkdir(parents=True, exist_ok=True)
    path = ctx.data / f"{ORIGIN}zone"
    path.write_text(zone_text(ctx.host))
    log = [] if ctx.quiet else ["--query-log", "-"]
    return [
        UpPlan(
            [str(path), *log],
            [
                f"dig @{ctx.host} -p {DEFAULT_PORT} sockhop.test MX",
                f"{ctx.command} resolve www.sockhop.test @{ctx.url_host()}:{DEFAULT_PORT} --tcp",
            ],
        )
    ]


SERVICE = Service(
    name="dns",
    help="an authoritative name server for RFC 1035 zone files, on UDP and TCP",
    description="Answer authoritatively for the zones in the master files, on UDP and TCP on the same port. "
    "SIGHUP reloads the files (a broken file keeps the old data).",
    default_port=DEFAULT_PORT,
    add_arguments=add_arguments,
    open=open_dns,
    up=up_plans,
    twin=Twin(8853, ("dot",), "kdig @{host} -p 8853 +tls-ca={ca} +tls-hostname=localhost sockhop.test MX"),
    check=check_dns,
    kinds=lambda args: (socket.SOCK_STREAM,) if args.tcp_only else (socket.SOCK_DGRAM, socket.SOCK_STREAM),
    jobs=lambda args: getattr(args, "dns_jobs", []),
    commands=(
        Command(
            "dns",
            "DNSSEC keys, zone journals, kept zones: keygen ZONE, ds ZONE, fold ZONEFILE, show FILE",
            keycommands.add_arguments,
            keycommands.run,
            description="keygen ZONE makes a signing key (ZONE.key, readable by you alone) for serve dns --sign; "
            "ds ZONE prints the DS record the parent zone publishes for it; fold ZONEFILE writes the journal of "
            "dynamic updates into the zone file and empties it; show FILE prints a zone a secondary keeps in --data "
            "(ZONE.axfr) or a zone file as a master file.",
        ),
        Command(
            "resolve",
            "ask a name server a question and print the answer (as dig)",
            lookup.add_arguments,
            lookup.run,
            description="A stub resolver: NAME [TYPE] [@SERVER[:PORT]]; without @SERVER, the nameservers of "
            "/etc/resolv.conf.",
        ),
    ),
)
