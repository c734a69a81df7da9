"""A zone file served by ``sockhop serve dns``, for the mail client's routing tests: DNS and mail working together."""

from __future__ import annotations

from pathlib import Path

#: One zone for the parent ``test.``, so one file holds every domain the tests route to.
ZONE_HEAD = """\
$ORIGIN test.
$TTL 60
@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60
  IN NS ns
ns IN A 127.0.0.1
"""


def serve_zone(sockhop_server, folder: Path, records: str) -> str:
    """Serve ``records`` (zone-file lines relative to ``test.``) on loopback; the UDP endpoint, ``host:port``."""
    path = folder / "test.zone"
    path.write_text(ZONE_HEAD + records)
    server = sockhop_server(["serve", "dns", str(path), "--listen", "127.0.0.1:0"], announce=2)
    host, port = server.address("dns", "udp")
    return f"{host}:{port}"
