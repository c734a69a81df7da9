"""The command line as a user meets it: one plain line for each mistake, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.support import ROOT, loopback_dns


def sockhop(*args: str, input: bytes | None = None, timeout: float = 20, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sockhop", *args], input=input, capture_output=True, timeout=timeout, cwd=ROOT, **kwargs
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_unknown_host(tmp_path):
    command = loopback_dns([sys.executable, "-m", "sockhop", "serve", "echo", "--listen", "no-such-host.invalid:7007"],
                           tmp_path)  # fmt: skip
    result = subprocess.run(command, capture_output=True, timeout=20, cwd=ROOT)
    line = one_line_error(result)
    assert line == "sockhop: unknown host 'no-such-host.invalid': Temporary failure in name resolution", line


def test_unknown_service_name():
    assert "unknown service name 'nosuchsvc'" in one_line_error(sockhop("serve", "echo", "--listen", ":nosuchsvc"))


def test_port_out_of_range():
    assert "out of range" in one_line_error(sockhop("serve", "echo", "--listen", "127.0.0.1:70000"))


def test_address_in_use_says_which():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(sockhop("serve", "echo", "--listen", f"127.0.0.1:{port}"))
    assert f"127.0.0.1:{port}" in line and "already in use" in line


def test_privileged_port_without_privilege_says_what_to_do():
    def drop_bind_capability():
        # As root, drop CAP_NET_BIND_SERVICE from the bounding set: after exec the process is root without the
        # right to bind low ports, as an ordinary user is.
        import ctypes

        pr_capbset_drop, cap_net_bind_service = 24, 10
        if ctypes.CDLL(None, use_errno=True).prctl(pr_capbset_drop, cap_net_bind_service, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")

    preexec = drop_bind_capability if os.getuid() == 0 else None
    line = one_line_error(sockhop("serve", "echo", "--listen", "127.0.0.1:80", preexec_fn=preexec))
    assert "privileged" in line and "CAP_NET_BIND_SERVICE" in line


def test_talk_to_nothing_listening():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        assert "connection refused" in one_line_error(sockhop("talk", "127.0.0.1", str(port)))


def test_ports_table_and_lookup():
    table = sockhop("ports")
    assert table.returncode == 0
    for name in ("nsiiops", "https", "ftps-data", "ftps", "telnets", "imaps", "ircs", "pop3s", "submission"):
        assert name.encode() in table.stdout
    one = sockhop("ports", "imaps")
    assert one.returncode == 0 and b"993" in one.stdout and b"well-known" in one.stdout
    by_number = sockhop("ports", "40000")
    assert b"registered" in by_number.stdout
    assert "out of range" in one_line_error(sockhop("ports", "65536"))


def test_talk_tcp_half_closes_and_prints_what_was_in_flight(sockhop_server):
    server = sockhop_server(["serve", "echo", "--listen", "127.0.0.1:0"])
    host, port = server.address("echo")
    data = os.urandom(2 * 1024 * 1024)
    result = sockhop("talk", host, str(port), input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


def test_talk_udp_one_datagram_per_line(sockhop_server):
    server = sockhop_server(["serve", "echo", "--udp", "--listen", "127.0.0.1:0"])
    host, port = server.address("echo", "udp")
    result = sockhop("talk", "--udp", "--wait", "0.5", host, str(port), input=b"one\ntwo\nthree")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"one\ntwo\nthree"


@pytest.mark.parametrize("model", ["iterative", "prefork"])
def test_sigint_stops_gracefully(sockhop_server, model):
    import signal

    server = sockhop_server(["serve", "echo", "--model", model, "--listen", "127.0.0.1:0", "--workers", "2"])
    assert server.stop(signal.SIGINT) == 0
    assert "Traceback" not in server.log()


def test_talk_tls_verifies_and_names_what_failed(sockhop_server, tmp_path):
    from tests.tls_certs import LocalCA

    ca = LocalCA(tmp_path)
    good = ca.issue("good", ["localhost", "127.0.0.1"])
    expired = ca.issue("expired", ["localhost", "127.0.0.1"], expired=True)
    wrong = ca.issue("wrong", ["other.test"])
    servers = {}
    for name, pair in (("good", good), ("expired", expired), ("wrong", wrong)):
        servers[name] = sockhop_server(
            ["serve", "echo", "--listen-tls", "127.0.0.1:0", "--tls-cert", str(pair.cert), "--tls-key", str(pair.key)]
        )
    _, port = servers["good"].address("echo", "tls")
    data = os.urandom(1024 * 1024)
    ok = sockhop("talk", "--tls", "--cacert", str(ca.pem), "localhost", str(port), input=data)
    assert ok.returncode == 0 and ok.stdout == data, ok.stderr
    assert "not trusted" in one_line_error(sockhop("talk", "--tls", "localhost", str(port), input=b"x"))
    _, wrong_port = servers["wrong"].address("echo", "tls")
    assert "not for this name" in one_line_error(
        sockhop("talk", "--tls", "--cacert", str(ca.pem), "localhost", str(wrong_port), input=b"x")
    )
    _, bad_port = servers["expired"].address("echo", "tls")
    assert "expired" in one_line_error(
        sockhop("talk", "--tls", "--cacert", str(ca.pem), "localhost", str(bad_port), input=b"x")
    )


# -- malformed hosts and ports, wherever a user writes them: one line, no traceback, no query sent -----------------
HOSTILE_LISTEN = {
    "a..b:7": "empty label",
    "a" * 64 + ".test:7": "longer than 63",
    "xn--zz.test:7": "punycode",
    ":7:": "brackets",
    "[::1:7": "closing ]",
    "[nothost]:1": "brackets are for IPv6",
    "127.0.0.1:-1": "out of range",
    "127.0.0.1:99999": "out of range",
    "127.0.0.1:0x10": "not a number",
    "999.1.1.1:7": "bad IPv4 address",
}


@pytest.mark.parametrize("listen", list(HOSTILE_LISTEN))
def test_serve_with_a_malformed_endpoint(listen):
    assert HOSTILE_LISTEN[listen] in one_line_error(sockhop("serve", "echo", "--listen", listen))


@pytest.mark.parametrize(
    "args, words",
    [
        (["talk", "a..b", "7"], "empty label"),
        (["talk", "a" * 64, "7"], "longer than 63"),
        (["talk", "xn--zz", "7"], "punycode"),
        (["talk", "", "7"], "no host given"),
        (["talk", "[::1", "7"], "closing ]"),
        (["talk", "[nothost]", "7"], "brackets are for IPv6"),
        (["talk", "127.0.0.1", "0x10"], "not a number"),
        (["talk", "127.0.0.1", "99999"], "out of range"),
        (["get", "http://a..b/"], "empty label"),
        (["get", "http://xn--zz/"], "punycode"),
        (["send", "--to", "bob@example.test", "--server", "a..b", "--body", "hi"], "empty label"),
        (["send", "--to", "bob@example.test", "--server", "[nothost]:25", "--body", "hi"], "brackets are for IPv6"),
        (["send", "--to", "bob@example.test", "--server", ":2525", "--body", "hi"], "no host given"),
        (["resolve", "example.test", "@a..b"], "empty label"),
        (["resolve", "example.test", "@xn--zz:53"], "punycode"),
        (["resolve", "example.test", "@[nothost]"], "brackets are for IPv6"),
        (["resolve", "example.test", "@[::1"], "closing ]"),
    ],
)
def test_clients_with_a_malformed_host(args, words):
    assert words in one_line_error(sockhop(*args, input=b""))


def test_listen_on_a_host_alone_means_the_services_port():
    # 7007 is echo's own port: either it is served there, or the line says that address is taken. Both show the
    # default port was used; neither is a complaint about the missing port.
    proc = subprocess.Popen(
        [sys.executable, "-m", "sockhop", "serve", "echo", "--listen", "127.0.0.1"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()
    assert "127.0.0.1:7007" in line, line
    assert line.startswith("sockhop: echo tcp 127.0.0.1:7007") or "in use" in line


def test_listen_tls_on_a_host_alone_says_what_to_write(tmp_path):
    from tests.tls_certs import LocalCA

    pair = LocalCA(tmp_path).issue("good", ["localhost"])
    line = one_line_error(
        sockhop("serve", "echo", "--listen-tls", "127.0.0.1", "--tls-cert", str(pair.cert), "--tls-key", str(pair.key))
    )
    assert "write 127.0.0.1:PORT" in line


def test_talk_to_a_bracketed_ipv6_address(sockhop_server):
    server = sockhop_server(["serve", "echo", "--listen", "[::1]:0"])
    host, port = server.address("echo")
    result = sockhop("talk", f"[{host}]", str(port), input=b"hello\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello\n"


def test_serve_imports_only_the_service_it_serves():
    """``sockhop serve dns`` reads DNS's description alone: importing web and mail was most of its start-up time;
    ``sockhop --help`` still lists every service and client command."""
    import subprocess
    import sys

    from tests.support import ROOT

    code = (
        "import sys; from sockhop import cli; argv = ['serve', 'dns', '--secondary', 'a.test@127.0.0.1'];"
        "args = cli.parse(cli.build_parser(cli.serving(argv)), argv);"
        "print(args.secondary, sorted(m for m in sys.modules if m.split('.')[1:2] in (['web'], ['mail'], ['echo'])))"
    )
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    assert out.stdout.strip() == "['a.test@127.0.0.1'] []", out.stderr
    from sockhop import cli

    assert cli.serving(["-v", "serve", "web", "."]) == "web" and cli.serving(["serve", "--help"]) is None
    assert cli.serving(["get", "serve", "dns"]) is None and cli.serving(["serve", "nope"]) is None
    helps = cli.build_parser().format_help()
    assert all(command in helps for command in ("get", "resolve", "send", "mailbox"))
