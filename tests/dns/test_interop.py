"""sockhop serve dns driven by clients nobody here wrote: dig (BIND's) and dnspython's resolver, under every model
that serves UDP -- and fork and thread with --tcp-only."""

from __future__ import annotations

import subprocess

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import dns.resolver
import pytest

from tests.dns.zones import EXAMPLE_ORG, write_zone
from tests.support import cannot_run, require_tool

pytestmark = pytest.mark.interop

UDP_MODELS = ["iterative", "pool", "eventloop", "prefork"]


def dig(port: int, *args: str) -> str:
    path = require_tool("dig")
    done = subprocess.run(
        [path, "@127.0.0.1", "-p", str(port), "+time=5", "+tries=2", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr


@pytest.fixture
def zone_file(tmp_path):
    return write_zone(tmp_path)


def serve(sockhop_server, zone_file, model, *extra):
    args = ["serve", "dns", str(zone_file), "--listen", "127.0.0.1:0", "--model", model, "--workers", "2", *extra]
    server = sockhop_server(args, announce=1 if "--tcp-only" in extra else 2)
    return server


@pytest.mark.parametrize("model", UDP_MODELS)
def test_dig_udp_tcp_and_truncation(sockhop_server, zone_file, model):
    server = serve(sockhop_server, zone_file, model)
    udp_port = server.address("dns", "udp")[1]
    assert server.address("dns", "tcp")[1] == udp_port  # one port for both

    out = dig(udp_port, "www.example.com", "A")
    assert "status: NOERROR" in out and "flags: qr aa" in out and "192.0.2.2" in out
    assert f";; SERVER: 127.0.0.1#{udp_port}(127.0.0.1) (UDP)\n" in out  # answered over UDP, by this server

    out = dig(udp_port, "+tcp", "alias.example.com", "AAAA")
    assert "2001:db8::2" in out and "alias.example.com.\t" in out and "(TCP)" in out

    out = dig(udp_port, "+bufsize=512", "big.example.com", "TXT")
    assert "Truncated, retrying in TCP mode" in out
    assert "ANSWER: 12" in out

    out = dig(udp_port, "+ignore", "+noedns", "big.example.com", "TXT")
    assert "flags: qr aa tc" in out and "ANSWER: 0" in out

    out = dig(udp_port, "nope.example.com")
    assert "status: NXDOMAIN" in out and "SOA" in out
    out = dig(udp_port, "www.example.org")
    assert "status: REFUSED" in out


@pytest.mark.parametrize("model", UDP_MODELS)
def test_dnspython_resolver(sockhop_server, zone_file, model):
    server = serve(sockhop_server, zone_file, model)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.address("dns", "udp")[1]
    resolver.lifetime = 10
    resolver.timeout = 5
    assert [r.address for r in resolver.resolve("chain.example.com", "A")] == ["192.0.2.2"]
    mx = resolver.resolve("example.com", "MX")
    assert [(r.preference, str(r.exchange)) for r in mx] == [(10, "mail.example.com.")]
    assert len(resolver.resolve("big.example.com", "TXT")) == 12  # TC, then dnspython retries over TCP
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("nope.example.com", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("www.example.com", "MX")


def test_several_queries_on_one_tcp_connection(sockhop_server, zone_file):
    import socket

    server = serve(sockhop_server, zone_file, "eventloop")
    port = server.address("dns", "tcp")[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for i, name in enumerate(["www.example.com", "mail.example.com", "x.wild.example.com"] * 3):
            q = dns.message.make_query(name, "A")
            q.id = i
            dns.query.send_tcp(sock, q)
            reply, _ = dns.query.receive_tcp(sock)
            assert reply.id == i and reply.answer


@pytest.mark.parametrize("model", ["eventloop", "iterative"])
def test_axfr_allowed_and_refused(sockhop_server, zone_file, model):
    allowed = serve(sockhop_server, zone_file, model, "--allow-transfer", "127.0.0.1")
    out = dig(allowed.address("dns", "tcp")[1], "example.com", "AXFR")
    assert out.count("\tSOA\t") == 2 and "big.example.com." in out and "XFR size" in out
    refused = serve(sockhop_server, zone_file, model, "--allow-transfer", "192.0.2.0/24")
    out = dig(refused.address("dns", "tcp")[1], "example.com", "AXFR")
    assert "Transfer failed" in out and "\tSOA\t" not in out


@pytest.mark.parametrize("model", ["fork", "thread"])
def test_fork_and_thread_serve_tcp_only(sockhop_server, zone_file, model):
    server = serve(sockhop_server, zone_file, model, "--tcp-only")
    out = dig(server.address("dns", "tcp")[1], "+tcp", "www.example.com")
    assert "192.0.2.2" in out and "flags: qr aa" in out


@pytest.mark.parametrize("model", ["fork", "thread"])
def test_fork_and_thread_with_udp_is_one_line(zone_file, model):
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "sockhop", "serve", "dns", str(zone_file), "--listen", "127.0.0.1:0", "--model", model],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "--tcp-only" in done.stderr and "cannot serve UDP" in done.stderr


def test_axfr_of_a_large_zone_spans_messages(sockhop_server, tmp_path):
    hosts = "".join(f"host{i} IN A 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}\n" for i in range(3000))
    zone = write_zone(tmp_path, EXAMPLE_ORG + hosts, "example.org.zone")
    server = sockhop_server(
        ["serve", "dns", str(zone), "--listen", "127.0.0.1:0", "--allow-transfer", "127.0.0.0/8"], announce=2
    )
    out = dig(server.address("dns", "tcp")[1], "example.org", "AXFR")
    assert out.count("\tSOA\t") == 2 and out.count("\tA\t") == 3001
    messages = int(out.split("XFR size: ")[1].split("messages ")[1].split()[0].rstrip(","))
    assert messages > 1


def test_ipv6_loopback(sockhop_server, zone_file):
    import socket

    if not socket.has_ipv6:
        cannot_run("no IPv6")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        cannot_run("no IPv6 loopback")
    server = sockhop_server(["serve", "dns", str(zone_file), "--listen", "[::1]:0"], announce=2)
    port = server.address("dns", "udp")[1]
    for transport in ("+notcp", "+tcp"):
        out = subprocess.run(
            [require_tool("dig"), "@::1", "-p", str(port), "+time=5", "+tries=2", transport, "www.example.com"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        assert "192.0.2.2" in out
