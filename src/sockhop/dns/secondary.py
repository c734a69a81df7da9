"""The secondary role: ``--secondary ZONE@PRIMARY[:PORT][,key=NAME]`` keeps a copy of a zone another server holds.

One engine :class:`~sockhop.engine.protocol.Job` per zone does what BIND's and NSD's zone maintenance does
(RFC 1034 section 4.3.5, RFC 1995, RFC 1996): it transfers the zone over TCP through the engine's outbound
connections -- IXFR from the serial it has, AXFR when it has none -- and asks again after the SOA's refresh time
(its retry time after a failure); a NOTIFY from the primary (the query path hands it over and wakes the job) asks
at once. Each contact with the primary restarts the SOA's expire time; when it passes, the zone is answered
SERVFAIL until the primary is back. A transfer is used only once whole and checked (:mod:`sockhop.dns.pull`): one
cut off, garbled or wrongly signed never replaces the zone being served, and says why in one line.

With ``--data DIR`` the zone is kept in ``DIR/ZONE.axfr`` (the AXFR stream that carries it: :mod:`sockhop.dns.axfrfile`,
read back by the transfer reader itself), written once the new version is served, off the event loop, atomically (a
temporary file, synced, renamed); its modification time is the last contact, as BIND keeps it: a restart serves it
at once, or SERVFAIL if it expired meanwhile.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.serial
import dns.tsig

from sockhop.dns.pull import Pulled, TransferFailed, TransferReader, framed, request
from sockhop.dns.zone import Zone, ZoneError, from_wire, read_zone_file
from sockhop.engine.protocol import CLOSE, NOTHING, Address, ClientProtocol, Close, Job, Reply
from sockhop.errors import SockhopError, UsageError
from sockhop.net.addresses import peer_ip

log = logging.getLogger("sockhop.dns")

READ_TIMEOUT = 30.0  # seconds without a byte from the primary in the middle of a transfer
FIRST_RETRY = 2.0  # no SOA yet to say how long to wait after a failure: 2 s, doubled up to MAX_FIRST_RETRY
MAX_FIRST_RETRY = 300.0
MIN_TIMER = 1.0  # the SOA's timers are obeyed down to a second
KEEP_GRACE = 30.0  # seconds a stopping server waits for the zone being written to --data


@dataclass(frozen=True)
class Primary:
    """Where a zone comes from (or a NOTIFY goes), and the TSIG key that signs the conversation."""

    address: tuple[str, int]
    key: dns.tsig.Key | None = None

    def __str__(self) -> str:
        host, port = self.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_target(option: str, text: str, ring: dict, shown: str = "") -> Primary:
    """``ADDRESS[:PORT][,key=NAME]`` -- an IP address (nothing asks a resolver), port 53 by default. ``shown``: the
    option's whole value, for the message."""
    from sockhop.net.addresses import parse_endpoint

    where, *options = text.split(",")
    text = shown or text
    key = None
    for item in options:
        name, sep, value = item.partition("=")
        if name != "key" or not sep:
            raise UsageError(f"{option} {text}: unknown option {item!r} (write key=NAME)")
        try:
            key = ring.get(dns.name.from_text(value))
        except dns.exception.DNSException:
            key = None
        if key is None:
            raise UsageError(f"{option} {text}: no such key {value} (give it with --tsig or --tsig-keyfile)")
    try:
        endpoint = parse_endpoint(where, default_port=53, proto="udp")
        ipaddress.ip_address(endpoint.host)
    except SockhopError as exc:
        raise UsageError(f"{option} {text}: {exc}") from None
    except ValueError:
        raise UsageError(f"{option} {text}: not an IP address[:PORT] (a name would need a resolver)") from None
    return Primary((endpoint.host, endpoint.port), key)


def parse_secondary(text: str, ring: dict) -> tuple[dns.name.Name, Primary]:
    """``ZONE@PRIMARY[:PORT][,key=NAME]``."""
    zone, sep, rest = text.partition("@")
    if not sep or not zone or not rest:
        raise UsageError(f"--secondary {text}: write ZONE@PRIMARY[:PORT], as example.com@192.0.2.1:53")
    try:
        origin = dns.name.from_text(zone)
    except dns.exception.DNSException:
        raise UsageError(f"--secondary {text}: {zone!r} is not a zone name") from None
    return origin, parse_target("--secondary", rest, ring, text)


def zone_path(data: str | os.PathLike[str], origin: dns.name.Name) -> Path:
    """Where ``--data`` keeps a zone: as the AXFR stream that carries it (:mod:`sockhop.dns.axfrfile`)."""
    return Path(data) / f"{origin.to_text(omit_final_dot=True) or 'root'}.axfr"


