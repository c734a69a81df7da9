"""Zone texts the DNS tests share: one zone with every kind of answer in it."""

from __future__ import annotations

from pathlib import Path

EXAMPLE = """\
$ORIGIN example.com.
$TTL 3600
@   IN SOA ns1 hostmaster ( 2024010101 ; serial
                            7200 900 1209600
                            300 )      ; negative TTL
    IN NS  ns1
    IN NS  ns2.example.net.
    IN MX  10 mail
    IN TXT "hello world"
ns1 IN A 192.0.2.1
www IN A 192.0.2.2
    IN AAAA 2001:db8::2
mail IN A 192.0.2.3
alias IN CNAME www
chain IN CNAME alias
out IN CNAME www.example.net.
loop1 IN CNAME loop2
loop2 IN CNAME loop1
dangling IN CNAME nothere
*.wild IN A 192.0.2.9
*.wild IN TXT "wild"
sub.wild IN A 192.0.2.19
*.cwild IN CNAME www
a.b.c IN A 192.0.2.10
sub IN NS ns.sub
sub IN NS ns.elsewhere.net.
ns.sub IN A 192.0.2.53
_sip._tcp IN SRV 10 5 5060 www
caa IN CAA 0 issue "letsencrypt.org"
ptr IN PTR www
old IN DNAME new
x.new IN A 192.0.2.99
out2 IN DNAME example.net.
"""

BIG_TXT = "".join(f'big IN TXT "{i:02d}{"x" * 98}"\n' for i in range(12))  # ~1.3 kB: over 512 and 1232

EXAMPLE_ORG = """\
$ORIGIN example.org.
$TTL 300
@ IN SOA ns hostmaster 7 3600 600 86400 60
  IN NS ns
ns IN A 192.0.2.100
"""


def write_zone(folder: Path, text: str = EXAMPLE + BIG_TXT, name: str = "example.com.zone") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path
