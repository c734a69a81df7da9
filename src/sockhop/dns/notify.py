"""NOTIFY (RFC 1996) from the primary: ``--notify ADDRESS[:PORT][,key=NAME]`` tells secondaries a zone changed.

One engine :class:`~sockhop.engine.protocol.Job` watches the zones: at start and whenever a zone's serial moves (a
reload, an accepted update, a transfer), it sends each target a NOTIFY over UDP through the engine's outbound
connections -- TSIG-signed when the target names a key -- and sends it again, waiting twice as long each time, until
the target answers (``RETRIES`` times at most), as BIND and NSD do. A newer serial supersedes the NOTIFY in flight.

The update path runs off the event loop (and, under prefork, the master holds the job): it only calls
``handle.wake()``, which carries across threads and processes; the job then compares serials itself.
"""

from __future__ import annotations

import logging

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from sockhop.dns.secondary import Primary
from sockhop.engine.protocol import NOTHING, Address, ClientProtocol, Close, Job, Reply

log = logging.getLogger("sockhop.dns")

TIMEOUT = 2.0  # the first wait for an answer; doubled on each retry
RETRIES = 5


def message(origin: dns.name.Name, soa, key) -> dns.message.Message:
    """A NOTIFY for ``origin``: opcode NOTIFY, AA, the question (origin, SOA) and the SOA as a hint (section 3.7)."""
    notify = dns.message.make_query(origin, dns.rdatatype.SOA, dns.rdataclass.IN)
    notify.flags = dns.flags.AA  # no RD
    notify.set_opcode(dns.opcode.NOTIFY)
    if soa is not None:
        notify.answer.append(soa)
    if key is not None:
        notify.use_tsig(key)
    return notify


class Notifier(Job):
    """Sends NOTIFY for every zone whose serial moved to every ``--notify`` target."""

    def __init__(self, targets: list[Primary], server) -> None:
        self.targets = targets
        self.server = server  # sockhop.dns.server.NameServer
        self.sent: dict[dns.name.Name, int] = {}  # the serial last notified, by zone
        server.watchers.append(self.changed)

    def changed(self) -> None:
        self.handle.wake()

    def started(self) -> Reply:
        return self.woken()

    def woken(self) -> Reply:
        for origin, zone in self.server.snapshot.authority.zones.items():
            if self.sent.get(origin) != zone.serial:
                self.sent[origin] = zone.serial
                for target in self.targets:
                    self.send(origin, zone.serial, target, 0)
        return NOTHING

    def send(self, origin: dns.name.Name, serial: int, target: Primary, attempt: int) -> Reply:
        if self.sent.get(origin) != serial:  # a newer serial is being notified
            return NOTHING
        zone = self.server.snapshot.authority.zones.get(origin)
        query = message(origin, zone.soa if zone is not None else None, target.key)
        client = NotifyClient(self, query, origin, serial, target, attempt)
        self.handle.connect(target.address, client, udp=True, timeout=TIMEOUT)
        return NOTHING

    def unanswered(self, client: NotifyClient, why: str) -> None:
        origin, serial, target, attempt = client.origin, client.serial, client.target, client.attempt
        if self.sent.get(origin) != serial:
            return
        if attempt + 1 >= RETRIES:
            log.warning("dns: NOTIFY %s serial %d to %s: %s, given up after %d tries", origin, serial, target, why,
                        RETRIES)  # fmt: skip
            return
        log.info("dns: NOTIFY %s serial %d to %s: %s; again", origin, serial, target, why)
        self.handle.call_later(TIMEOUT * 2**attempt, lambda: self.send(origin, serial, target, attempt + 1))


class NotifyClient(ClientProtocol):
    """One NOTIFY datagram and its answer."""

    def __init__(self, notifier: Notifier, query, origin, serial: int, target: Primary, attempt: int) -> None:
        self.notifier = notifier
        self.query = query
        self.wire = query.to_wire()  # signing sets the MAC the answer's TSIG is checked against
        self.origin, self.serial, self.target, self.attempt = origin, serial, target, attempt
        self.over = False

    def connection_made(self, peer: Address, local: Address) -> Reply:
        return Reply((self.wire,), alarm=TIMEOUT * 2**self.attempt)

    def data_received(self, data: bytes) -> Reply:
        try:
            answer = dns.message.from_wire(data, keyring=self.query.keyring, request_mac=self.query.mac)
        except Exception:  # not an answer to us (a stray datagram, a bad signature): wait on
            return NOTHING
        if not self.query.is_response(answer):
            return NOTHING
        self.over = True
        rcode = dns.rcode.to_text(answer.rcode())
        if answer.rcode() == dns.rcode.NOERROR:
            log.info("dns: NOTIFY %s serial %d to %s: NOERROR", self.origin, self.serial, self.target)
        else:  # answered: the target heard it, and asking again would get the same
            log.warning("dns: NOTIFY %s serial %d to %s: %s", self.origin, self.serial, self.target, rcode)
        return Reply(close=Close.AT_ONCE)

    def _unanswered(self, why: str) -> None:
        if not self.over:
            self.over = True
            self.notifier.unanswered(self, why)

    def timed_out(self) -> Reply:
        self._unanswered("no answer")
        return NOTHING

    def connection_failed(self, error: Exception) -> None:
        self._unanswered(str(error))

    def connection_lost(self) -> None:
        error = self.handle.error if getattr(self, "handle", None) is not None else None
        self._unanswered(str(error) if error else "no answer")