def text_path(path: Path) -> Path:
    """Where an earlier sockhop kept the zone, as a master file: read when there is no stream yet."""
    return path.with_suffix(".zone")


def load_kept(path: Path, origin: dns.name.Name) -> tuple[Zone, float] | None:
    """The zone a transfer left in ``path`` (or, before any, the master file an earlier sockhop kept beside it)
    and how long ago the primary was last reached (its modification time), or None if there is none (or it
    cannot be read: it is transferred again)."""
    from sockhop.dns.axfrfile import decode

    try:
        if path.exists() or not text_path(path).exists():
            zone = decode(path.read_bytes(), origin, str(path))
        else:
            path = text_path(path)
            zone = read_zone_file(path)
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    except (ZoneError, OSError) as exc:
        log.warning("dns: %s: %s; transferring it again", origin, exc)
        return None
    if zone.origin != origin:
        log.warning("dns: %s holds %s, not %s; transferring it again", path, zone.origin, origin)
        return None
    return zone, max(0.0, age)


def keep(path: Path, zone: Zone) -> None:
    """Write the zone atomically: a reader (a restart, a prefork worker) sees the old file or the new, whole. The
    master file an earlier sockhop kept goes: the stream is the copy now."""
    from sockhop.dns.axfrfile import encode, records_of
    from sockhop.dns.journal import sync_folder

    data = encode(zone.origin, records_of(zone))
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    text_path(path).unlink(missing_ok=True)
    sync_folder(path.parent)


def timers(zone: Zone) -> tuple[float, float, float]:
    """The SOA's refresh, retry and expire, in seconds."""
    soa = zone.soa[0]
    return max(MIN_TIMER, soa.refresh), max(MIN_TIMER, soa.retry), max(MIN_TIMER, soa.expire)


