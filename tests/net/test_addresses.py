import os
import re
import socket
import subprocess
import sys

import pytest

from sockhop.errors import AddressError, PortRangeError, UnknownServiceError
from sockhop.net.addresses import Endpoint, parse_endpoint, parse_port, resolve
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
