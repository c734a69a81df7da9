"""HTTPS: `sockhop serve web --listen-tls` under every model, driven by curl, wget and Python's ssl; `sockhop get
https://` against sockhop and nginx, its certificate checks (expired, wrong name, untrusted, -k) and redirects
between http and https."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import end_process, require_tool, start_server, wait_for_port
from tests.tls_certs import LocalCA

from .conftest import BIG, MODELS

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = LocalCA(folder)
    return {
        "ca": ca,
        "good": ca.issue("good", ["localhost", "127.0.0.1"]),
        "expired": ca.issue("expired", ["localhost", "127.0.0.1"], expired=True),
        "other": ca.issue("other", ["other.example"]),
    }


def https_web(site: Path, model: str, pair, *extra: str, plain: bool = True):
    """`sockhop serve web` with a TLS listener (and a plain one beside it unless ``plain`` is false)."""
    args = ["serve", "web", str(site), "--model", model, "--no-access-log"]
    args += ["--listen-tls", "127.0.0.1:0", "--tls-cert", str(pair.cert), "--tls-key", str(pair.key)]
    if plain:
        args += ["--listen", "127.0.0.1:0"]
    if model in ("pool", "prefork"):
        args += ["--workers", "2"]
    return start_server([*args, *extra], announce=2 if plain else 1, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def sockhop_get(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sockhop", "get", *args], capture_output=True, timeout=timeout, check=False
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result
    text = result.stderr.decode()
    assert "Traceback" not in text and text.count("\n") == 1, text
    return text


@pytest.fixture(scope="module", params=MODELS)
def https(request, site, pki):
    server = https_web(site, request.param, pki["good"], "--idle-timeout", "5", "--grace", "2")
    host, port = server.address("web", "tls")
    plain_host, plain_port = server.address("web", "tcp")
    try:
        yield {"url": f"https://{host}:{port}", "plain": f"http://{plain_host}:{plain_port}", "port": port}
    finally:
        server.stop()
        if server.proc.stderr:
            server.proc.stderr.close()


def test_curl_over_https_every_model(https, pki):
    curl = require_tool("curl")
    ca = str(pki["ca"].pem)
    url = https["url"]
    result = subprocess.run(
        [
            curl,
            "-sS",
            "--http1.1",
            "--cacert",
            ca,
            "-w",
            "%{http_version} %{num_connects}\\n",
            f"{url}/hello.txt",
            f"{url}/",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"hello, world\n1.1 1\n"), result.stdout
    assert result.stdout.endswith(b"1.1 0\n"), result.stdout  # the second URL reused the TLS connection
    big = subprocess.run([curl, "-sS", "--cacert", ca, f"{url}/big.bin"], capture_output=True, timeout=30, check=False)
    assert big.stdout == BIG  # a file region, read and encrypted
    # the plain listener beside it still answers in plaintext
    plain = subprocess.run([curl, "-sS", f"{https['plain']}/hello.txt"], capture_output=True, timeout=30, check=False)
    assert plain.stdout == b"hello, world\n"


def test_wget_over_https_every_model(https, pki, tmp_path):
    wget = require_tool("wget")
    result = subprocess.run(
        [wget, "-q", "--ca-certificate", str(pki["ca"].pem), "-O", str(tmp_path / "big"), f"{https['url']}/big.bin"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "big").read_bytes() == BIG


def test_sockhop_get_over_https_every_model(https, pki):
    url = https["url"]
    result = sockhop_get("--cacert", str(pki["ca"].pem), f"{url}/hello.txt", f"{url}/docs/readme.md")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello, world\n# docs\n"


def test_alpn_and_versions(site, pki):
    server = https_web(site, "eventloop", pki["good"])
    try:
        host, port = server.address("web", "tls")
        context = ssl.create_default_context(cafile=str(pki["ca"].pem))
        for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"), (["http/1.1", "h2"], "h2")):
            context.set_alpn_protocols(offered)
            raw = socket.create_connection((host, port), timeout=10)
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.selected_alpn_protocol() == chosen, offered
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(site, pki):
    """One HTTPS server per certificate the client must judge."""
    servers = {name: https_web(site, "eventloop", pki[name]) for name in ("good", "expired", "other")}
    try:
        urls = {name: "https://{}:{}".format(*s.address("web", "tls")) for name, s in servers.items()}
        yield urls | {"plain": "http://{}:{}".format(*servers["good"].address("web", "tcp"))}
    finally:
        for server in servers.values():
            server.stop()


def test_get_names_what_failed(served, pki):
    ca = str(pki["ca"].pem)
    assert "not trusted" in one_line_error(sockhop_get(f"{served['good']}/hello.txt"))
    assert "expired" in one_line_error(sockhop_get("--cacert", ca, f"{served['expired']}/hello.txt"))
    assert "not for this name" in one_line_error(sockhop_get("--cacert", ca, f"{served['other']}/hello.txt"))
    # https:// to a plain port, http:// to a TLS port
    plain_as_tls = served["plain"].replace("http://", "https://")
    assert "TLS handshake" in one_line_error(sockhop_get("--cacert", ca, f"{plain_as_tls}/hello.txt"))
    tls_as_plain = served["good"].replace("https://", "http://")
    assert one_line_error(sockhop_get("--timeout", "5", f"{tls_as_plain}/hello.txt"))
    assert "cannot use --cacert" in one_line_error(sockhop_get("--cacert", "/nonexistent", served["good"]))


def test_get_insecure_warns(served):
    result = sockhop_get("-k", f"{served['other']}/hello.txt")
    assert result.returncode == 0 and result.stdout == b"hello, world\n"
    assert b"warning" in result.stderr and b"-k" in result.stderr
    silent = sockhop_get("-s", "-k", f"{served['other']}/hello.txt")  # -s: no warnings
    assert silent.returncode == 0 and silent.stdout == b"hello, world\n" and silent.stderr == b""


def test_get_by_name_following_a_redirect(served, pki):
    """The certificate's DNS name checked, and the server's folder redirect followed on the same TLS connection."""
    ca = str(pki["ca"].pem)
    by_name = served["good"].replace("127.0.0.1", "localhost")
    result = sockhop_get("--cacert", ca, "-L", f"{by_name}/docs")
    assert result.returncode == 0 and b"readme.md" in result.stdout, result.stderr


def test_redirect_between_http_and_https(served, pki):
    """A plain server that sends every request to the HTTPS one, and back: -L follows across schemes."""
    import threading

    target = served["good"]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        listener.settimeout(20)
        for _ in range(2):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                body = b""
                conn.sendall(
                    b"HTTP/1.1 301 Moved\r\nLocation: " + target.encode() + b"/hello.txt\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n" + body
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        result = sockhop_get("--cacert", str(pki["ca"].pem), "-L", f"http://127.0.0.1:{port}/")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"hello, world\n"
    finally:
        listener.close()
        thread.join(10)


def test_get_against_nginx_over_https(site, pki, tmp_path):
    nginx = require_tool("nginx")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pair = pki["good"]
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""
        daemon off; worker_processes 1; user root root; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;
        events {{ worker_connections 64; }}
        http {{
            access_log off; client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path};
            fastcgi_temp_path {tmp_path}; uwsgi_temp_path {tmp_path}; scgi_temp_path {tmp_path};
            server {{
                listen 127.0.0.1:{port} ssl; root {site}; autoindex on;
                ssl_certificate {pair.cert}; ssl_certificate_key {pair.key};
                ssl_protocols TLSv1.2 TLSv1.3;
            }}
        }}
        """
    )
    proc = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc, "nginx")
        base = f"https://localhost:{port}"
        ca = str(pki["ca"].pem)
        result = sockhop_get("--cacert", ca, f"{base}/hello.txt", f"{base}/big.bin")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"hello, world\n" + BIG
        assert b"readme.md" in sockhop_get("--cacert", ca, "-L", f"{base}/docs").stdout
        assert "not trusted" in one_line_error(sockhop_get(f"{base}/hello.txt"))
    finally:
        end_process(proc, 10)