class Secondary(Job):
    """One zone kept from its primary: transfers, the SOA's timers, NOTIFY, expiry."""

    def __init__(
        self,
        origin: dns.name.Name,
        primary: Primary,
        server,
        data: str | None = None,
        kept: tuple | None = None,
        *,
        workers: bool = False,
    ) -> None:
        self.origin = origin
        self.primary = primary
        self.server = server  # sockhop.dns.server.NameServer
        self.path = zone_path(data, origin) if data else None
        self.zone: Zone | None = kept[0] if kept else None
        self.age = kept[1] if kept else 0.0  # since the last contact, when the kept zone was loaded
        self.client: Puller | None = None
        self.busy = False  # a transfer, or the building of what it brought, under way
        self.again = False  # a NOTIFY came during a transfer: ask once more when it ends
        self.next_pull = None  # the refresh or retry timer
        self.expiry = None
        self.first_retry = FIRST_RETRY
        self.stopping = False
        #: prefork: the workers serve copies of the zone; a change reaches them as SIGHUP does (the master forwards
        #: it, and each worker's reload reads what this job kept in --data)
        self.workers = workers
        self.owner = 0  # the process that runs the job (a prefork master), once started
        self.disk = self._identity() if kept else None  # the file ``self.zone`` was read from: (inode, size)
        self.to_keep: Zone | None = None  # the newest version not on disk yet
        self.keeper: threading.Thread | None = None  # writing it, off the event loop
        self.keep_lock = threading.Lock()
        server.secondaries[origin] = self

    def _kept_file(self) -> Path | None:
        """The file the kept zone is read from: the stream, or before any, the master file an earlier sockhop kept."""
        if self.path is None or self.path.exists() or not text_path(self.path).exists():
            return self.path
        return text_path(self.path)

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = self._kept_file().stat()  # type: ignore[union-attr]
        except (OSError, AttributeError):
            return None
        return st.st_ino, st.st_size

    def served(self, authority) -> tuple[Zone | None, bool]:
        """What a reload serves of this zone, and whether it is down. In the process that runs the job, what it
        holds; in another (a prefork worker), what the job kept in --data: the file read again when it was
        replaced, down when its modification time (the last contact) is older than the SOA's expire time."""
        if self.owner == os.getpid() or self.path is None:
            zone = authority.zones.get(self.origin)
            return zone, zone is None
        identity = self._identity()
        if identity is None:
            return None, True
        if identity != self.disk:
            found = load_kept(self.path, self.origin)
            if found is None:
                return None, True
            self.zone, self.disk = found[0], identity
        try:
            age = time.time() - self._kept_file().stat().st_mtime  # type: ignore[union-attr]
        except OSError:
            return None, True
        if self.zone is None or age >= timers(self.zone)[2] - 0.5:
            return None, True
        return self.zone, False

    def _tell_workers(self) -> None:
        if self.workers:
            os.kill(os.getpid(), signal.SIGHUP)

    # -- what the query path calls (any thread) --------------------------------------------------------------
    def accepts_notify(self, peer: Address, key: dns.name.Name | None) -> bool:
        """A NOTIFY from the primary's address, or signed with the zone's key."""
        if key is not None and self.primary.key is not None and key == self.primary.key.name:
            return True
        host = peer_ip(peer)
        return host is not None and host == ipaddress.ip_address(self.primary.address[0])

    def notified(self) -> None:
        self.handle.wake()

    # -- the job -------------------------------------------------------------------------------------------------
    def started(self) -> Reply:
        self.owner = os.getpid()
        if self.zone is not None:
            expire = timers(self.zone)[2]
            if self.age >= expire:
                self._expired()
            else:
                self.expiry = self.handle.call_later(expire - self.age, self._expired)
        self.pull()
        return NOTHING

    def woken(self) -> Reply:
        """A NOTIFY (or, in a prefork master, a wake from a worker meant for any job): ask now."""
        if self.busy:
            self.again = True
        else:
            self.pull()
        return NOTHING

    def stop_requested(self) -> Reply:
        self.stopping = True
        if self.client is not None and self.client.handle is not None:
            self.client.handle.close(Close.AT_ONCE)
        return CLOSE

    def stopped(self) -> None:
        self.server.secondaries.pop(self.origin, None)
        keeper = self.keeper
        if keeper is not None:
            keeper.join(KEEP_GRACE)  # what was transferred goes on disk before the process ends

    def pull(self) -> Reply:
        """Transfer: IXFR from the serial we have, AXFR without one."""
        if self.stopping or self.busy:
            return NOTHING
        self.busy = True
        if self.next_pull is not None:
            self.next_pull.cancel()
            self.next_pull = None
        serial = self.zone.serial if self.zone is not None else None
        query = request(self.origin, serial, self.primary.key)
        self.client = Puller(self, query, serial)
        self.client.handle = self.handle.connect(self.primary.address, self.client, timeout=10.0)
        return NOTHING

    # -- what the transfer's client reports ------------------------------------------------------------------------
    def done(self, pulled: Pulled) -> None:
        """A whole transfer: nothing new (the contact counts), or a new version -- built, kept on disk, served.
        Building a large zone takes seconds, so it happens on a thread of its own, not on the event loop that
        answers every other query; its result comes back through ``handle.call_soon``."""
        self.client = None
        zone = self.zone
        if pulled.kind == "current" or (zone is not None and pulled.serial == zone.serial):
            kept = self._kept_file()
            if kept is not None and zone is not None:
                try:
                    os.utime(kept)  # the last contact, for a restart's expiry
                except OSError:
                    pass
            self.busy = False
            self._contact()
            self._schedule(timers(zone)[0])  # type: ignore[arg-type]
            return

        def build() -> None:
            try:
                result: tuple | Exception = self._build(zone, pulled)
            except (TransferFailed, ZoneError, OSError) as exc:
                result = exc
            except Exception as exc:  # a bug: said in one line, and the served zone stays
                result = TransferFailed(f"{type(exc).__name__}: {exc}")
            self.handle.call_soon(lambda: self._built(result))

        threading.Thread(target=build, name=f"transfer {self.origin}", daemon=True).start()

    def _build(self, zone: Zone | None, pulled: Pulled) -> tuple[Zone, str]:
        """The new version (off the event loop): the zone, and what changed in words."""
        if zone is not None and dns.serial.Serial(pulled.serial) < zone.serial:
            raise TransferFailed(f"the primary's serial {pulled.serial} is older than ours ({zone.serial})")
        if pulled.kind == "ixfr":
            from sockhop.dns.update import apply_diff

            assert zone is not None
            old = zone.serial
            for diff in pulled.diffs:
                zone = apply_diff(zone, diff)
            count = sum(len(r) for diff in pulled.diffs for r in (*diff.deleted, *diff.added))
            what = f"IXFR {old} -> {pulled.serial}, {count} records changed"
        else:
            zone = from_wire(self.origin, pulled.wire, f"{self.origin} from {self.primary}")
            what = f"AXFR serial {pulled.serial}, {zone.record_count()} records"
        zone.source = f"{self.origin} from {self.primary}"
        return zone, what

    def _built(self, result: tuple | Exception) -> Reply:
        self.busy = False
        if isinstance(result, Exception):
            self.failed(str(result))
            return NOTHING
        zone, what = result
        self.zone = zone
        self.server.install(zone)
        if self.path is None:
            self._tell_workers()
        else:
            self._keep(zone)  # then the workers are told
        log.info("dns: %s: transferred (%s) from %s", self.origin, what, self.primary)
        self._contact()
        self._schedule(timers(zone)[0])
        return NOTHING

    def _keep(self, zone: Zone) -> None:
        """Write the new version to --data once it is served, on a thread: writing a large zone takes a while,
        and queries are answered meanwhile. A version newer still, served while one is being written, is written
        next; one in between is skipped."""
        with self.keep_lock:
            self.to_keep = zone
            if self.keeper is not None:
                return
            self.keeper = threading.Thread(target=self._keeping, name=f"keep {self.origin}", daemon=True)
        self.keeper.start()

    def _keeping(self) -> None:
        while True:
            with self.keep_lock:
                zone, self.to_keep = self.to_keep, None
                if zone is None:
                    self.keeper = None
                    return
            try:
                keep(self.path, zone)  # type: ignore[arg-type]
            except (OSError, ZoneError) as exc:
                log.warning("dns: %s: cannot keep it in %s: %s", self.origin, self.path, exc)
                continue
            except Exception as exc:  # a bug: said in one line; the zone is served all the same
                log.warning("dns: %s: cannot keep it in %s: %s: %s", self.origin, self.path, type(exc).__name__, exc)
                continue
            identity = self._identity()
            self.handle.call_soon(lambda identity=identity: self._kept(identity))

    def _kept(self, identity: tuple | None) -> Reply:
        """A version is on disk: what a restart or a prefork worker reads now."""
        if identity is not None:
            self.disk = identity
        self._tell_workers()
        return NOTHING

    def failed(self, why: str) -> None:
        """The transfer did not happen or cannot be used: the served zone stays; ask again after the retry time."""
        self.client = None
        self.busy = False
        if self.stopping:
            return
        if self.zone is not None:
            wait = timers(self.zone)[1]
        else:
            wait, self.first_retry = self.first_retry, min(MAX_FIRST_RETRY, self.first_retry * 2)
        log.warning("dns: %s: transfer from %s failed: %s; trying again in %gs", self.origin, self.primary, why, wait)
        self._schedule(wait)

    def _schedule(self, seconds: float) -> None:
        if self.again:  # a NOTIFY came meanwhile
            self.again = False
            seconds = 0.0
        if self.next_pull is not None:
            self.next_pull.cancel()
        self.next_pull = self.handle.call_later(seconds, self.pull)

    def _contact(self) -> None:
        """The primary answered: the expire time starts again."""
        self.first_retry = FIRST_RETRY
        if self.expiry is not None:
            self.expiry.cancel()
        if self.zone is not None:
            if self.origin in self.server.snapshot.authority.down:
                self.server.install(self.zone)  # back from expiry
                self._tell_workers()
            self.expiry = self.handle.call_later(timers(self.zone)[2], self._expired)

    def _expired(self) -> Reply:
        self.expiry = None
        log.warning(
            "dns: %s: expired: no contact with %s for the SOA's expire time; answering SERVFAIL", self.origin,
            self.primary,
        )  # fmt: skip
        self.server.take_down(self.origin)
        self._tell_workers()
        return NOTHING


