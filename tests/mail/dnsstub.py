"""A tiny authoritative DNS responder on loopback, for testing MX routing: dnspython builds the answers, a thread
serves them over UDP until stopped."""

from __future__ import annotations

import select
import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset


class DNSStub:
    """``records``: {("name.", "MX"): ["10 mx1.example.test."], ...}. Names not listed at all get NXDOMAIN."""

    def __init__(self, records: dict[tuple[str, str], list[str]]) -> None:
        self.records = {(dns.name.from_text(n), dns.rdatatype.from_text(t)): v for (n, t), v in records.items()}
        self.names = {name for name, _ in self.records}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def __enter__(self) -> DNSStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            data, peer = self.sock.recvfrom(65535)
            try:
                query = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001 -- not DNS: ignore, as a real server would
                continue
            self.sock.sendto(self.answer(query).to_wire(), peer)

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        texts = self.records.get((question.name, question.rdtype))
        if texts:
            response.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", question.rdtype, texts))
        elif question.name not in self.names:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response
