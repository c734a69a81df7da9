import ipaddress
import os
import re
import socket
import subprocess
import sys

import pytest

from sockhop.errors import AddressError, PortRangeError, UnknownServiceError
from sockhop.net.addresses import (
    Endpoint,
    check_host,
    host_ip,
    parse_endpoint,
    parse_host,
    parse_port,
    peer_ip,
    resolve,
)
from tests.support import ROOT, loopback_dns, require_tool


@pytest.mark.parametrize(
    "text, host, port",
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("[::1]:53", "::1", 53),
        (":7007", "", 7007),
        ("7007", "", 7007),
        ("localhost:http", "localhost", 80),
        ("[::]:0", "::", 0),
        ("example.test:smtp", "example.test", 25),
        ("host:https", "host", 443),
    ],
)
def test_parse_endpoint(text, host, port):
    assert parse_endpoint(text) == Endpoint(host, port)


@pytest.mark.parametrize("text", ["1:2:3", "[::1]53", "[::1", "host:"])
def test_malformed_endpoints_are_one_line_errors(text):
    with pytest.raises(AddressError) as info:
        parse_endpoint(text)
    assert "\n" not in str(info.value)


def test_port_out_of_range():
    with pytest.raises(PortRangeError, match="65536 is out of range"):
        parse_port("65536")
    with pytest.raises(PortRangeError):
        parse_endpoint("127.0.0.1:-1")


def test_unknown_service_name():
    with pytest.raises(UnknownServiceError, match="nosuchservice"):
        parse_endpoint("localhost:nosuchservice")


def test_service_names_from_the_lecture_resolve():
    for name, port in [("https", 443), ("ftps-data", 989), ("imaps", 993), ("pop3s", 995), ("domain", 53)]:
        assert parse_port(name) == port


def test_endpoint_prints_as_written():
    assert str(Endpoint("::1", 53)) == "[::1]:53"
    assert str(Endpoint("127.0.0.1", 80)) == "127.0.0.1:80"
    assert str(Endpoint("", 80)) == ":80"


def test_resolve_localhost_finds_loopback():
    found = resolve(Endpoint("localhost", 80), socket.SOCK_STREAM)
    assert any(sockaddr[0] in ("127.0.0.1", "::1") for _, sockaddr in found)


def test_resolve_numeric_v6():
    assert resolve(Endpoint("::1", 80))[0][0] == socket.AF_INET6


RESOLVE_UNKNOWN = """
from sockhop.errors import UnknownHostError
from sockhop.net.addresses import Endpoint, resolve
try:
    resolve(Endpoint("no-such-host.invalid", 80))
except UnknownHostError as exc:
    print(f"UnknownHostError: {exc}")
"""


