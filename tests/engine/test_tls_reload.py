"""TLS certificates re-read on SIGHUP without dropping connections, and session resumption (tickets) under the
models, prefork included (the context, and so the ticket keys, is made before the workers fork)."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest

from sockhop.engine.tls import ServerCertificates
from tests.support import start_server
from tests.tls_certs import LocalCA

MODELS = ["iterative", "fork", "thread", "pool", "eventloop", "prefork"]


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("pki"))


def der(path: Path) -> bytes:
    """The first certificate of a PEM file, as the server sends it."""
    text = path.read_text()
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(text[:end])


def echo_server(model: str, cert: Path, key: Path, *extra: str):
    return start_server(
        ["-v", "serve", "echo", "--model", model, "--workers", "2", "--listen-tls", "127.0.0.1:0",
         "--tls-cert", str(cert), "--tls-key", str(key), *extra]
    )  # fmt: skip


def connect(ca: LocalCA, port: int, session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
    context = connect.contexts.setdefault(str(ca.pem), ssl.create_default_context(cafile=str(ca.pem)))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost", session=session)


connect.contexts = {}  # type: ignore[attr-defined]


def echo(tls: ssl.SSLSocket, data: bytes) -> bytes:
    tls.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = tls.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def wait_for_log(server, text: str, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while server.log().count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} x {text!r} not logged: {server.log()}")
        time.sleep(0.05)


def processes(model: str) -> int:
    """How many processes reload on SIGHUP: a prefork master and its 2 workers, else the one server."""
    return 3 if model == "prefork" else 1


@pytest.mark.parametrize("model", MODELS)
def test_sighup_rereads_certificates_and_keeps_connections(ca, model, tmp_path):
    first = ca.issue(f"first-{model}", ["localhost", "127.0.0.1"])
    second = ca.issue(f"second-{model}", ["localhost", "127.0.0.1"])
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    server = echo_server(model, cert, key)
    try:
        _, port = server.address("echo", "tls")
        old = connect(ca, port)
        assert old.getpeercert(binary_form=True) == der(first.cert)
        assert echo(old, b"before") == b"before"
        if model == "iterative":  # one connection at a time: the old one is finished before the new one
            old.close()
        shutil.copy(second.cert, cert)
        shutil.copy(second.key, key)
        server.proc.send_signal(signal.SIGHUP)
        wait_for_log(server, "TLS certificates reloaded", processes(model))
        for _ in range(3):  # under prefork, whichever worker takes it
            with connect(ca, port) as new:
                assert new.getpeercert(binary_form=True) == der(second.cert)
                assert echo(new, b"after") == b"after"
        if model != "iterative":
            assert echo(old, b"old one still here") == b"old one still here"
            old.close()
        # a broken file: the old (second) certificate stays, and one line says why
        cert.write_text("not a certificate\n")
        server.proc.send_signal(signal.SIGHUP)
        wait_for_log(server, "TLS certificates not reloaded", processes(model))
        with connect(ca, port) as new:
            assert new.getpeercert(binary_form=True) == der(second.cert)
            assert echo(new, b"kept") == b"kept"
        assert server.stop() == 0
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_reload_in_memory_keeps_the_old_context_on_a_bad_file(ca, tmp_path):
    pair = ca.issue("memory", ["localhost"])
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    shutil.copy(pair.cert, cert)
    shutil.copy(pair.key, key)
    certificates = ServerCertificates([(str(cert), str(key))], alpn=("http/1.1",))
    before = certificates.context
    key.write_text("garbage")
    certificates.reload()
    assert certificates.context is before
    shutil.copy(pair.key, key)
    certificates.reload()
    assert certificates.context is not before


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
@pytest.mark.parametrize("model", ["eventloop", "prefork", "thread"])
def test_sessions_resume_under_the_models(ca, model, version, tmp_path):
    """A session from one connection resumes on the next (a ticket, under TLS 1.2 and 1.3); under prefork on
    whichever worker takes the connection, until both workers have resumed one."""
    pair = ca.issue(f"resume-{model}-{version}", ["localhost", "127.0.0.1"])
    server = start_server(
        ["-vv", "serve", "echo", "--model", model, "--workers", "2", "--listen-tls", "127.0.0.1:0",
         "--tls-cert", str(pair.cert), "--tls-key", str(pair.key)]
    )  # fmt: skip
    try:
        _, port = server.address("echo", "tls")
        context = ssl.create_default_context(cafile=str(ca.pem))
        context.maximum_version = getattr(ssl.TLSVersion, version)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with context.wrap_socket(raw, server_hostname="localhost") as first:
            assert echo(first, b"ticket please") == b"ticket please"  # TLS 1.3 tickets come after the handshake
            session = first.session
            assert not first.session_reused
        assert session is not None and session.has_ticket
        for _ in range(30):
            # Several connections at once, so that both prefork workers are woken to accept (one at a time, the
            # kernel may hand every connection to the same worker).
            raws = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
            for raw in raws:
                with context.wrap_socket(raw, server_hostname="localhost", session=session) as again:
                    assert again.session_reused, f"session not resumed: {server.log()}"
                    assert echo(again, b"resumed") == b"resumed"
            resumed_by = {line.split("]")[0] for line in server.log().splitlines() if "(session resumed)" in line}
            if model != "prefork" or len(resumed_by) >= 2:
                break
        else:
            pytest.fail(f"the resumed connections never reached both prefork workers: {server.log()}")
    finally:
        server.stop()
