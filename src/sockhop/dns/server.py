"""The answering core both transports share: wire bytes in, wire bytes out, through a cache of encoded replies.

A DNS reply depends only on the query's bytes after its 2-byte ID (flags, question, EDNS options) and on the zone
data, so the reply is cached under exactly those bytes and a repeated question costs a dict lookup and one
concatenation: the ID is patched in, nothing is parsed or encoded. The cache belongs to a zone snapshot, so a
reload swaps data and cache together, atomically for every thread reading them.

What the core decides, in order:

* fewer than 12 bytes, or a response rather than a query: dropped (no reply is safer than a reply to a forgery);
* a header that can be read over a message that cannot: FORMERR;
* a TSIG that does not verify: NOTAUTH with BADKEY, BADSIG or BADTIME (:mod:`sockhop.dns.tsig`); a signed query
  gets a signed reply, never cached;
* NOTIFY (RFC 1996) for a zone this server is secondary for, from its primary: NOERROR, and the zone's refresh is
  woken; from anyone else REFUSED;
* an opcode other than QUERY: NOTIMP (UPDATE goes to :meth:`NameServer.update` before this); not exactly one
  question: FORMERR; EDNS version above 0: BADVERS;
* IXFR over UDP: the zone's SOA alone, to those who may transfer (RFC 1995 section 2: the client then asks over
  TCP); AXFR over UDP: NOTIMP (a TCP conversation, see :mod:`sockhop.dns.protocol`);
* otherwise the authority's answer; with the DO bit (RFC 3225) a signed zone's answer carries its signatures and
  proofs of non-existence, so DO is part of the cache key as it is part of the query's bytes. Over UDP it must
  fit the client's EDNS payload size (512 without EDNS), capped at ``UDP_PAYLOAD`` -- the size that avoids IP
  fragmentation and bounds what a spoofed source can reflect; a reply that does not fit goes out empty with TC
  set, and the client asks again over TCP.

Every reply carries its answer class for response rate limiting (:mod:`sockhop.dns.rrl`), cached beside it; a
query with a DNS cookie (:mod:`sockhop.dns.cookies`) gets its server cookie back and is never cached, and one whose
server cookie is valid has no class: its address is proven and it is not limited.
"""

from __future__ import annotations

import ipaddress
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from sockhop.dns import tsig
from sockhop.dns.authority import Authority
from sockhop.dns.cookies import CookieJar, packed_address, split_cookie, with_cookie
from sockhop.dns.rrl import RateLimiter
from sockhop.dns.tsig import Acl, BadTsig, Keyring, wire_keys
from sockhop.dns.updatewire import ParsedUpdate, WireUpdate
from sockhop.dns.updatewire import read as read_update
from sockhop.dns.zone import Zone, ZoneError

RdataType = dns.rdatatype.RdataType
Rcode = dns.rcode.Rcode

HEADER = 12
UDP_PAYLOAD = 1232  # RFC 9715's / DNS Flag Day 2020's advice: no fragmentation, little amplification
CLASSIC_PAYLOAD = 512  # RFC 1035's UDP limit for clients without EDNS
CACHE_BYTES = 16 * 1024 * 1024  # encoded replies kept per transport and process; the oldest go first
QR = 0x80  # in the first flags byte
TRANSFER_TYPES = (RdataType.AXFR, RdataType.IXFR)
ERROR_CLASS = b"\x00error"  # the answer class of every error reply (RRL)
INFINITY = float("inf")
RENEW_REPLIES = 86400  # encoded replies of zones signed online are dropped daily (signatures are renewed weekly)
NXDOMAIN_CLASS = b"\x00nx"  # followed by the zone's name: every NXDOMAIN of one zone is one class

#: ``log(peer, transport, summary)`` -- called once per answered query when a query log is on.
QueryLog = Callable[[object, str, str], None]
#: an update's answer and its log line
Answered = tuple[bytes, str]


