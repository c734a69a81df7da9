"""Reading master files: what dnspython reads, indexed; what it cannot, reported as file:line: reason."""

from __future__ import annotations

import dns.name
import dns.rdatatype
import pytest

from sockhop.dns.zone import ZoneError, read_zone_file, read_zone_text, read_zones
from tests.dns.zones import EXAMPLE, EXAMPLE_ORG, write_zone

A = dns.rdatatype.A
N = dns.name.from_text


def test_reads_directives_relative_names_and_multiline_records():
    zone = read_zone_text(EXAMPLE, "example.com.zone")
    assert zone.origin == N("example.com.")
    assert zone.serial == 2024010101
    assert zone.soa[0].minimum == 300
    assert zone.get(N("www.example.com."), A)[0].address == "192.0.2.2"
    assert zone.get(N("www.example.com."), A).ttl == 3600


def test_index_knows_empty_non_terminals_and_cuts():
    zone = read_zone_text(EXAMPLE, "example.com.zone")
    assert N("b.c.example.com.") in zone.names  # only a.b.c has records
    assert N("b.c.example.com.") not in zone.rrsets
    assert zone.cuts == {N("sub.example.com.")}


def test_transfer_order_starts_and_ends_with_soa():
    zone = read_zone_text(EXAMPLE, "example.com.zone")
    rrsets = list(zone.transfer_order())
    assert rrsets[0].rdtype == rrsets[-1].rdtype == dns.rdatatype.SOA
    assert sum(1 for r in rrsets if r.rdtype == dns.rdatatype.SOA) == 2


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("bad IN A 999.1.1.1", "Text input is malformed"),
        ("bad IN BOGUS 1", "unknown rdatatype 'BOGUS'"),
        ("bad IN MX mail", "expecting an integer"),
        ("bad IN MX 10 mail extra", 'expected EOL or EOF, got 3 "extra"'),
    ],
)  # dnspython's reasons, word for word
def test_broken_record_names_file_and_its_line(tmp_path, bad_line, reason):
    lines = EXAMPLE_ORG.splitlines()
    lines.insert(4, bad_line)  # line 5
    lines.append("after IN A 192.0.2.1")
    path = write_zone(tmp_path, "\n".join(lines) + "\n", "example.org.zone")
    with pytest.raises(ZoneError) as info:
        read_zone_file(path)
    assert str(info.value) == f"{path}:5: {reason} (in: {bad_line})"  # one line: file, line, reason, the line


def test_missing_soa_and_missing_file(tmp_path):
    path = write_zone(tmp_path, "$ORIGIN example.net.\n$TTL 60\nwww IN A 192.0.2.1\n", "x.zone")
    with pytest.raises(ZoneError, match="no SOA"):
        read_zone_file(path)
    with pytest.raises(ZoneError, match="no such file"):
        read_zone_file(tmp_path / "absent.zone")


def test_origin_from_file_name_when_no_origin_directive(tmp_path):
    text = EXAMPLE_ORG.replace("$ORIGIN example.org.\n", "")
    zone = read_zone_file(write_zone(tmp_path, text, "example.org.zone"))
    assert zone.origin == N("example.org.")
    with pytest.raises(ZoneError, match=r"origin is unknown.*\$ORIGIN"):
        read_zone_file(write_zone(tmp_path, text, "zonefile"))


def test_include(tmp_path):
    (tmp_path / "hosts.inc").write_text("www IN A 192.0.2.80\n")
    text = EXAMPLE_ORG + f"$INCLUDE {tmp_path / 'hosts.inc'}\n"
    zone = read_zone_file(write_zone(tmp_path, text, "example.org.zone"))
    assert zone.get(N("www.example.org."), A)[0].address == "192.0.2.80"


def test_include_is_relative_to_the_including_files_folder(tmp_path, monkeypatch):
    zones = tmp_path / "zones"
    (zones / "inc" / "deeper").mkdir(parents=True)
    (zones / "inc" / "hosts.inc").write_text("www IN A 192.0.2.80\n$INCLUDE deeper/more.inc\n")
    (zones / "inc" / "deeper" / "more.inc").write_text("api IN A 192.0.2.81\n")
    (zones / "quoted name.inc").write_text("txt IN TXT hello\n")
    text = EXAMPLE_ORG + '$INCLUDE inc/hosts.inc\n$INCLUDE "quoted name.inc"\n'
    path = write_zone(zones, text, "example.org.zone")
    monkeypatch.chdir(tmp_path)  # elsewhere: the working directory does not matter
    for given in (path, "zones/example.org.zone"):
        zone = read_zone_file(given)
        assert zone.get(N("www.example.org."), A)[0].address == "192.0.2.80"
        assert zone.get(N("api.example.org."), A)[0].address == "192.0.2.81"
        assert zone.get(N("txt.example.org."), dns.rdatatype.TXT) is not None
    (zones / "inc" / "deeper" / "more.inc").unlink()
    with pytest.raises(ZoneError, match=r"No such file or directory: zones/inc/deeper/more\.inc"):
        read_zone_file("zones/example.org.zone")


def test_broken_include_names_the_included_file(tmp_path):
    (tmp_path / "hosts.inc").write_text("www IN A 192.0.2.80\nbad IN A nope\n")
    text = EXAMPLE_ORG + f"$INCLUDE {tmp_path / 'hosts.inc'}\n"
    with pytest.raises(ZoneError, match=r"hosts\.inc:2:"):
        read_zone_file(write_zone(tmp_path, text, "example.org.zone"))


def test_the_same_zone_twice_is_an_error(tmp_path):
    one = write_zone(tmp_path, EXAMPLE_ORG, "a.zone")
    two = write_zone(tmp_path, EXAMPLE_ORG, "b.zone")
    with pytest.raises(ZoneError, match="already loaded"):
        read_zones([one, two])
