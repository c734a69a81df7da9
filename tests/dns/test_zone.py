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
        ("bad IN A 999.1.1.1", "bad IPv4 address '999.1.1.1': write four numbers 0-255, as 192.0.2.1"),
        ("bad IN BOGUS 1", "unknown record type 'BOGUS'"),
        ("bad IN MX mail", "a field is missing, or is not a number: MX wants a preference and a host name"),
        ("bad IN MX 10 mail extra", "too many fields: MX wants a preference and a host name"),
    ],
)  # the reasons, word for word
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
    # the $INCLUDE that names it, in its own file: line 2 of hosts.inc
    with pytest.raises(
        ZoneError, match=r"^zones/inc/hosts\.inc:2: cannot read zones/inc/deeper/more\.inc: No such file"
    ):
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


# -- every error a person can make in a zone file: the right file and line, and the reason in words -----------------
BASE = """$ORIGIN example.org.
$TTL 3600
@    IN SOA ns1 hostmaster ( 1 7200 3600 1209600 300 )
     IN NS  ns1
ns1  IN A   192.0.2.1
$INCLUDE hosts.inc
www  IN A   192.0.2.2
"""

# (text of hosts.inc, the line of it that is wrong, words the reason must have)
INCLUDED_MISTAKES = {
    "bad-ipv4": ("ok IN A 192.0.2.3\n; a comment\n\nbad IN A 192.0.2\n", 4, "bad IPv4 address '192.0.2'"),
    "bad-ipv4-range": ("bad IN A 300.1.1.1\n", 1, "bad IPv4 address '300.1.1.1'"),
    "bad-ipv6": ("ok IN A 192.0.2.3\nbad IN AAAA 2001:db8::g\n", 2, "bad IPv6 address '2001:db8::g'"),
    "unclosed-parenthesis": ("ok IN A 192.0.2.3\nbad IN MX ( 10 mail\nnext IN A 192.0.2.4\n", 2,
                             "an unclosed parenthesis"),
    "unclosed-at-the-end": ("bad IN MX ( 10 mail\n", 1, "an unclosed parenthesis"),
    "stray-close": ("bad IN A 192.0.2.3 )\n", 1, "a ) without its ("),
    "unknown-type": ("ok IN A 192.0.2.3\nbad IN BOGUS 1\n", 2, "unknown record type 'BOGUS'"),
    "missing-field": ("bad IN MX 10\n", 1, "a field is missing: MX wants a preference and a host name"),
    "missing-data": ("bad IN A\n", 1, "a field is missing: A wants an IPv4 address"),
    "ttl-not-a-number": ("bad 1x2 IN A 192.0.2.3\n", 1, "'1x2' is not a TTL"),
    "ttl-directive": ("ok IN A 192.0.2.3\n$TTL soon\nlater IN A 192.0.2.4\n", 2, "'soon' is not a TTL"),
    "empty-label": ("a..b IN A 192.0.2.3\n", 1, "empty label"),
    "open-quote": ('bad IN TXT "no end\n', 1, "a quoted string is not closed"),
    "missing-include": ("ok IN A 192.0.2.3\n$INCLUDE nowhere.inc\n", 2, "cannot read"),
    "include-without-file": ("$INCLUDE\n", 1, "$INCLUDE needs a file name"),
    "unknown-directive": ("$FROB x\n", 1, "unknown directive $FROB"),
}  # fmt: skip
INTERNALS = ("dns.", "Error", "Exception", "rdatatype", "identifier", "EOL", "<class", "token", "malformed")


def write_mistake(tmp_path, name):
    text, line, words = INCLUDED_MISTAKES[name]
    (tmp_path / "hosts.inc").write_text(text)
    return write_zone(tmp_path, BASE, "example.org.zone"), tmp_path / "hosts.inc", line, words


@pytest.mark.parametrize("name", list(INCLUDED_MISTAKES))
def test_a_mistake_in_an_included_file_names_that_file_and_line(tmp_path, name):
    path, included, line, words = write_mistake(tmp_path, name)
    with pytest.raises(ZoneError) as info:
        read_zones([path])
    message = str(info.value)
    assert message.startswith(f"{included}:{line}: "), message
    assert words in message and "\n" not in message
    assert not any(word in message.split(" (in: ")[0] for word in INTERNALS), message


@pytest.mark.parametrize("name", ["bad-ipv4", "unclosed-parenthesis", "ttl-directive", "missing-include"])
def test_a_mistake_after_an_include_names_the_including_file(tmp_path, name):
    # the same mistake moved to the main file, after the $INCLUDE of a good file: the main file's line
    text, _line, words = INCLUDED_MISTAKES[name]
    (tmp_path / "hosts.inc").write_text("ok IN A 192.0.2.3\n")
    path = write_zone(tmp_path, BASE + text, "example.org.zone")
    with pytest.raises(ZoneError) as info:
        read_zones([path])
    message = str(info.value)
    first_line_of_mistake = len(BASE.splitlines()) + _line
    assert message.startswith(f"{path}:{first_line_of_mistake}: "), message
    assert words in message


@pytest.mark.parametrize("name", ["bad-ipv4", "bad-ipv6", "unclosed-parenthesis", "unknown-type", "missing-field",
                                  "ttl-not-a-number", "ttl-directive", "missing-include"])  # fmt: skip
def test_serve_dns_with_a_broken_zone_says_one_line(tmp_path, name):
    import subprocess
    import sys

    from tests.support import ROOT

    path, included, line, words = write_mistake(tmp_path, name)
    result = subprocess.run(
        [sys.executable, "-m", "sockhop", "serve", "dns", str(path), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=20, cwd=ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    [error] = result.stderr.strip().splitlines()
    assert error.startswith(f"sockhop: {included}:{line}: ") and words in error, error
