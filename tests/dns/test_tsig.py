"""TSIG (RFC 8945): keys as BIND and nsupdate -y write them, signed answers, and NOTAUTH with BADKEY, BADSIG and
BADTIME for requests whose signature does not hold -- with dig -y and dnspython as the clients."""

from __future__ import annotations

import base64
import socket
import subprocess
from unittest import mock

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import pytest

from sockhop.dns.tsig import Acl, TsigError, key_from_spec, keyring, keys_from_file
from tests.dns.zones import EXAMPLE, write_zone
from tests.support import require_tool

SECRET = base64.b64encode(bytes(range(32))).decode()
OTHER = base64.b64encode(bytes(range(1, 33))).decode()


def test_key_specs_as_nsupdate_y_reads_them():
    key = key_from_spec(f"xfr:{SECRET}")
    assert key.name == dns.name.from_text("xfr") and key.algorithm == dns.tsig.HMAC_SHA256
    key = key_from_spec(f"hmac-sha512:other.key:{SECRET}")
    assert key.algorithm == dns.tsig.HMAC_SHA512 and key.name == dns.name.from_text("other.key")
    for bad in ("justaname", f"hmac-nope:x:{SECRET}", "x:not base64!", f"a:b:c:{SECRET}"):
        with pytest.raises(TsigError) as info:
            key_from_spec(bad)
        assert "\n" not in str(info.value)


def test_bind_key_file(tmp_path):
    path = tmp_path / "keys.conf"
    path.write_text(
        f'# made by tsig-keygen\nkey "xfr" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n'
        f'key upd.example {{ algorithm hmac-sha384; secret "{OTHER}"; }};\n'
    )
    keys = keys_from_file(str(path))
    assert [(str(k.name), k.algorithm) for k in keys] == [
        ("xfr.", dns.tsig.HMAC_SHA256),
        ("upd.example.", dns.tsig.HMAC_SHA384),
    ]
    path.write_text("nothing here\n")
    with pytest.raises(TsigError, match="no key"):
        keys_from_file(str(path))
    with pytest.raises(TsigError, match="No such file"):
        keys_from_file(str(tmp_path / "absent"))


def test_acl_of_addresses_and_keys():
    ring = keyring([f"xfr:{SECRET}"])
    acl = Acl.parse("--allow-transfer", ["192.0.2.0/24", "key:xfr"], ring)
    assert acl.allows(("192.0.2.7", 1), None)
    assert not acl.allows(("127.0.0.1", 1), None)
    assert acl.allows(("127.0.0.1", 1), dns.name.from_text("xfr"))
    assert not acl.allows(("127.0.0.1", 1), dns.name.from_text("other"))
    with pytest.raises(TsigError, match="no such key"):
        Acl.parse("--allow-transfer", ["key:other"], ring)
    assert not Acl()


def serve(sockhop_server, tmp_path, *extra):
    zone = write_zone(tmp_path)
    args = ["serve", "dns", str(zone), "--listen", "127.0.0.1:0", "--model", "eventloop", "--query-log", "-"]
    server = sockhop_server([*args, "--tsig", f"xfr:{SECRET}", *extra], announce=2)
    return server, server.address("dns", "udp")[1]


def dig(port: int, *args: str) -> str:
    done = subprocess.run(
        [require_tool("dig"), "@127.0.0.1", "-p", str(port), "+time=5", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + done.stderr


def test_transfer_by_key_with_dig_y(sockhop_server, tmp_path):
    _, port = serve(sockhop_server, tmp_path, "--allow-transfer", "key:xfr")
    out = dig(port, "-y", f"hmac-sha256:xfr:{SECRET}", "example.com", "AXFR")
    assert "XFR size: 42 records" in out and "Transfer failed" not in out
    assert "xfr.\t\t\t0\tANY\tTSIG\thmac-sha256." in out  # every message signed, and dig checked them
    out = dig(port, "example.com", "AXFR")  # unsigned: the key is the only way in
    assert "Transfer failed" in out
    out = dig(port, "-y", f"hmac-sha256:xfr:{OTHER}", "example.com", "AXFR")  # the wrong secret
    assert "BADSIG" in out and "Transfer failed" in out
    out = dig(port, "-y", f"hmac-sha256:nokey:{SECRET}", "example.com", "AXFR")  # a key we do not have
    assert "BADKEY" in out and "Transfer failed" in out


def test_a_large_transfer_is_signed_message_by_message(sockhop_server, tmp_path):
    """Many messages: each signed over the MAC before it (RFC 8945 section 5.3.1), as dnspython checks."""
    text = "".join(f"h{i} IN A 192.0.2.{i % 250}\n" for i in range(3000))
    zone = write_zone(tmp_path, EXAMPLE + text)
    args = ["serve", "dns", str(zone), "--listen", "127.0.0.1:0", "--model", "eventloop"]
    server = sockhop_server([*args, "--tsig", f"xfr:{SECRET}", "--allow-transfer", "key:xfr"], announce=2)
    port = server.address("dns", "tcp")[1]
    ring = dns.tsigkeyring.from_text({"xfr": ("hmac-sha256", SECRET)})
    messages = list(dns.query.xfr("127.0.0.1", "example.com", port=port, keyring=ring, keyname="xfr", timeout=10))
    assert len(messages) > 3
    assert sum(len(rrset) for m in messages for rrset in m.answer) == 3000 + 30  # and the example zone, SOA twice


def test_signed_query_gets_signed_answer_and_badtime(sockhop_server, tmp_path):
    _, port = serve(sockhop_server, tmp_path)
    out = dig(port, "-y", f"hmac-sha256:xfr:{SECRET}", "www.example.com", "A")
    assert "status: NOERROR" in out and "192.0.2.2" in out and "TSIG PSEUDOSECTION" in out
    assert "NOERROR 0" in out.split("TSIG PSEUDOSECTION")[1] and "failure" not in out.lower()
    ring = dns.tsigkeyring.from_text({"xfr": ("hmac-sha256", SECRET)})
    query = dns.message.make_query("www.example.com", "A")
    query.use_tsig(ring, "xfr")
    with mock.patch("time.time", return_value=1_000_000_000.0):  # signed in 2001: far outside the fudge
        wire = query.to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(wire, ("127.0.0.1", port))
        raw = dns.message.from_wire(sock.recv(4096), keyring=False)
    assert raw.rcode() == dns.rcode.NOTAUTH and raw.tsig_error == dns.rcode.BADTIME
    assert raw.mac  # BADTIME comes signed, the server's time in the other data
    assert int.from_bytes(raw.tsig[0].other, "big") > 1_700_000_000
