import socket
from unittest import mock

from sockhop.net import ports

LECTURE = {
    "nsiiops": 261,
    "https": 443,
    "ftps-data": 989,
    "ftps": 990,
    "telnets": 992,
    "imaps": 993,
    "ircs": 994,
    "pop3s": 995,
    "smtp": 25,
    "submission": 587,
    "domain": 53,
    "http": 80,
}


def test_builtin_table_knows_every_port_the_lecture_lists():
    known = {name: port for name, port, _, _ in ports.BUILTIN}
    for name, port in LECTURE.items():
        assert known[name] == port


def test_names_resolve_without_the_services_database():
    # Where /etc/services is missing, getservbyname fails; the built-in table must answer.
    with mock.patch.object(socket, "getservbyname", side_effect=OSError("no database")):
        for name, port in LECTURE.items():
            assert ports.lookup_name(name) == port


def test_ranges():
    assert ports.range_of(80).startswith("well-known")
    assert ports.range_of(1023).startswith("well-known")
    assert ports.range_of(1024).startswith("registered")
    assert ports.range_of(49151).startswith("registered")
    assert ports.range_of(49152).startswith("dynamic")


def test_ephemeral_range_is_this_machines():
    low, high = ports.ephemeral_range()
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        assert (low, high) == tuple(int(x) for x in f.read().split())


def test_describe_one_port():
    text = ports.describe(ports.query("pop3s"))
    assert "995" in text and "pop3s" in text and "well-known" in text and "TLS" in text


def test_table_lists_the_lecture_ports():
    table = ports.table()
    for name in LECTURE:
        assert name in table
    assert "ephemeral" in table