def test_failures_exit_as_curl(served, pki):
    """curl's exit statuses: 60 for a certificate refused, 35 for a handshake that fails otherwise, 77 for a CA
    file that cannot be used."""
    ca = str(pki["ca"].pem)
    curl = shutil.which("curl")
    plain_as_tls = served["plain"].replace("http://", "https://")
    for args, status in (
        ([f"{served['good']}/hello.txt"], 60),
        (["--cacert", ca, f"{served['expired']}/hello.txt"], 60),
        (["--cacert", ca, f"{served['other']}/hello.txt"], 60),
        (["--cacert", ca, f"{plain_as_tls}/hello.txt"], 35),
        (["--cacert", "/nonexistent", f"{served['good']}/hello.txt"], 77),
    ):
        ours = sockhop_get(*args)
        assert ours.returncode == status, (args, ours)
        if curl is not None:
            assert subprocess.run([curl, "-s", *args], check=False, timeout=30).returncode == status, args


def test_resolve_keeps_sni_and_the_name_checked(served, pki):
    """--resolve: connect to the address given, but greet (SNI) and check the certificate as the URL's host."""
    ca = str(pki["ca"].pem)
    port = served["other"].rsplit(":", 1)[1]
    pinned = ["--cacert", ca, "--resolve", f"other.example:{port}:127.0.0.1"]
    result = sockhop_get("-v", *pinned, f"https://other.example:{port}/hello.txt")
    assert result.returncode == 0 and result.stdout == b"hello, world\n", result.stderr
    err = result.stderr.decode()
    assert "* SSL connection using TLSv1." in err and "* ALPN: server accepted h2" in err
    assert "* ALPN: offers h2,http/1.1" in err and "* Using HTTP/2" in err and "< HTTP/2 200" in err
    assert "subject: commonName=" in err and "SSL certificate verify ok." in err
    assert f"> Host: other.example:{port}\r\n" in err
    # Pinned to the right address under a name its certificate does not carry: refused as curl refuses it.
    wrong = sockhop_get(
        "--cacert", ca, "--resolve", f"wrong.example:{port}:127.0.0.1", f"https://wrong.example:{port}/"
    )
    assert "not for this name" in one_line_error(wrong) and wrong.returncode == 60
    curl = shutil.which("curl")
    if curl is not None:
        theirs = subprocess.run(
            [curl, "-s", *pinned, f"https://other.example:{port}/hello.txt"],
            capture_output=True,
            check=False,
            timeout=30,
        )
        assert theirs.stdout == result.stdout