class Sync:
    """The work that makes a written update durable and answers it. ``quick``: the journal's last sync was
    (:data:`sockhop.dns.journal.QUICK_SYNC`), so the caller may run it on its own thread, the event loop's -- a
    hand-off to the deferred thread and back cost more than such a sync (0.1 ms an update, 12 % of nsupdate's
    rate); after a slow one, the sync goes off the loop, which keeps answering meanwhile."""

    __slots__ = ("work", "quick")

    def __init__(self, work: Callable[[], Answered], quick: bool) -> None:
        self.work = work
        self.quick = quick

    def __call__(self) -> Answered:
        return self.work()


class ReplyCache:
    """Encoded replies (without their ID), their log line and answer class, by the query's bytes after its ID.

    Bounded in bytes, not entries: a TCP reply can be 64 KiB, and a client choosing its questions (case, EDNS
    options) must not be able to grow the cache without limit. Full: the oldest entries go, found in a queue of the
    keys (a dict's first entry is found by a scan past every one deleted before it: 16 µs per reply once the cache
    of a server asked ever new names -- NXDOMAINs signed online -- was full).
    """

    __slots__ = ("entries", "order", "size", "limit", "lock")

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.entries: dict[bytes, tuple[bytes, str, bytes]] = {}
        self.order: deque[bytes] = deque()  # the keys of entries, oldest first
        self.size = 0
        self.limit = limit
        self.lock = threading.Lock()  # the pool model's threads share it; reads need no lock, a dict get is atomic

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, key: bytes, reply: bytes, summary: str, answer_class: bytes) -> None:
        cost = len(key) + len(reply)
        if cost > self.limit:
            return
        entries = self.entries
        with self.lock:
            if key in entries:
                return
            while self.size + cost > self.limit:
                old_key = self.order.popleft()
                old_reply = entries.pop(old_key)[0]
                self.size -= len(old_key) + len(old_reply)
            entries[key] = (reply, summary, answer_class)
            self.order.append(key)
            self.size += cost


@dataclass
class Snapshot:
    """Zone data and the replies encoded from it, replaced together on reload."""

    authority: Authority
    udp_cache: ReplyCache = field(default_factory=ReplyCache)
    tcp_cache: ReplyCache = field(default_factory=ReplyCache)
    #: when the encoded replies of zones signed online must go, their signatures due for renewal (0: at the first
    #: tick, which sets it; never for zones without a signer)
    renew_at: float = 0.0

    def __post_init__(self) -> None:
        if not any(zone.signer is not None for zone in self.authority.zones.values()):
            self.renew_at = INFINITY


@dataclass(frozen=True)
class Reloaded:
    """What a reload did, in words for the log."""

    ok: bool
    message: str


