"""Virtual hosts: several sites on one address, chosen by Host (HTTP/1.1), :authority (HTTP/2) and, for the
certificate, SNI -- driven by curl --resolve against real servers, and sockhop.toml's host tables."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from sockhop import config
from sockhop.web.accesslog import AccessLog
from sockhop.web.files import Site, SiteOptions
from sockhop.web.hosts import Hosts, VirtualHost, host_spec
from tests.support import require_tool, start_server
from tests.tls_certs import LocalCA

from .conftest import MODELS
from .helpers import feed, parse_responses

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("vhosts")
    for name in ("a", "b", "catchall"):
        folder = base / name
        folder.mkdir()
        (folder / "index.html").write_text(f"site {name}\n")
        (folder / ".hidden").write_text(f"hidden {name}\n")
    return base


# -- in memory ----------------------------------------------------------------------------------------------------
def test_a_host_is_picked_by_name_port_case_and_final_dot(tmp_path):
    default, a, b = (VirtualHost(Site(SiteOptions(root=tmp_path)), None) for _ in range(3))
    hosts = Hosts(default, {"a.test": a, "b.test": b, "[::1]": b})
    assert hosts.pick("a.test") is a and hosts.pick("A.Test:8080") is a and hosts.pick("a.test.") is a
    assert hosts.pick("b.test:443") is b and hosts.pick("[::1]:8080") is b and hosts.pick("[::1]") is b
    assert hosts.pick("c.test") is default and hosts.pick(None) is default and hosts.pick("") is default


@pytest.mark.parametrize(
    "text, message",
    [
        ("a.test", "not NAME=ROOT"),
        ("a.test=", "not NAME=ROOT"),
        ("a b=/srv", "not a host name"),
        ("a.test=/srv,frob", "unknown option 'frob'"),
    ],
)
def test_host_spec_mistakes_are_one_line(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        host_spec(text)


def test_host_spec_options():
    spec = host_spec("A.Test=/srv/a,no-listing,dotfiles,access-log=/var/log/a.log,default")
    assert spec.name == "a.test" and spec.root == "/srv/a"
    assert spec.settings == {"listing": False, "dotfiles": True, "access_log": "/var/log/a.log", "default": True}


def test_the_memo_remembers_the_host(roots, tmp_path):
    """The hot path answers from a request's exact bytes: the Host header is among them, so each host keeps its own."""
    from sockhop.web.protocol import HttpLimits, HttpServer, WebOptions

    a = VirtualHost(Site(SiteOptions(root=roots / "a")), None)
    b = VirtualHost(Site(SiteOptions(root=roots / "b")), AccessLog(str(tmp_path / "b.log")))
    options = WebOptions(a.site, HttpLimits(), None, hosts=Hosts(a, {"a.test": a, "b.test": b}))
    for _ in range(3):  # parsed, then from the memo
        for name in ("a", "b"):
            raw, _ = feed(HttpServer(options), f"GET / HTTP/1.1\r\nHost: {name}.test\r\n\r\n".encode())
            assert parse_responses(raw)[0].body == f"site {name}\n".encode()
    b.log.close()
    assert (tmp_path / "b.log").read_text().count('"GET / HTTP/1.1" 200') == 3


# -- real servers -------------------------------------------------------------------------------------------------
def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_tool("curl"), "-sS", "--max-time", "20", *args], capture_output=True, timeout=30, check=False
    )


