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
        IN AAAA ::1
mail    IN A    127.0.0.1
        IN AAAA ::1
web     IN CNAME www
_smtp._tcp IN SRV 0 0 2525 mail
_http._tcp IN SRV 0 0 8080 www
"""


def builtin_zone() -> Zone:
    return read_zone_text(ZONE_TEXT, "<built-in sockhop.test>")