class Puller(ClientProtocol):
    """One transfer over TCP: send the request, feed the answer to the reader, report to the job."""

    def __init__(self, job: Secondary, query, serial: int | None) -> None:
        self.job = job
        self.request = framed(query)  # signing sets the MAC the reader checks against: before the reader uses it
        self.reader = TransferReader(query, serial)
        self.handle = None
        self.over = False

    def connection_made(self, peer: Address, local: Address) -> Reply:
        return Reply((self.request,), alarm=READ_TIMEOUT)

    def data_received(self, data: bytes) -> Reply:
        if self.over:
            return NOTHING
        try:
            pulled = self.reader.feed(data)
        except TransferFailed as exc:
            why = str(exc)
            return self._end(lambda: self.job.failed(why), Close.RESET)
        if pulled is not None:
            return self._end(lambda: self.job.done(pulled), Close.AT_ONCE)
        return Reply(alarm=READ_TIMEOUT)

    def _end(self, report, how: Close) -> Reply:
        self.over = True
        report()
        return Reply(close=how)

    def eof_received(self) -> Reply:
        if self.over:
            return NOTHING
        got = f" after {self.reader.messages} message(s)" if self.reader.messages else " before answering"
        return self._end(lambda: self.job.failed(f"the primary closed the connection{got}"), Close.AT_ONCE)

    def timed_out(self) -> Reply:
        if not self.over:
            return self._end(lambda: self.job.failed(f"no answer for {READ_TIMEOUT:g}s"), Close.AT_ONCE)
        return NOTHING

    def connection_failed(self, error: Exception) -> None:
        if not self.over:
            self.over = True
            self.job.failed(f"cannot connect ({error})")

    def connection_lost(self) -> None:
        if not self.over:
            self.over = True
            error = self.handle.error if self.handle is not None else None
            self.job.failed(f"the connection was lost ({error})" if error else "the connection was lost")
