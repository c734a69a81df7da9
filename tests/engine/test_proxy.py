"""The PROXY protocol layer, sans-IO: headers fed whole, byte by byte and with the first request behind them."""

from __future__ import annotations

import pytest

from sockhop.engine.protocol import Reply, StreamProtocol
from sockhop.engine.proxy import ProxyLayer, format_v1, format_v2, parse_sources
from sockhop.errors import SockhopError
from tests.proxy_headers import (
    CLIENT,
    CLIENT6,
    SERVED,
    SERVED6,
    V1,
    V1_IPV6,
    V1_UNKNOWN,
    V2,
    V2_IPV6,
    V2_LOCAL,
    V2_LOCAL_WITH_ADDRESSES,
)

BALANCER = ("10.0.0.5", 40000)
LOCAL = ("10.0.0.9", 80)


class Recorder(StreamProtocol):
    def __init__(self) -> None:
        self.peer = self.local = None
        self.data = b""

    def connection_made(self, peer, local) -> Reply:
        self.peer, self.local = peer, local
        return Reply(send=(b"hello\r\n",))

    def data_received(self, data: bytes) -> Reply:
        self.data += data
        return Reply(send=(data.upper(),))


class BareRecorder(Recorder):
    """Answers with plain bytes, the shorthand for a Reply sending them."""

    def data_received(self, data: bytes) -> bytes:
        return super().data_received(data).send[0]


def layer(sources=("10.0.0.0/8",), kind: type[Recorder] = Recorder) -> tuple[ProxyLayer, Recorder]:
    inner = kind()
    return ProxyLayer(inner, parse_sources(sources)), inner


def feed(proto: ProxyLayer, data: bytes, *, split: str) -> list[Reply]:
    if split == "whole":
        return [proto.data_received(data)]
    return [proto.data_received(data[i : i + 1]) for i in range(len(data))]


def sent(replies: list[Reply]) -> bytes:
    return b"".join(b for r in replies for b in r.send)


@pytest.mark.parametrize("split", ["whole", "bytewise"])
@pytest.mark.parametrize(
    ("header", "src", "dst"),
    [
        (V1, CLIENT, SERVED),
        (V2, CLIENT, SERVED),
        (V1_IPV6, CLIENT6, SERVED6),
        (V2_IPV6, CLIENT6, SERVED6),
    ],
    ids=["v1", "v2", "v1-ipv6", "v2-ipv6"],
)
def test_header_from_the_balancer_names_the_real_client(header, src, dst, split):
    proto, inner = layer()
    assert proto.connection_made(BALANCER, LOCAL) == Reply()  # nothing until the header says who it is
    replies = feed(proto, header + b"get", split=split)
    assert inner.peer == src and inner.local == dst
    assert inner.data == b"get"
    assert sent(replies) == b"hello\r\nGET"
    assert not any(r.close for r in replies)


@pytest.mark.parametrize("kind", [Recorder, BareRecorder])
def test_trailing_data_in_the_same_segment_reaches_the_protocol(kind):
    proto, inner = layer(kind=kind)
    proto.connection_made(BALANCER, LOCAL)
    reply = proto.data_received(V1 + b"EHLO x\r\n")
    assert reply.send == (b"hello\r\n", b"EHLO X\r\n")
    assert inner.data == b"EHLO x\r\n"


@pytest.mark.parametrize("header", [V1_UNKNOWN, V2_LOCAL, V2_LOCAL_WITH_ADDRESSES])
def test_unknown_and_local_keep_the_connection_addresses(header):
    proto, inner = layer()
    proto.connection_made(BALANCER, LOCAL)
    reply = proto.data_received(header + b"get")
    assert (inner.peer, inner.local, inner.data) == (BALANCER, LOCAL, b"get")
    assert reply.send == (b"hello\r\n", b"GET") and not reply.close


@pytest.mark.parametrize(
    ("made", "spec"),
    [
        (format_v1(CLIENT, SERVED), V1),
        (format_v2(CLIENT, SERVED), V2),
        (format_v1(CLIENT6, SERVED6), V1_IPV6),
        (format_v2(CLIENT6, SERVED6), V2_IPV6),
    ],
    ids=["v1", "v2", "v1-ipv6", "v2-ipv6"],
)
def test_the_formatter_writes_what_the_spec_says(made, spec):
    assert made == spec


@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
def test_a_forged_header_from_an_address_not_allowed_is_refused(header):
    proto, inner = layer()
    first = proto.connection_made(("198.51.100.3", 5555), LOCAL)
    assert first.send == (b"hello\r\n",)  # served as itself
    reply = proto.data_received(header + b"get")
    assert reply.close and reply.send == ()
    assert inner.data == b""


def test_others_are_served_as_they_are():
    proto, inner = layer()
    proto.connection_made(("198.51.100.3", 5555), LOCAL)
    assert proto.data_received(b"get").send == (b"GET",)
    assert proto.data_received(b"PROXY later is only data").send == (b"PROXY LATER IS ONLY DATA",)
    assert inner.peer == ("198.51.100.3", 5555)


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\n", b"PROXY TCP4 1.2.3.4\r\n", b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", b"PROXY " + b"9" * 120],
)
def test_a_balancer_that_sends_no_valid_header_is_cut_off(garbage):
    proto, inner = layer()
    proto.connection_made(BALANCER, LOCAL)
    replies = feed(proto, garbage, split="whole")
    assert replies[-1].close
    assert inner.peer is None


def test_ipv4_mapped_balancer_is_trusted():
    proto, inner = layer(["127.0.0.1"])
    proto.connection_made(("::ffff:127.0.0.1", 4000, 0, 0), ("::", 80, 0, 0))
    proto.data_received(V1)
    assert inner.peer == CLIENT


def test_eof_before_the_header_closes_quietly():
    proto, inner = layer()
    proto.connection_made(BALANCER, LOCAL)
    assert proto.eof_received().close
    assert inner.peer is None


def test_bad_source_is_one_line():
    with pytest.raises(SockhopError, match="--proxy-protocol wants an address"):
        parse_sources(["not-an-address"])