def test_unknown_host(tmp_path):
    """In a subprocess whose resolver asks only loopback: no DNS query leaves the machine."""
    done = subprocess.run(loopback_dns([sys.executable, "-c", RESOLVE_UNKNOWN], tmp_path), capture_output=True,
                          text=True, timeout=20, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert (
        done.stdout == "UnknownHostError: unknown host 'no-such-host.invalid': Temporary failure in name resolution\n"
    )


def test_the_loopback_resolver_sends_nothing_off_loopback(tmp_path):
    """The helper's promise, watched by strace: every address the lookup sends to or connects to is 127.0.0.1."""
    strace = require_tool("strace")
    log = tmp_path / "strace.log"
    command = [strace, "-f", "-qq", "-o", str(log), "-e", "trace=connect,sendto,sendmsg,sendmmsg", sys.executable,
               "-c", RESOLVE_UNKNOWN]  # fmt: skip
    done = subprocess.run(loopback_dns(command, tmp_path), capture_output=True, text=True, timeout=20,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert done.stdout.startswith("UnknownHostError: unknown host 'no-such-host.invalid'"), done
    text = log.read_text()
    inet = re.findall(r"sin6?_addr=[^)]*\)|inet_addr\(\"[^\"]*\"\)|inet_pton\([^)]*\)", text)
    assert inet, text  # the lookup did try the (loopback) name server
    assert all("127.0.0.1" in address for address in inet), text


# -- hostile input: one line each, and no query leaves the machine (IDNA and shape errors come before any) ---------
LONG_LABEL = "a" * 64


@pytest.mark.parametrize(
    "text, words",
    [
        ("a..b:7", "empty label"),
        (f"{LONG_LABEL}.test:7", "longer than 63"),
        ("xn--zz.test:7", "punycode"),
        ("xn--.test:7", "punycode"),
        (".:7", "empty label"),
        ("a b:7", "letters, digits and hyphens"),
        ("-a.test:7", "no hyphen at either end"),
        ("999.1.1.1:7", "bad IPv4 address"),
        ("[::1:7", "closing ]"),
        ("[nothost]:1", "brackets are for IPv6"),
        ("[127.0.0.1]:1", "brackets are for IPv6"),
        ("[::g]:1", "bad IPv6 address"),
        ("127.0.0.1:-1", "out of range"),
        ("127.0.0.1:99999", "out of range"),
        ("127.0.0.1:0x10", "not a number"),
        ("127.0.0.1:\u00b2", "not a number"),
        ("", "missing port"),
    ],
)
def test_hostile_endpoints_are_one_line(text, words):
    with pytest.raises(AddressError) as info:
        parse_endpoint(text)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("host", ["a..b", LONG_LABEL, "xn--zz", "xn--", "\u00fc" * 70, "[::1", "[nothost]", ""])
def test_hostile_client_hosts_are_one_line(host):
    with pytest.raises(AddressError) as info:
        parse_host(host)
    assert "\n" not in str(info.value)


def test_resolve_checks_the_host_before_asking():
    # Endpoint built by hand (as a client may): the check still comes before getaddrinfo and its IDNA codec.
    with pytest.raises(AddressError, match="empty label"):
        resolve(Endpoint("a..b", 7))
    with pytest.raises(AddressError, match="longer than 63"):
        resolve(Endpoint(LONG_LABEL, 7))


@pytest.mark.parametrize(
    "host, expected",
    [("[::1]", "::1"), ("::1", "::1"), ("127.0.0.1", "127.0.0.1"), ("localhost", "localhost"),
     ("b\u00fccher.test", "b\u00fccher.test"), ("xn--bcher-kva.test", "xn--bcher-kva.test"),
     ("[fe80::1%lo]", "fe80::1%lo"), ("localhost.", "localhost.")],
)  # fmt: skip
def test_good_hosts_pass(host, expected):
    assert parse_host(host) == expected
    assert check_host(expected) == expected


# -- a host without a port: the service's own port where it is known, else what to write ---------------------------
@pytest.mark.parametrize(
    "text, host, port",
    [("127.0.0.1", "127.0.0.1", 7007), ("[::1]", "::1", 7007), ("localhost", "localhost", 7007),
     ("127.0.0.1:9", "127.0.0.1", 9), (":9", "", 9), ("9", "", 9), ("http", "", 80)],
)  # fmt: skip
def test_default_port_fills_a_host_alone(text, host, port):
    assert parse_endpoint(text, default_port=7007) == Endpoint(host, port)


@pytest.mark.parametrize("text, advice", [("127.0.0.1", "write 127.0.0.1:PORT"), ("[::1]", "write [::1]:PORT")])
def test_without_a_default_port_says_what_to_write(text, advice):
    with pytest.raises(AddressError, match=re.escape(advice)):
        parse_endpoint(text)


# -- a peer's IP address, as the access lists match it -------------------------------------------------------------
@pytest.mark.parametrize(
    "peer, ip",
    [(("192.0.2.1", 53), "192.0.2.1"), (("::ffff:192.0.2.1", 53, 0, 0), "192.0.2.1"),
     (("fe80::1%eth0", 53, 0, 2), "fe80::1"), (("2001:db8::1", 53, 0, 0), "2001:db8::1"),
     ("/run/sockhop.sock", None), ("", None), (None, None), ((), None),
     (("example.com", 53), None)],
)  # fmt: skip
def test_a_peers_ip_address_is_plain_and_mapped_ipv4_is_ipv4(peer, ip):
    assert peer_ip(peer) == (None if ip is None else ipaddress.ip_address(ip))


def test_a_host_that_is_not_an_address_has_no_ip():
    assert host_ip("localhost") is None and host_ip("::ffff:10.0.0.1") == ipaddress.ip_address("10.0.0.1")