class NameServer:
    """What every DNS protocol instance of one server shares: zones, reply caches, the transfer list, the log.

    One object per process; the protocols call :meth:`respond` and :meth:`transfer`. ``loader`` re-reads the zone
    files for :meth:`reload` (SIGHUP).
    """

    def __init__(
        self,
        zones: Iterable[Zone],
        *,
        allow_transfer: Iterable[str] | Acl = (),
        query_log: QueryLog | None = None,
        loader: Callable[[], list[Zone]] | None = None,
        rrl: RateLimiter | None = None,
        keyring: Keyring | None = None,
        allow_update: Acl | None = None,
        journals: dict | None = None,
        down: Iterable[dns.name.Name] = (),
    ) -> None:
        self.snapshot = Snapshot(Authority(zones, down))
        if not isinstance(allow_transfer, Acl):
            allow_transfer = Acl([ipaddress.ip_network(net, strict=False) for net in allow_transfer])
        self.allow_transfer = allow_transfer
        self.keyring: Keyring = keyring or {}
        self.wire_keys = wire_keys(self.keyring)  # what updates are checked and answered with (tsig.WireKey)
        #: names updates carry, by their wire form (updatewire.known_name): the zones', the keys', the algorithms'
        self.wire_names: dict[bytes, dns.name.Name] = {
            name.to_wire(): name
            for name in (*self.snapshot.authority.zones, *self.keyring, *(k.algorithm for k in self.keyring.values()))
        }
        self.allow_update = allow_update or Acl()
        #: the journal of each zone, by origin (:mod:`sockhop.dns.journal`); zones without one take no updates
        self.journals: dict = journals or {}
        self.update_lock = threading.Lock()  # one update at a time: each applies to the zone the last one left
        #: by zone: the versions updates made and wrote to the journal, not yet synced -- served once they are
        self.pending: dict[dns.name.Name, list[tuple[Zone, Any]]] = {}
        self.query_log = query_log
        self.loader = loader
        self.rrl = rrl
        #: the zones this server is secondary for, by origin: what takes their NOTIFY (:mod:`sockhop.dns.secondary`)
        self.secondaries: dict[dns.name.Name, Any] = {}
        #: called (from any thread) when a zone changed: a reload, an update, a transfer -- NOTIFY follows
        self.watchers: list[Callable[[], None]] = []
        self.cookies = CookieJar()
        self.now = 0.0  # the engine's clock, as the UDP protocols last saw it (tick)

    def tick(self, now: float) -> None:
        """The engine's clock, handed over before each batch of datagrams."""
        self.now = now
        if self.rrl is not None:
            self.rrl.tick(now)
        if now >= self.snapshot.renew_at:
            self.renew(now)

    def connection_opened(self) -> None:
        """A TCP connection began. Without UDP (``--tcp-only``) no tick comes, so a zone signed online renews its
        encoded replies here, by its signer's clock (handed in by the service, as signing needs one anyway)."""
        if self.snapshot.renew_at != INFINITY:
            signer = next(zone.signer for zone in self.snapshot.authority.zones.values() if zone.signer is not None)
            self.renew(signer.clock())  # type: ignore[attr-defined]

    def renew(self, now: float) -> None:
        snapshot = self.snapshot
        if now >= snapshot.renew_at:
            if snapshot.renew_at:  # signatures in the encoded replies are due: encode afresh
                snapshot = self.snapshot = Snapshot(snapshot.authority)
            snapshot.renew_at = now + RENEW_REPLIES

    # -- reload --------------------------------------------------------------------------------------------------
    def reload(self) -> Reloaded:
        """Read the zone files again; on any error keep serving the old data and say why."""
        if self.loader is None:
            return Reloaded(False, "reload: no zone files to read again")
        with self.update_lock:
            try:
                zones = self.loader()
                notes = self._record_reload(zones)
            except (ZoneError, OSError) as exc:
                return Reloaded(False, f"reload failed, still serving the old zones: {exc}")
            old = self.snapshot.authority
            kept, down = [], []  # what transfers brought: not from the zone files
            for origin, secondary in self.secondaries.items():
                zone, is_down = secondary.served(old)
                if is_down or zone is None:
                    down.append(origin)
                else:
                    kept.append(zone)
            self.snapshot = Snapshot(Authority([*zones, *kept], down))
            self.pending.clear()  # the journals were read again, the changes written so far with them
        self.changed()
        authority = self.snapshot.authority
        names = ", ".join(
            [f"{zone.origin} (serial {zone.serial})" for zone in authority.zones.values()]
            + [f"{origin} (down)" for origin in authority.down]
        )
        return Reloaded(True, f"reloaded {names}{''.join(notes)}")

    def changed(self) -> None:
        for watcher in self.watchers:
            watcher()

    # -- the secondary role ------------------------------------------------------------------------------------
    def install(self, zone: Zone) -> None:
        """Serve a zone a transfer brought, in place of its older version (or of SERVFAIL)."""
        with self.update_lock:
            self.snapshot = Snapshot(self.snapshot.authority.with_zone(zone))
        self.changed()

    def take_down(self, origin: dns.name.Name) -> None:
        """Answer SERVFAIL for a secondary zone whose primary has not been reached for the SOA's expire time."""
        with self.update_lock:
            self.snapshot = Snapshot(self.snapshot.authority.without(origin))

    def _notify(self, query: dns.message.Message, peer: object, tcp: bool) -> tuple[bytes, str]:
        """A NOTIFY (RFC 1996) for a zone this server is secondary for: answered at once, and its refresh woken --
        from its primary (or signed with the zone's key) only; anyone else's REFUSED."""
        response = dns.message.make_response(query)
        question = query.question[0] if query.question else None
        summary = f"NOTIFY {question.name if question is not None else '-'}"
        secondary = self.secondaries.get(question.name) if question is not None else None
        if question is None or len(query.question) != 1:
            response.set_rcode(Rcode.FORMERR)
        elif secondary is None:
            response.set_rcode(Rcode.NOTAUTH if question.name not in self.snapshot.authority.zones else Rcode.REFUSED)
        elif not secondary.accepts_notify(peer, query.keyname if query.had_tsig else None):
            response.set_rcode(Rcode.REFUSED)
        else:
            response.flags |= dns.flags.AA
            secondary.notified()
        return encode(response, tcp, query), f"{summary} {dns.rcode.to_text(response.rcode())}"

    def _record_reload(self, zones: list[Zone]) -> list[str]:
        """A zone file changed under a new serial: its difference to what was served goes in the journal, for
        IXFR. (The loader has applied the journal's changes that follow the file's serial already.)"""
        from sockhop.dns.update import difference

        notes = []
        for zone in zones:
            old = self.snapshot.authority.zones.get(zone.origin)
            journal = self.journals.get(zone.origin)
            if old is None or journal is None:
                continue
            diff = difference(old, zone)
            if old.serial == zone.serial:
                if diff.deleted or diff.added:
                    notes.append(f"; {zone.origin} changed but its serial did not: secondaries will not see it")
                continue
            journal.append(diff)
            notes.append(f"; {zone.origin} {diff.old_serial} -> {diff.new_serial} journaled for IXFR")
        return notes

    # -- queries -------------------------------------------------------------------------------------------------
    def respond(self, data: bytes, peer: object = None, *, tcp: bool = False) -> bytes | None:
        """The reply to one query message, or None to drop it. Never raises for anything a client sends."""
        return self.respond_classed(data, peer, tcp=tcp)[0]

    def respond_classed(
        self, data: bytes, peer: object = None, *, tcp: bool = False
    ) -> tuple[bytes | None, bytes | None]:
        """The reply (None: drop the query) and its answer class for rate limiting (None: the client has proven
        its address with a cookie)."""
        snapshot = self.snapshot
        cache = snapshot.tcp_cache if tcp else snapshot.udp_cache
        hit = cache.entries.get(data[2:])
        if hit is not None:
            if self.query_log is not None:
                self.query_log(peer, "tcp" if tcp else "udp", hit[1])
            return data[:2] + hit[0], hit[2]
        if len(data) < HEADER or data[2] & QR:
            return None, None
        cookie = split_cookie(data) if data[11] else None
        if cookie is not None:
            return self._with_cookie(cache, snapshot.authority, data, cookie, peer, tcp)
        reply, summary, cacheable, answer_class = self._answer(snapshot.authority, data, tcp, peer)
        if cacheable:
            cache.put(data[2:], reply[2:], summary, answer_class)
        if self.query_log is not None:
            self.query_log(peer, "tcp" if tcp else "udp", summary)
        return reply, answer_class

    def _with_cookie(
        self, cache: ReplyCache, authority: Authority, data: bytes, cookie: tuple, peer: object, tcp: bool
    ) -> tuple[bytes | None, bytes | None]:
        """A query with a DNS cookie: the reply to the same query without it (cached as such), with a fresh server
        cookie added; no answer class if the client returned a valid one of ours."""
        stripped, client, theirs, payload = cookie
        address = packed_address(peer)
        now = int(self.now)
        hit = cache.entries.get(stripped[2:])
        if hit is not None:
            reply, summary, answer_class = data[:2] + hit[0], hit[1], hit[2]
        else:
            reply, summary, cacheable, answer_class = self._answer(authority, stripped, tcp, peer)
            if cacheable:
                cache.put(stripped[2:], reply[2:], summary, answer_class)
        if self.query_log is not None:
            self.query_log(peer, "tcp" if tcp else "udp", summary)
        limit = 65535 if tcp else min(max(CLASSIC_PAYLOAD, payload), UDP_PAYLOAD)
        reply = with_cookie(reply, client, self.cookies.make(client, address, now), limit)
        proven = bool(theirs) and self.cookies.valid(client, theirs, address, now)
        return reply, None if proven else answer_class

    def _answer(
        self, authority: Authority, data: bytes, tcp: bool, peer: object = None
    ) -> tuple[bytes, str, bool, bytes]:
        """Encode the reply: (wire, a summary line for the log, whether it may be cached, its answer class). A
        signed query (TSIG) gets a signed reply, never cached: the signature covers the moment."""
        try:
            query = tsig.parse(data, self.keyring)
        except BadTsig as bad:
            return bad.reply, f"- {bad.summary} NOTAUTH", False, ERROR_CLASS
        except Exception:  # dnspython raises many kinds (and not only DNSException) for garbage; a bad cookie too
            return header_only(data, Rcode.FORMERR), "- malformed FORMERR", False, ERROR_CLASS
        if query.opcode() == dns.opcode.NOTIFY:
            reply, summary = self._notify(query, peer, tcp)
            return reply, summary, False, ERROR_CLASS
        if query.opcode() != dns.opcode.QUERY:
            opcode = dns.opcode.to_text(query.opcode())
            return header_only(data, Rcode.NOTIMP), f"- opcode {opcode} NOTIMP", True, ERROR_CLASS
        if len(query.question) != 1:
            return header_only(data, Rcode.FORMERR), f"- {len(query.question)} questions FORMERR", True, ERROR_CLASS
        question = query.question[0]
        response = dns.message.make_response(query, our_payload=UDP_PAYLOAD, pad=0)
        dnssec = query.edns >= 0 and bool(query.ednsflags & dns.flags.DO)
        if dnssec:
            response.ednsflags |= dns.flags.DO
        trim = False
        zone_name: dns.name.Name | None = None
        logged = self.query_log is not None  # the summary is for the query log alone: spelt out only for one
        summary = (
            f"{question.name} {dns.rdataclass.to_text(question.rdclass)} {dns.rdatatype.to_text(question.rdtype)}"
            if logged
            else ""
        )
        if query.edns > 0:
            response.set_rcode(Rcode.BADVERS)
        elif question.rdclass != dns.rdataclass.IN:
            response.set_rcode(Rcode.REFUSED)
        elif question.rdtype == RdataType.IXFR and not tcp and question.name in authority.zones:
            # RFC 1995 section 2: over UDP, the current SOA alone -- the client then transfers over TCP
            if self.may_transfer(peer, query.keyname):
                response.flags |= dns.flags.AA
                response.answer = [authority.zones[question.name].soa]
            else:
                response.set_rcode(Rcode.REFUSED)
            wire = encode(response, tcp, query)
            return wire, f"{summary} {dns.rcode.to_text(response.rcode())}" if logged else "", False, ERROR_CLASS
        elif question.rdtype in TRANSFER_TYPES:
            response.set_rcode(Rcode.NOTIMP if not tcp else Rcode.REFUSED)
        else:
            with_ns = not query.flags & dns.flags.RD  # a resolver's question: NS in authority, as NSD and BIND
            answer = authority.answer(question.name, question.rdtype, tcp=tcp, with_ns=with_ns, dnssec=dnssec)
            zone_name = answer.zone
            response.set_rcode(answer.rcode)
            if answer.authoritative:
                response.flags |= dns.flags.AA
            response.answer = answer.answer
            response.authority = answer.authority
            response.additional = answer.additional
            trim = answer.extras_optional
        wire = encode(response, tcp, query, trim)
        if logged:
            summary = f"{summary} {dns.rcode.to_text(response.rcode())}{' TC' if tc(wire) else ''}"
        return wire, summary, not query.had_tsig, rrl_class(response, question, zone_name)

    # -- dynamic update (RFC 2136) --------------------------------------------------------------------------------
    def update(self, data: bytes, peer: object) -> Answered | Callable[[], Answered]:
        """An UPDATE message: a refusal at once (reply, log line), or the work that applies it, journals and syncs
        it, and swaps the zone in -- blocking work, for ``Reply.then`` -- returning the reply and its log line.

        Read and answered on the wire (:mod:`sockhop.dns.updatewire`); what that leaves -- EDNS, a bad signature,
        garbage -- dns.message reads, and answers as RFC 8945 and RFC 2136 say."""
        request: WireUpdate | ParsedUpdate | None = read_update(data, self.wire_keys, int(time.time()), self.wire_names)
        if request is None:
            try:
                request = ParsedUpdate(tsig.parse(data, self.keyring))
            except BadTsig as bad:
                return bad.reply, f"UPDATE {bad.summary} NOTAUTH"
            except Exception:  # dnspython raises many kinds for garbage
                return header_only(data, Rcode.FORMERR), "UPDATE malformed FORMERR"
        origin = request.zone  # the zone section (RFC 2136 section 2.3)
        if origin is None:
            return request.reply(Rcode.FORMERR), "UPDATE without one SOA zone FORMERR"
        summary = f"UPDATE {origin}"
        zone = self.snapshot.authority.zones.get(origin)
        if zone is None:
            return request.reply(Rcode.NOTAUTH), f"{summary} not our zone NOTAUTH"
        origin = zone.origin  # the zone's own name: the dicts keyed by it find it without comparing labels
        key = request.key
        if origin not in self.journals or not self.allow_update.allows(peer, key):
            signed = f" (key {key})" if key is not None else " (unsigned)"
            return request.reply(Rcode.REFUSED), f"{summary}{signed} REFUSED"

        if not self.update_lock.acquire(blocking=False):  # a reload or a transfer holds the zones: off the loop

            def after() -> Answered:
                with self.update_lock:
                    work = self._applied(origin, request, summary)
                return work() if callable(work) else work

            return after
        try:
            return self._applied(origin, request, summary)  # the answer, or the sync that makes it true
        finally:
            self.update_lock.release()

    def _applied(
        self, origin: dns.name.Name, request: WireUpdate | ParsedUpdate, summary: str
    ) -> Answered | Callable[[], Answered]:
        """The update applied to the zone's latest version and its change written to the journal, under
        ``update_lock``, on the caller's thread -- the event loop's, for an update over TCP: the deferred thread is
        handed at most the sync (a thread that did all of it cost a tenth of a millisecond more, the GIL and the caches
        moving between cores), and only after a slow one (:class:`Sync`). The answer at once when there is nothing to
        sync; else the work that syncs the journal, then serves the new version (and any written before it) and
        answers.

        The latest version is the last one written and not yet synced, if any (``pending``): the next update
        builds on it. A sync makes every change written before it durable (one file), so it serves them all, in
        order -- whether or not the work that would have synced them ever runs (its connection gone first)."""
        from sockhop.dns.update import apply as apply_update

        waiting = self.pending.get(origin)
        zone = waiting[-1][0] if waiting else self.snapshot.authority.zones[origin]
        outcome = apply_update(zone, request)
        if outcome.rcode != Rcode.NOERROR:
            why = f" ({outcome.reason})" if outcome.reason else ""
            return request.reply(outcome.rcode), f"{summary}{why} {Rcode(outcome.rcode).name}"
        if outcome.zone is None:
            return request.reply(Rcode.NOERROR), f"{summary} NOERROR no change"
        diff = outcome.diff
        assert diff is not None
        journal = self.journals[origin]
        try:
            journal.write(diff)
        except OSError as exc:
            return request.reply(Rcode.SERVFAIL), f"{summary} journal: {exc.strerror} SERVFAIL"
        version = (outcome.zone, diff)
        self.pending.setdefault(origin, []).append(version)
        reply = request.reply(Rcode.NOERROR)

        def sync() -> Answered:
            try:
                journal.sync()
            except OSError as exc:
                return request.reply(Rcode.SERVFAIL), f"{summary} journal: {exc.strerror} SERVFAIL"
            with self.update_lock:
                served = self._serve_synced(origin, version)
            if served:
                self.changed()
            return reply, f"{summary} NOERROR serial {diff.old_serial} -> {diff.new_serial}"

        return Sync(sync, journal.quick)

    def _serve_synced(self, origin: dns.name.Name, version: tuple[Zone, Any]) -> bool:
        """Serve ``version`` and the versions written before it, now synced: their changes remembered for IXFR, in
        order. False if a later sync (or a reload) has served it already."""
        waiting = self.pending.get(origin, [])
        count = next((at + 1 for at, candidate in enumerate(waiting) if candidate is version), 0)
        journal = self.journals[origin]
        for zone, diff in waiting[:count]:
            journal.remember(diff)
            self._swap(zone, diff)
        del waiting[:count]
        return count > 0

    def _swap(self, zone: Zone, diff) -> None:
        """Serve the changed zone: a new snapshot (its reply caches empty), the signer's old signatures of the
        changed RRsets forgotten."""
        touched = {rrset.name for rrset in (*diff.deleted, *diff.added)}
        if zone.signer is not None:
            zone.signer.forget(touched)  # type: ignore[attr-defined]
        self.snapshot = Snapshot(self.snapshot.authority.replacing(zone, touched))

    # -- transfers -----------------------------------------------------------------------------------------------
    def may_transfer(self, peer: object, key: dns.name.Name | None = None) -> bool:
        """Whether ``peer`` (having signed with ``key``, if any) may transfer zones (``--allow-transfer``)."""
        return self.allow_transfer.allows(peer, key)