def serve(*args: str, announce: int = 1):
    return start_server(["serve", "web", *args], announce=announce, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.parametrize("model", MODELS)
def test_two_hosts_and_the_first_answers_unknown_names(roots, tmp_path, model):
    a_log, default_log = tmp_path / "a.log", tmp_path / "default.log"
    workers = ["--workers", "2"] if model in ("pool", "prefork") else []
    server = serve(
        "--listen", "127.0.0.1:0", "--model", model, *workers, "--access-log", str(default_log),
        "--host", f"a.test={roots / 'a'},access-log={a_log}",
        "--host", f"b.test={roots / 'b'},dotfiles",
    )  # fmt: skip
    try:
        host, port = server.address("web")

        def get(name: str, path: str = "/", *extra: str) -> bytes:
            return curl("--resolve", f"{name}:{port}:{host}", *extra, f"http://{name}:{port}{path}").stdout

        assert get("a.test") == b"site a\n" and get("b.test") == b"site b\n"
        assert get("B.TEST") == b"site b\n"
        assert get("unknown.test") == b"site a\n"  # nginx's default server: the first
        assert curl("-H", "Host: b.test", f"http://{host}:{port}/").stdout == b"site b\n"
        assert get("b.test", "/.hidden") == b"hidden b\n"  # dotfiles for b only
        assert b"404" in get("a.test", "/.hidden", "-w", "%{http_code}")
        assert get("b.test", "/", "--http2-prior-knowledge") == b"site b\n"  # :authority picks the host too
        assert get("a.test", "/", "--http1.0") == b"site a\n"
    finally:
        server.stop()
    a_lines, default_lines = a_log.read_text(), default_log.read_text()
    assert a_lines.count("HTTP/1.") == 4 and "/.hidden" in a_lines  # a.test and the unknown name
    assert default_lines.count('"GET / HTTP/2.0" 200') == 1 and '"GET /.hidden HTTP/1.1" 200' in default_lines


def test_a_root_answers_the_names_no_host_names_and_default_marks_one(roots):
    server = serve(
        "--listen", "127.0.0.1:0", "--no-access-log", str(roots / "catchall"), "--host", f"a.test={roots / 'a'}"
    )
    try:
        host, port = server.address("web")
        assert curl("-H", "Host: a.test", f"http://{host}:{port}/").stdout == b"site a\n"
        assert curl("-H", "Host: x.test", f"http://{host}:{port}/").stdout == b"site catchall\n"
    finally:
        server.stop()
    hosts = ("--host", f"a.test={roots / 'a'}", "--host", f"b.test={roots / 'b'},default")
    server = serve("--listen", "127.0.0.1:0", "--no-access-log", *hosts)
    try:
        host, port = server.address("web")
        assert curl("-H", "Host: x.test", f"http://{host}:{port}/").stdout == b"site b\n"
    finally:
        server.stop()


@pytest.mark.parametrize("model", ["eventloop", "thread"])
def test_two_hosts_with_two_certificates_chosen_by_sni(roots, tmp_path, model):
    ca = LocalCA(tmp_path)
    a, b = ca.issue("a", ["a.test"]), ca.issue("b", ["b.test"])
    server = serve(
        "--listen-tls", "127.0.0.1:0", "--model", model, "--no-access-log",
        "--tls-cert", str(a.cert), "--tls-key", str(a.key), "--tls-cert", str(b.cert), "--tls-key", str(b.key),
        "--host", f"a.test={roots / 'a'}", "--host", f"b.test={roots / 'b'}",
    )  # fmt: skip
    try:
        host, port = server.address("web", "tls")
        for name in ("a", "b"):
            for version in ("--http1.1", "--http2"):
                # curl verifies the certificate against the name: it passes only if SNI chose that host's one.
                result = curl(
                    "--cacert", str(ca.pem), "--resolve", f"{name}.test:{port}:{host}", version,
                    "-w", " %{http_version}", f"https://{name}.test:{port}/",
                )  # fmt: skip
                expected = f"site {name}\n {'2' if version == '--http2' else '1.1'}".encode()
                assert result.stdout == expected, result.stderr
    finally:
        server.stop()


# -- sockhop.toml -------------------------------------------------------------------------------------------------
def test_host_tables_in_sockhop_toml(roots, tmp_path):
    path = tmp_path / "sockhop.toml"
    path.write_text(
        f"""[services.web]
listen = "127.0.0.1:0"
no-access-log = true

[services.web.hosts."a.test"]
root = "{roots / "a"}"
listing = false

[services.web.hosts."b.test"]
root = "{roots / "b"}"
dotfiles = true
"""
    )
    configs, mistakes = config.load(path)
    assert mistakes == []
    argv = configs[0].argv
    assert argv[argv.index("--host") + 1] == f"a.test={roots / 'a'},no-listing"
    assert f"b.test={roots / 'b'},dotfiles" in argv
    server = serve(*argv[2:])  # the very command line the file stands for
    try:
        host, port = server.address("web")
        assert curl("-H", "Host: b.test", f"http://{host}:{port}/.hidden").stdout == b"hidden b\n"
    finally:
        server.stop()


def test_host_table_mistakes_have_their_line(tmp_path):
    path = tmp_path / "sockhop.toml"
    path.write_text(
        """[services.web]
listen = "127.0.0.1:0"

[services.web.hosts."a.test"]
root = "/nowhere/at/all"

[services.web.hosts."b.test"]
root = "/tmp"
frob = true
"""
    )
    _, mistakes = config.load(path)
    assert [(m.line, "unknown option 'frob'" in m.message) for m in mistakes] == [(7, True)]
    result = subprocess.run(
        [sys.executable, "-m", "sockhop", "check", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and f"{path}:7:" in result.stderr
    path.write_text(path.read_text().replace("frob = true\n", ""))
    result = subprocess.run(
        [sys.executable, "-m", "sockhop", "check", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert f"{path}:4: services.web.hosts: not a directory: /nowhere/at/all (host a.test)" in result.stderr


def test_wrong_hosts_on_the_command_line_are_one_line(roots):
    result = subprocess.run(
        [sys.executable, "-m", "sockhop", "serve", "web", "--host", "a.test=/nowhere/at/all"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and result.stderr.strip() == "sockhop: not a directory: /nowhere/at/all (host a.test)"
