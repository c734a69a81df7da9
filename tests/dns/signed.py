"""Signed zones for the DNSSEC tests, made by tools nobody here wrote (ldns-keygen, ldns-signzone), and Unbound
validating what a server gives out of one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from tests.dns.peers import answering, free_port
from tests.support import require_tool

ZONE = """\
$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1 hostmaster 2024010101 7200 900 1209600 300
    IN NS  ns1
    IN MX  10 mail
    IN TXT "hello"
ns1 IN A 192.0.2.1
www IN A 192.0.2.2
    IN AAAA 2001:db8::2
mail IN A 192.0.2.3
alias IN CNAME www
*.wild IN A 192.0.2.9
*.wild IN TXT "wild"
*.cwild IN CNAME www
a.b.c IN A 192.0.2.10
sub IN NS ns.sub
ns.sub IN A 192.0.2.53
secure IN NS ns.secure
secure IN DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns.secure IN A 192.0.2.54
"""

#: (name, type): wildcards, NXDOMAIN, NODATA, an empty non-terminal, delegations with and without DS, the apex
QUESTIONS = [
    ("www.example.com", "A"),
    ("www.example.com", "MX"),
    ("example.com", "DNSKEY"),
    ("example.com", "MX"),
    ("example.com", "SOA"),
    ("alias.example.com", "A"),
    ("x.wild.example.com", "A"),
    ("x.wild.example.com", "MX"),
    ("y.x.wild.example.com", "TXT"),
    ("foo.cwild.example.com", "A"),
    ("nope.example.com", "A"),
    ("zzz.example.com", "AAAA"),
    ("b.c.example.com", "A"),
    ("c.example.com", "TXT"),
    ("x.a.b.c.example.com", "A"),
    ("sub.example.com", "A"),
    ("www.sub.example.com", "A"),
    ("secure.example.com", "A"),
    ("secure.example.com", "DS"),
    ("sub.example.com", "DS"),
    ("mail.example.com", "A"),
]


def sign(
    folder: Path, *, nsec3: bool = False, optout: bool = False, key: str | None = None, extra: tuple[str, ...] = ()
) -> tuple[Path, str]:
    """ZONE signed by ldns-signzone (with a new ECDSA P-256 key unless ``key`` names one): the signed file, named
    after the zone, and the key's base name (``Kexample.com.+013+NNNNN``)."""
    keygen, signzone = require_tool("ldns-keygen"), require_tool("ldns-signzone")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "example.com.unsigned").write_text(ZONE)
    if key is None:
        key = subprocess.run(
            [keygen, "-a", "ECDSAP256SHA256", "-k", "example.com"], cwd=folder, capture_output=True, text=True,
            check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
    flags = ["-n", *(["-p"] if optout else []), "-t", "0"] if nsec3 else []
    out = folder / "example.com"
    subprocess.run(
        [signzone, *flags, *extra, "-o", "example.com.", "-f", str(out), "example.com.unsigned", key],
        cwd=folder, check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return out, key


def anchor(folder: Path, key: str) -> str:
    """The DNSKEY line of a key made by ldns-keygen (``folder/key.key``), as a trust anchor."""
    text = (folder / f"{key}.key").read_text()
    return next(line.split(";")[0].strip() for line in text.splitlines() if "DNSKEY" in line)


def start_unbound(folder: Path, trust_anchor: str, server_port: int) -> tuple[subprocess.Popen, int]:
    """Unbound validating example.com with ``trust_anchor`` and asking only the server on 127.0.0.1:server_port
    (everything else refused locally: no query leaves loopback)."""
    unbound = require_tool("unbound")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "anchor").write_text(trust_anchor + "\n")
    port = free_port()
    (folder / "unbound.conf").write_text(f"""server:
  interface: 127.0.0.1@{port}
  port: {port}
  username: ""
  chroot: ""
  directory: "{folder}"
  pidfile: "{folder}/unbound.pid"
  use-syslog: no
  logfile: "{folder}/unbound.log"
  verbosity: 1
  val-log-level: 2
  do-not-query-localhost: no
  module-config: "validator iterator"
  trust-anchor-file: "{folder}/anchor"
  local-zone: "." refuse
  local-zone: "example.com." transparent
  do-ip6: no
  num-threads: 1
remote-control:
  control-enable: no
stub-zone:
  name: "example.com."
  stub-addr: 127.0.0.1@{server_port}
""")
    proc = subprocess.Popen(
        [unbound, "-d", "-c", str(folder / "unbound.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    answering(proc, port, folder / "unbound.log")
    return proc, port


def validated(port: int, name: str, rdtype: str) -> dns.message.Message:
    """Ask the validating resolver (with DO, so AD is reported as it was decided)."""
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=10)
