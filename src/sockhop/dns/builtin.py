"""The zone ``sockhop up`` serves with no set-up: ``sockhop.test.``, pointing at loopback.

``.test`` is reserved for testing (RFC 2606), so this zone can never shadow a real one.
"""

from __future__ import annotations

from sockhop.dns.zone import Zone, read_zone_text

ORIGIN = "sockhop.test."
DEFAULT_PORT = 5353

ZONE_TEXT = """\
$ORIGIN sockhop.test.
$TTL 300
@       IN SOA  ns.sockhop.test. hostmaster.sockhop.test. (
                1          ; serial
                3600       ; refresh
                600        ; retry
                86400      ; expire
                60 )       ; negative answers are kept this long
        IN NS   ns
        IN MX   10 mail
        IN TXT  "v=spf1 mx -all"
        IN TXT  "sockhop: the Berkeley-sockets lecture made real"
        IN A    127.0.0.1
        IN AAAA ::1
ns      IN A    127.0.0.1
www     IN A    127.0.0.1
www     IN AAAA ::1
mail    IN A    127.0.0.1
mail    IN AAAA ::1
web     IN CNAME www
_smtp._tcp IN SRV 0 0 2525 mail   ; MX names a host, not a port: sockhop send takes mail's port from here
_http._tcp IN SRV 0 0 8080 www
"""


def builtin_zone(host: str = "127.0.0.1") -> Zone:
    """The zone, its addresses pointing where ``sockhop up`` listens: loopback (both families) by default, only
    ``host`` when it is another specific address (``sockhop up --host 127.0.0.2``), so that what the names point at
    is what answers there -- ``sockhop send --dns`` then reaches this very server's mail."""
    return read_zone_text(zone_text(host), "<built-in sockhop.test>")


def zone_text(host: str) -> str:
    if host in ("127.0.0.1", "::1", "0.0.0.0", "::", ""):
        return ZONE_TEXT
    family, other, loopback = ("AAAA", "A", "::1") if ":" in host else ("A", "AAAA", "127.0.0.1")
    lines = []
    for line in ZONE_TEXT.splitlines(keepends=True):
        words = line.split()
        if len(words) >= 3 and words[-3:-1] == ["IN", other]:
            continue  # the other family: nothing of sockhop's listens there
        if len(words) >= 3 and words[-3:-1] == ["IN", family]:
            line = line.replace(loopback, host)
        lines.append(line)
    return "".join(lines)
