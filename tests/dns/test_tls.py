"""DNS over TLS (RFC 7858): sockhop serve dns --listen-tls, driven by kdig +tls, dig +tls, dnspython's
dns.query.tls and sockhop's own resolver, under every model; and the resolver's certificate checks."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys

import dns.message
import dns.query
import pytest

from sockhop.dns.resolver import CertificateError, Timeout, resolve
from tests.dns.zones import write_zone
from tests.support import ROOT, require_tool
from tests.tls_certs import LocalCA

pytestmark = pytest.mark.interop

UDP_MODELS = ["iterative", "pool", "eventloop", "prefork"]
ALL_MODELS = UDP_MODELS + ["fork", "thread"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = LocalCA(folder)
    return {
        "ca": ca.pem,
        "leaf": ca.issue("leaf", ["localhost", "127.0.0.1", "::1"]),
        "wrong": ca.issue("wrong", ["elsewhere.example"]),
        "expired": ca.issue("expired", ["localhost", "127.0.0.1"], expired=True),
        "other_ca": LocalCA(tmp_path_factory.mktemp("other")).pem,
    }


def serve_dot(sockhop_server, zone, issued, model="eventloop", plain=True):
    args = ["serve", "dns", str(zone), "--model", model, "--workers", "2", "--listen-tls", "127.0.0.1:0"]
    args += ["--tls-cert", str(issued.cert), "--tls-key", str(issued.key)]
    if plain:
        args += ["--listen", "127.0.0.1:0"]
    return sockhop_server(args, announce=3 if plain else 1)


def kdig(port: int, ca, *args: str) -> str:
    path = require_tool("kdig")
    done = subprocess.run(
        [path, "@127.0.0.1", "-p", str(port), f"+tls-ca={ca}", "+tls-hostname=localhost", "+time=5", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr


def dig_tls(port: int, ca, *args: str) -> str:
    path = require_tool("dig")
    done = subprocess.run(
        [path, "@127.0.0.1", "-p", str(port), "+tls", f"+tls-ca={ca}", "+tls-hostname=localhost", "+time=5", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr


def dnspython_tls(port: int, ca, name: str, rdtype: str = "A") -> dns.message.Message:
    context = ssl.create_default_context(cafile=str(ca))
    query = dns.message.make_query(name, rdtype)
    return dns.query.tls(query, "127.0.0.1", port=port, timeout=10, ssl_context=context, server_hostname="localhost")


@pytest.mark.parametrize("model", ALL_MODELS)
def test_dot_with_real_clients_under_every_model(sockhop_server, tmp_path, pki, model):
    plain = model in UDP_MODELS  # fork and thread serve DNS over TLS alone (they cannot serve UDP)
    server = serve_dot(sockhop_server, write_zone(tmp_path), pki["leaf"], model, plain=plain)
    port = server.address("dns", "tls")[1]

    out = kdig(port, pki["ca"], "www.example.com", "A")
    assert "TLS session" in out and "status: NOERROR" in out and "192.0.2.2" in out and "qr aa" in out
    out = kdig(port, pki["ca"], "+keepopen", "alias.example.com", "AAAA", "nope.example.com", "A")
    assert "2001:db8::2" in out and "NXDOMAIN" in out

    out = dig_tls(port, pki["ca"], "example.com", "MX")
    assert "(TLS)" in out and "status: NOERROR" in out and "mail.example.com." in out

    reply = dnspython_tls(port, pki["ca"], "big.example.com", "TXT")  # 12 TXT records: TCP-size, no truncation
    assert sum(len(rrset) for rrset in reply.answer) == 12

    assert [r.address for r in resolve("www.example.com", "A", ("localhost", port), tls=True, cacert=pki["ca"])] == [
        "192.0.2.2"
    ]
    if plain:  # the plain pair still opens beside the TLS port, on one port for UDP and TCP
        udp = server.address("dns", "udp")[1]
        assert server.address("dns", "tcp")[1] == udp
        assert [r.address for r in resolve("www.example.com", "A", ("127.0.0.1", udp))] == ["192.0.2.2"]
        assert [r.address for r in resolve("www.example.com", "A", ("127.0.0.1", udp), tcp=True)] == ["192.0.2.2"]


def test_resolver_checks_the_certificate(sockhop_server, tmp_path, pki):
    zone = write_zone(tmp_path)
    good = serve_dot(sockhop_server, zone, pki["leaf"], plain=False).address("dns", "tls")[1]
    wrong = serve_dot(sockhop_server, zone, pki["wrong"], plain=False).address("dns", "tls")[1]
    expired = serve_dot(sockhop_server, zone, pki["expired"], plain=False).address("dns", "tls")[1]

    # the name or address as given is what the certificate must be for: both are in the leaf
    assert resolve("www.example.com", "A", f"127.0.0.1:{good}", tls=True, cacert=pki["ca"])
    assert resolve("www.example.com", "A", f"localhost:{good}", tls=True, cacert=pki["ca"])
    with pytest.raises(CertificateError, match="not for this name .Hostname mismatch"):
        resolve("www.example.com", "A", f"localhost:{wrong}", tls=True, cacert=pki["ca"])
    with pytest.raises(CertificateError, match="not for this name .IP address mismatch"):
        resolve("www.example.com", "A", f"127.0.0.1:{wrong}", tls=True, cacert=pki["ca"])
    with pytest.raises(CertificateError, match="has expired"):
        resolve("www.example.com", "A", f"127.0.0.1:{expired}", tls=True, cacert=pki["ca"])
    with pytest.raises(CertificateError, match="not trusted"):
        resolve("www.example.com", "A", f"127.0.0.1:{good}", tls=True, cacert=pki["other_ca"])
    with pytest.raises(CertificateError, match="not trusted"):  # the system's store knows not our CA
        resolve("www.example.com", "A", f"127.0.0.1:{good}", tls=True)


def test_cli_resolve_tls(sockhop_server, tmp_path, pki):
    server = serve_dot(sockhop_server, write_zone(tmp_path), pki["leaf"])
    port = server.address("dns", "tls")[1]
    udp = server.address("dns", "udp")[1]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sockhop", "resolve", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
        )

    done = run("www.example.com", f"@localhost:{port}", "--tls", "--cacert", str(pki["ca"]))
    assert done.returncode == 0 and "192.0.2.2" in done.stdout and f"#{port}(localhost) (TLS)" in done.stdout
    done = run("www.example.com", f"@127.0.0.1:{port}", "--tls", "--cacert", str(pki["other_ca"]))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "not trusted" in done.stderr
    assert "Traceback" not in done.stderr
    done = run("www.example.com", f"@127.0.0.1:{udp}", "--tls", "--cacert", str(pki["ca"]), "--timeout", "1")
    assert done.returncode == 1 and "DNS-over-TLS port" in done.stderr and done.stderr.count("\n") == 1
    done = run("www.example.com", f"@127.0.0.1:{port}", "--cacert", str(pki["ca"]))
    assert done.returncode != 0 and "--cacert and -k are for --tls" in done.stderr
    done = run("www.example.com", f"@127.0.0.1:{port}", "--tls", "-k", "--short")  # unverified, with a warning
    assert done.returncode == 0 and done.stdout.strip() == "192.0.2.2" and "warning" in done.stderr


def test_plaintext_and_garbage_to_the_tls_port_disturb_nobody(sockhop_server, tmp_path, pki):
    server = serve_dot(sockhop_server, write_zone(tmp_path), pki["leaf"], plain=False)
    port = server.address("dns", "tls")[1]
    query = dns.message.make_query("www.example.com", "A").to_wire()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        plain.sendall(len(query).to_bytes(2, "big") + query)  # DNS over plain TCP to the TLS port
        try:
            seen = plain.recv(4096)
        except (ConnectionResetError, TimeoutError):
            seen = b""
        assert b"\xc0\x00\x02\x02" not in seen  # an alert, a close or silence; never the answer in the clear
    with socket.create_connection(("127.0.0.1", port), timeout=10) as junk:
        junk.sendall(b"\x16\x03\x01" + bytes(range(256)))
    reply = dnspython_tls(port, pki["ca"], "www.example.com")
    assert reply.answer and "192.0.2.2" in reply.answer[0].to_text()
    with pytest.raises(Timeout):
        resolve("www.example.com", "A", ("127.0.0.1", port), timeout=1, tries=1)  # UDP: nothing listens there


def test_tls_servers_default_to_port_853_and_keep_the_name_given():
    from sockhop.dns.resolver import server_targets

    assert server_targets("@127.0.0.1", 853) == [(("127.0.0.1", 853), "127.0.0.1")]
    assert server_targets(("localhost", 8853), 853) == [(("127.0.0.1", 8853), "localhost")]
    assert server_targets("[::1]:8853", 853) == [(("::1", 8853), "::1")]