def rrl_class(response: dns.message.Message, question: dns.rrset.RRset, zone: dns.name.Name | None) -> bytes:
    """The answer class of a reply (RRL): errors one class, a zone's NXDOMAINs one, a referral its cut, anything
    else its name and type."""
    rcode = response.rcode()
    if rcode == Rcode.NXDOMAIN and zone is not None:
        return NXDOMAIN_CLASS + zone.to_digestable()
    if rcode != Rcode.NOERROR:
        return ERROR_CLASS
    if not response.flags & dns.flags.AA and response.authority:
        return response.authority[0].name.to_digestable()
    return question.name.to_digestable() + question.rdtype.to_bytes(2, "big")


def encode(response: dns.message.Message, tcp: bool, query: dns.message.Message, trim: bool = False) -> bytes:
    """The response on the wire. Too big for the client's size (over UDP) or for 64 KiB: without its optional
    extras (``trim``: authority and additional of a positive answer, RFC 2181 section 9), else an empty one with
    TC set."""
    limit = 65535 if tcp else udp_limit(query)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        pass
    if trim:
        response.authority, response.additional = [], []
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            pass
    response.answer, response.authority, response.additional = [], [], []
    response.flags |= dns.flags.TC
    return response.to_wire()


def udp_limit(query: dns.message.Message) -> int:
    if query.edns < 0:
        return CLASSIC_PAYLOAD
    return min(max(CLASSIC_PAYLOAD, query.payload), UDP_PAYLOAD)


def tc(wire: bytes) -> bool:
    return len(wire) >= 3 and bool(wire[2] & 0x02)


def header_only(data: bytes, rcode: int) -> bytes:
    """A reply that is just a header: the query's ID, opcode and RD, QR set, ``rcode``, no sections. For messages
    too broken (or too unusual) to echo their question back."""
    qid, flags = struct.unpack_from("!HH", data)
    flags = (flags & 0x7900) | 0x8000 | (rcode & 0xF)  # keep opcode and RD; set QR; the rcode
    return struct.pack("!HHHHHH", qid, flags, 0, 0, 0, 0)
