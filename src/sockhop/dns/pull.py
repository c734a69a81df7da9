"""The receiving side of a zone transfer (AXFR, RFC 5936; IXFR, RFC 1995): the request, and a sans-IO reader.

The reader is fed the bytes of the TCP stream as they arrive. Each whole message is read as wire records
(:mod:`sockhop.dns.xfrwire`: every RR a tuple of bytes, the TSIG chain across messages -- RFC 8945 section 5.3.1:
each signature over the messages since the last -- the question), and the reader only follows the sequence of SOAs
that says where the transfer is: the first SOA is the new version; an IXFR then brings, per change, the old SOA,
what went, the new SOA, what came; the transfer ends where the first SOA comes again. A whole zone stays wire
records, for the index (:mod:`sockhop.dns.wirezone`); only an IXFR's changes, which are few, become dnspython
RRsets. Anything else (a cut-off stream is never whole; garbage, a wrong question, a bad signature, an error rcode)
raises :class:`TransferFailed`, and nothing of it is used.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig

from sockhop.dns import xfrwire
from sockhop.dns.update import Diff
from sockhop.dns.wireread import key_of, rrsets_of
from sockhop.errors import SockhopError

RdataType = dns.rdatatype.RdataType
LENGTH = struct.Struct("!H")
SERIAL = struct.Struct("!I")
MAX_RECORDS = 10_000_000  # a transfer that never ends is a failure, not all of memory
#: an error answer may leave out the question (dns.message's is_response allows it too)
ERRORS_WITHOUT_QUESTION = {dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED}


class TransferFailed(SockhopError):
    """A zone transfer that cannot be used; nothing of it replaces the zone being served."""


@dataclass
class Pulled:
    """What a whole transfer brought: ``current`` (the primary has our serial), the whole zone (``wire``: every
    record as read, the SOA first; AXFR or an AXFR-style IXFR) or the changes since our serial (``diffs``)."""

    kind: str  # "current", "axfr", "ixfr"
    soa: dns.rrset.RRset
    wire: list[xfrwire.Record] = field(default_factory=list)
    diffs: list[Diff] = field(default_factory=list)
    messages: int = 0

    @property
    def serial(self) -> int:
        return self.soa[0].serial

    @property
    def records(self) -> list[dns.rrset.RRset]:
        """The records after the SOA as dnspython RRsets (one per owner, type and covered type)."""
        return rrsets_of(self.wire[1:])


def request(origin: dns.name.Name, serial: int | None, key: dns.tsig.Key | None = None) -> dns.message.Message:
    """AXFR (``serial`` None), or IXFR from ``serial`` (its SOA in the authority section), signed with ``key``."""
    rdtype = RdataType.AXFR if serial is None else RdataType.IXFR
    query = dns.message.make_query(origin, rdtype, dns.rdataclass.IN)
    query.flags = 0  # no RD: a transfer is no recursive question
    if serial is not None:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, RdataType.SOA, f". . {serial} 0 0 0 0")
        query.authority.append(dns.rrset.from_rdata_list(origin, 0, [rdata]))
    if key is not None:
        query.use_tsig(key)
    return query


def framed(query: dns.message.Message) -> bytes:
    """The request as it goes over TCP (signing it sets its MAC, which the reader checks the answers against)."""
    wire = query.to_wire()
    return LENGTH.pack(len(wire)) + wire


def _serial(record: xfrwire.Record) -> int:
    """The serial of an SOA record as read: 20 bytes from the end of its data."""
    data = record[5]
    if type(data) is bytes:
        return SERIAL.unpack_from(data, len(data) - 20)[0]
    return data.serial  # type: ignore[union-attr]


class TransferReader:
    """The answer to one transfer request, fed as bytes; :meth:`feed` returns the :class:`Pulled` once whole."""

    def __init__(self, query: dns.message.Message, serial: int | None) -> None:
        self.query = query
        self.origin = query.question[0].name
        self.serial = serial
        self.incremental = query.question[0].rdtype == RdataType.IXFR
        self.buffer = b""
        self.ctx = None  # the TSIG chain
        self.first = True
        self.soa: dns.rrset.RRset | None = None
        self.records: list[xfrwire.Record] = []
        self.origin_key = key_of(self.origin)
        self.first_soa: xfrwire.Record | None = None
        self.count = 0
        self.messages = 0
        self.done: Pulled | None = None

    def feed(self, data: bytes) -> Pulled | None:
        if self.done is not None:
            raise TransferFailed("data after the end of the transfer")
        buffer = self.buffer + data if self.buffer else data
        start = 0
        while len(buffer) - start >= 2:
            (size,) = LENGTH.unpack_from(buffer, start)
            if len(buffer) - start < 2 + size:
                break
            self._message(buffer[start + 2 : start + 2 + size])
            start += 2 + size
            if self.done is not None:
                if start != len(buffer):
                    raise TransferFailed("data after the end of the transfer")
                break
        self.buffer = buffer[start:]
        return self.done

    def _message(self, wire: bytes) -> None:
        query = self.query
        try:
            message = xfrwire.read(wire, query.keyring, query.mac, self.ctx)
        except dns.tsig.BadSignature:
            raise TransferFailed("a message's TSIG signature does not verify") from None
        except (dns.message.UnknownTSIGKey, dns.tsig.PeerError, dns.tsig.BadTime) as exc:
            raise TransferFailed(f"TSIG: {exc or type(exc).__name__}") from None
        except Exception as exc:  # dnspython raises many kinds for garbage
            raise TransferFailed(f"a message cannot be read ({exc or type(exc).__name__})") from None
        if not self._answers(message):
            raise TransferFailed("a message that answers another question")
        if query.keyring is not None and self.first and not message.had_tsig:
            raise TransferFailed("the answer is not signed with the key the request was")
        self.first = False
        self.ctx = message.tsig_ctx
        self.messages += 1
        rcode = message.rcode
        if rcode != dns.rcode.NOERROR:
            raise TransferFailed(f"the primary answered {dns.rcode.to_text(rcode)}")
        answer = message.answer
        at = 0
        if self.soa is None and answer:
            first = answer[0]
            if first[2] != RdataType.SOA or first[0] != self.origin_key:
                raise TransferFailed("the transfer does not begin with the zone's SOA")
            self.first_soa = first
            self.soa = rrsets_of([first])[0]
            at = 1
            if self.incremental and self.serial is not None and _serial(first) == self.serial:
                self.done = Pulled("current", self.soa, messages=self.messages)
        if self.done is None:
            at = self._records(answer, at)
        if at < len(answer):
            raise TransferFailed("records after the final SOA")
        if self.done is not None and query.keyring is not None and not message.had_tsig:
            raise TransferFailed("the last message is not signed")

    def _records(self, answer: list[xfrwire.Record], at: int) -> int:
        """Take the records from ``at`` on, up to the final SOA; return where they ended. In a tight loop: a large
        zone has many."""
        origin_key = self.origin_key
        depth = len(origin_key)
        soa = RdataType.SOA
        end = len(answer)
        for index in range(at, end):
            record = answer[index]
            key = record[0]
            if key[len(key) - depth :] != origin_key:
                raise TransferFailed(f"{dns.name.Name(record[1])} is outside the zone {self.origin}")
            if record[2] == soa and key == origin_key:
                self._take(answer[at:index])
                at = index
                if _serial(record) == _serial(self.first_soa) and self._at_end():  # type: ignore[arg-type]
                    self.count += 1
                    self.done = self._finish()
                    return index + 1
        self._take(answer[at:end])
        return end

    def _take(self, records: list[xfrwire.Record]) -> None:
        self.records.extend(records)
        self.count += len(records)
        if self.count > MAX_RECORDS:
            raise TransferFailed(f"more than {MAX_RECORDS} records")

    def _answers(self, message: xfrwire.XfrMessage) -> bool:
        """Whether the message answers our request (dns.message's ``is_response``, for an XFR): a response with
        its ID and opcode, our question -- or none in a message after the first, or in an error."""
        if not message.flags & dns.flags.QR or message.id != self.query.id:
            return False
        if dns.opcode.from_flags(message.flags) != dns.opcode.from_flags(self.query.flags):
            return False
        if not message.question and (not self.first or message.rcode in ERRORS_WITHOUT_QUESTION):
            return True
        asked = self.query.question[0]
        return len(message.question) == 1 and message.question[0] == (self.origin_key, asked.rdtype, asked.rdclass)

    def _at_end(self) -> bool:
        """The first SOA again: the end of an AXFR, or of an IXFR whose changes are complete (an even number of
        SOAs between: each change has its old and its new)."""
        records = self.records
        if not self.incremental or not records or records[0][2] != RdataType.SOA:
            return True  # AXFR, or an IXFR answered AXFR-style (RFC 1995 section 4)
        soas = sum(1 for r in records if r[2] == RdataType.SOA and r[0] == self.origin_key)
        return soas % 2 == 0

    def _finish(self) -> Pulled:
        assert self.soa is not None
        records = self.records
        if not (self.incremental and records and records[0][2] == RdataType.SOA and records[0][0] == self.origin_key):
            assert self.first_soa is not None
            return Pulled("axfr", self.soa, [self.first_soa, *records], messages=self.messages)
        records = rrsets_of(records, join=False)  # IXFR: in order, one record each
        diffs: list[Diff] = []
        diff: Diff | None = None
        adding = True  # each change: its old SOA, what went, its new SOA, what came
        for rrset in records:
            if rrset.rdtype == RdataType.SOA and rrset.name == self.origin:
                if adding:
                    diff = Diff(rrset, rrset)
                    diffs.append(diff)
                else:
                    assert diff is not None
                    diff.new_soa = rrset
                adding = not adding
                continue
            assert diff is not None
            (diff.added if adding else diff.deleted).append(rrset)
        if diffs[0].old_serial != self.serial:
            raise TransferFailed(f"the changes begin at serial {diffs[0].old_serial}, not at ours ({self.serial})")
        if any(a.new_serial != b.old_serial for a, b in zip(diffs, diffs[1:], strict=False)):
            raise TransferFailed("the changes do not follow one another")
        if diffs[-1].new_serial != self.soa[0].serial:
            raise TransferFailed("the changes do not end at the new serial")
        return Pulled("ixfr", self.soa, diffs=diffs, messages=self.messages)
