"""TLS as a sans-IO layer: in memory against the standard library's client, then through real sockets under every
model with Python's ssl and openssl s_client."""

from __future__ import annotations

import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings

import pytest

from sockhop.echo import EchoStream
from sockhop.engine.protocol import START_TLS, Reply, StreamProtocol
from sockhop.engine.tls import TLSLayer, name_matches, server_context
from tests.support import cannot_run, read_until_closed, require_tool, start_server
from tests.tls_certs import LocalCA

MODELS = ["iterative", "fork", "thread", "pool", "eventloop", "prefork"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = LocalCA(folder)
    return {
        "ca": ca,
        "localhost": ca.issue("localhost", ["localhost", "127.0.0.1", "::1"]),
        "other": ca.issue("other", ["other.test", "*.other.test"]),
        "expired": ca.issue("expired", ["localhost", "127.0.0.1"], expired=True),
    }


def client_context(pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["ca"].pem))
    return ctx


# -- in memory: the layer is a protocol like any other -------------------------------------------------------------
class Pair:
    """A TLS client (the standard library's SSLObject) joined to a TLSLayer in memory, no sockets."""

    def __init__(self, layer: TLSLayer, client_ctx: ssl.SSLContext, server_hostname: str = "localhost") -> None:
        self.layer = layer
        self.cin, self.cout = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client_ctx.wrap_bio(self.cin, self.cout, server_hostname=server_hostname)
        self.closed = False
        self.plain = b""

    def deliver(self, reply: Reply) -> None:
        while True:
            for piece in reply.send:
                self.cin.write(piece)
            self.closed = self.closed or reply.close
            if reply.then is None:
                return
            reply = reply.then()

    def handshake(self) -> None:
        self.deliver(self.layer.connection_made(("127.0.0.1", 5000), ("127.0.0.1", 443)))
        for _ in range(10):
            try:
                self.client.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.deliver(self.layer.data_received(self.cout.read()))
        out = self.cout.read()
        if out:  # TLS 1.3: the client's Finished may still be on its way
            self.deliver(self.layer.data_received(out))

    def send(self, data: bytes, byte_at_a_time: bool = False) -> None:
        self.client.write(data)
        wire = self.cout.read()
        chunks = [wire[i : i + 1] for i in range(len(wire))] if byte_at_a_time else [wire]
        for chunk in chunks:
            self.deliver(self.layer.data_received(chunk))

    def read(self) -> bytes:
        got = b""
        while True:
            try:
                got += self.client.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                return got


def test_echo_through_the_layer_in_memory(pki):
    ctx = server_context([(str(pki["localhost"].cert), str(pki["localhost"].key))])
    pair = Pair(TLSLayer(ctx, EchoStream()), client_context(pki))
    pair.handshake()
    assert pair.client.version() in ("TLSv1.2", "TLSv1.3")
    pair.send(b"hello, tls")
    assert pair.read() == b"hello, tls"
    pair.send(b"one record, byte by byte", byte_at_a_time=True)
    assert pair.read() == b"one record, byte by byte"


class Greeter(StreamProtocol):
    """Says hello on connect; "STARTTLS" switches to TLS; "x" defers work; anything else is echoed."""

    def __init__(self) -> None:
        self.after_tls: list[bytes] = []

    def connection_made(self, peer, local) -> Reply:
        return Reply((b"hello\n",))

    def data_received(self, data: bytes) -> Reply:
        if data.startswith(b"STARTTLS"):
            return Reply((b"go ahead\n", START_TLS))
        if data == b"x":
            return Reply((b"working\n",), then=lambda: Reply((b"done\n",)))
        return Reply((data,))


def test_implicit_tls_greets_only_after_the_handshake(pki):
    ctx = server_context([(str(pki["localhost"].cert), str(pki["localhost"].key))])
    layer = TLSLayer(ctx, Greeter())
    first = layer.connection_made(("127.0.0.1", 5000), ("127.0.0.1", 465))
    assert first.send == () and first.alarm  # nothing in plaintext, a handshake deadline set
    pair = Pair(layer, client_context(pki))
    pair.handshake()
    assert pair.read() == b"hello\n"
    pair.send(b"x")
    assert pair.read() == b"working\ndone\n"


def test_starttls_switches_after_the_reply_and_drops_injected_plaintext(pki):
    ctx = server_context([(str(pki["localhost"].cert), str(pki["localhost"].key))])
    inner = Greeter()
    layer = TLSLayer(ctx, inner, implicit=False)
    assert layer.connection_made(("127.0.0.1", 5000), ("127.0.0.1", 25)).send == (b"hello\n",)
    reply = layer.data_received(b"STARTTLS\r\n")
    assert reply.send == (b"go ahead\n",)  # plaintext, then the switch
    pair = Pair(layer, client_context(pki))
    pair.handshake()
    pair.send(b"secret")
    assert pair.read() == b"secret"


class PlainDeferred(StreamProtocol):
    """Answers in plaintext through deferred work (SMTP's 250 after the fsync), before any STARTTLS."""

    def data_received(self, data: bytes) -> Reply:
        return Reply((b"working\n",), then=lambda: Reply((b"done\n",)))


def test_deferred_work_before_starttls_still_sends_its_plaintext(pki):
    ctx = server_context([(str(pki["localhost"].cert), str(pki["localhost"].key))])
    layer = TLSLayer(ctx, PlainDeferred(), implicit=False)
    layer.connection_made(("127.0.0.1", 5000), ("127.0.0.1", 25))
    reply = layer.data_received(b"x")
    assert reply.send == (b"working\n",) and reply.then is not None
    assert reply.then().send == (b"done\n",)


def test_starttls_handshake_has_a_deadline_then_the_inner_alarm_returns(pki):
    class Timed(StreamProtocol):
        def data_received(self, data: bytes) -> Reply:
            return Reply((b"go ahead\n", START_TLS), alarm=300)

    ctx = server_context([(str(pki["localhost"].cert), str(pki["localhost"].key))])
    layer = TLSLayer(ctx, Timed(), implicit=False, handshake_timeout=7)
    layer.connection_made(("127.0.0.1", 5000), ("127.0.0.1", 25))
    assert layer.data_received(b"STARTTLS\r\n").alarm == 7
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context(pki).wrap_bio(incoming, outgoing, server_hostname="localhost")
    alarms = []
    for _ in range(10):
        try:
            client.do_handshake()
        except ssl.SSLWantReadError:
            pass
        out = outgoing.read()
        if not out:
            break
        reply = layer.data_received(out)
        alarms.append(reply.alarm)
        incoming.write(b"".join(reply.send))
    assert alarms[-1] == 300  # the handshake is done: the inner protocol's deadline again


def test_garbage_instead_of_a_handshake_closes(pki):
    ctx = server_context([(str(pki["localhost"].cert), str(pki["localhost"].key))])
    layer = TLSLayer(ctx, EchoStream())
    layer.connection_made(("127.0.0.1", 5000), ("127.0.0.1", 443))
    reply = layer.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.close


def test_name_matching():
    assert name_matches("*.other.test", "www.other.test")
    assert not name_matches("*.other.test", "other.test")
    assert not name_matches("*.other.test", "a.b.other.test")
    assert name_matches("Localhost", "localhost.")


# -- real sockets, every model ----------------------------------------------------------------------------------
def tls_server(pki, model: str, *extra: str):
    cert = pki["localhost"]
    return start_server(
        ["serve", "echo", "--model", model, "--workers", "2", "--listen-tls", "127.0.0.1:0", "--tls-cert",
         str(cert.cert), "--tls-key", str(cert.key), *extra]
    )  # fmt: skip


@pytest.fixture
def served():
    started = []
    yield started
    for proc in started:
        proc.stop()


@pytest.mark.parametrize("model", MODELS)
def test_tls_echo_under_every_model(pki, model, served):
    proc = tls_server(pki, model)
    served.append(proc)
    host, port = proc.address("echo", "tls")
    payload = os.urandom(1024 * 1024)
    with (
        socket.create_connection((host, port)) as raw,
        client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        tls.sendall(b"hello")
        assert tls.recv(5) == b"hello"
        tls.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += tls.recv(65536)
        assert got == payload
    # a client that speaks plaintext to the TLS port is closed at once, with not a byte in answer (OpenSSL sends no
    # alert to what is not a TLS record), and nobody else notices
    with socket.create_connection((host, port), timeout=5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        started = time.monotonic()
        assert read_until_closed(plain, 5) == b""
        assert time.monotonic() - started < 3  # not the 10 s handshake deadline: the server saw it was no TLS
    with (
        socket.create_connection((host, port)) as raw,
        client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"still here")
        assert tls.recv(10) == b"still here"
    assert "Traceback" not in proc.log()


def client_hello(pki) -> bytes:
    """A real ClientHello, as the standard library's client would send it, made in memory."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 100  # a handshake record, a few hundred bytes long
    return hello


@pytest.mark.parametrize("model", ["eventloop", "thread", "prefork"])
def test_a_trickled_handshake_is_dropped_at_the_deadline(pki, served, model):
    """Slowloris against the handshake: a real ClientHello, 4 bytes every 0.1 s (it would take seconds to arrive
    whole), keeps the connection busy, but the 1 s handshake deadline counts from the start and drops it -- without
    a ServerHello, which needs the whole ClientHello. Meanwhile another client's handshake succeeds."""
    proc = tls_server(pki, model, "--tls-handshake-timeout", "1")
    served.append(proc)
    host, port = proc.address("echo", "tls")
    hello = client_hello(pki)
    pieces = [hello[i : i + 4] for i in range(0, len(hello), 4)]
    assert len(pieces) * 0.1 > 5  # the trickle would outlast the deadline many times over
    dropped = False
    with socket.create_connection((host, port), timeout=5) as slow:
        started = time.monotonic()
        for i, piece in enumerate(pieces):  # bounded: the ClientHello's pieces, once
            try:
                slow.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            if i == 2:
                with (
                    socket.create_connection((host, port), timeout=5) as raw,
                    client_context(pki).wrap_socket(raw, server_hostname="localhost") as other,
                ):
                    other.sendall(b"meanwhile")
                    assert other.recv(9) == b"meanwhile"
            ready, _, _ = select.select([slow], [], [], 0.1)
            if ready:  # the server spoke (it may only close) or closed
                dropped = True
                break
        elapsed = time.monotonic() - started
        answer = read_until_closed(slow, 5)
    assert answer == b"", f"the server answered a ClientHello that took {elapsed:.1f} s to arrive"
    assert dropped, "the whole ClientHello went out and the connection was still open"
    assert 0.8 < elapsed < 3, elapsed  # the 1 s deadline, not the end of the trickle (> 5 s)
    assert "Traceback" not in proc.log()


def run_s_client(port: int, *args: str, servername: str = "localhost", ca=None) -> subprocess.CompletedProcess:
    require_tool("openssl")
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", servername, *args]
    if ca is not None:
        cmd += ["-CAfile", str(ca), "-verify_return_error"]
    return subprocess.run(cmd, input=b"ping\n", capture_output=True, timeout=20)


def test_openssl_versions_offered_and_refused(pki, served):
    proc = tls_server(pki, "eventloop")
    served.append(proc)
    _, port = proc.address("echo", "tls")
    ok13 = run_s_client(port, "-tls1_3", ca=pki["ca"].pem)
    assert ok13.returncode == 0 and b"TLSv1.3" in ok13.stdout and b"Verify return code: 0 (ok)" in ok13.stdout
    ok12 = run_s_client(port, "-tls1_2", ca=pki["ca"].pem)
    assert ok12.returncode == 0 and b"TLSv1.2" in ok12.stdout
    # TLS 1.1 is refused: a client that offers nothing else, with every cipher allowed, is told "protocol version"
    with pytest.raises(ssl.SSLError) as refused:
        tls11_handshake(port)
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value


def tls11_client() -> ssl.SSLContext:
    """A client that speaks TLS 1.1 only, at security level 0, so that OpenSSL's policy does not stop it first."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1 is deprecated: that is the point
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def tls11_handshake(port: int) -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        tls11_client().wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.version()


def test_the_tls11_client_can_speak_tls11(pki):
    """The control for the refusal above: against a local server that allows TLS 1.1, the same client gets TLS 1.1
    -- so its failure against sockhop is sockhop's refusal, not this OpenSSL's inability."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki["localhost"].cert, pki["localhost"].key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    result: list = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)

        def serve_one() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(5)
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    result.append(tls.version())
            except (OSError, ssl.SSLError) as exc:
                result.append(exc)

        thread = threading.Thread(target=serve_one)
        thread.start()
        try:
            version = tls11_handshake(listener.getsockname()[1])
        except ssl.SSLError as exc:
            version = None
            thread.join(10)
            cannot_run(f"this OpenSSL cannot speak TLS 1.1 even at SECLEVEL=0 ({exc}): the refusal is untested")
        thread.join(10)
    assert version == "TLSv1.1" and result == ["TLSv1.1"]


def test_sni_picks_the_certificate_for_the_name(pki, served):
    a, b = pki["localhost"], pki["other"]
    proc = start_server(
        ["serve", "echo", "--listen-tls", "127.0.0.1:0", "--tls-cert", str(a.cert), "--tls-key", str(a.key),
         "--tls-cert", str(b.cert), "--tls-key", str(b.key)]
    )  # fmt: skip
    served.append(proc)
    _, port = proc.address("echo", "tls")
    other = run_s_client(port, servername="www.other.test", ca=pki["ca"].pem)
    assert b"CN = other.test" in other.stdout or b"CN=other.test" in other.stdout, other.stdout[-2000:]
    default = run_s_client(port, servername="localhost", ca=pki["ca"].pem)
    assert b"CN = localhost" in default.stdout or b"CN=localhost" in default.stdout


def test_a_missing_certificate_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sockhop", "serve", "echo", "--listen-tls", "127.0.0.1:0", "--tls-cert",
         str(tmp_path / "nope.pem"), "--tls-key", str(tmp_path / "nope.key")],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "nope.pem" in result.stderr


# -- certificate files that cannot be used: one line each, naming the file and what is wrong, in words -------------
@pytest.fixture
def bad_files(tmp_path):
    """A good pair, a second key, and the ways a file can be wrong."""
    from cryptography.hazmat.primitives import serialization

    ca = LocalCA(tmp_path)
    good, other = ca.issue("good", ["localhost"]), ca.issue("other", ["localhost"])
    key = serialization.load_pem_private_key(good.key.read_bytes(), None)
    files = {"cert": good.cert, "key": good.key, "other-key": other.key}
    formats = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
    }
    for name, fmt in formats.items():
        files[f"{name}-encrypted"] = tmp_path / f"{name}-encrypted.key"
        files[f"{name}-encrypted"].write_bytes(
            key.private_bytes(serialization.Encoding.PEM, fmt, serialization.BestAvailableEncryption(b"secret"))
        )
    files["text"] = tmp_path / "notes.txt"
    files["text"].write_text("not a certificate\n")
    files["damaged"] = tmp_path / "damaged.pem"
    files["damaged"].write_text("-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----\n")
    files["missing"] = tmp_path / "missing.pem"
    return files


def serve_tls(cert, key) -> str:
    """`sockhop serve echo --listen-tls` with these files: its one line of error (it must not start)."""
    result = subprocess.run(
        [sys.executable, "-m", "sockhop", "serve", "echo", "--listen-tls", "127.0.0.1:0", "--tls-cert", str(cert),
         "--tls-key", str(key)],
        capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "PEM lib" not in line and "SSLError" not in line and "_ssl.c" not in line
    return line


@pytest.mark.parametrize(
    "cert, key, words",
    [
        ("cert", "other-key", ["the key does not match the certificate", "other.key", "good.pem"]),
        ("missing", "key", ["missing.pem", "no such file"]),
        ("cert", "missing", ["missing.pem", "no such file"]),
        ("text", "key", ["notes.txt", "not a PEM certificate"]),
        ("cert", "text", ["notes.txt", "not a PEM private key"]),
        ("key", "cert", ["good.key", "private key, not a certificate"]),
        ("cert", "pkcs8-encrypted", ["pkcs8-encrypted.key", "encrypted", "passphrase"]),
        ("cert", "traditional-encrypted", ["traditional-encrypted.key", "encrypted", "passphrase"]),
        ("damaged", "key", ["damaged.pem", "certificate is damaged"]),
    ],
)
def test_a_certificate_file_that_cannot_be_used_is_one_line(bad_files, cert, key, words):
    line = serve_tls(bad_files[cert], bad_files[key])
    for word in words:
        assert word in line, line


def test_server_context_raises_the_same_lines(bad_files):
    from sockhop.engine.tls import CertificateFileError, ServerCertificates

    with pytest.raises(CertificateFileError, match="the key does not match the certificate"):
        server_context([(str(bad_files["cert"]), str(bad_files["other-key"]))])
    with pytest.raises(CertificateFileError, match="encrypted"):  # and no passphrase prompt on the terminal
        ServerCertificates([(str(bad_files["cert"]), str(bad_files["pkcs8-encrypted"]))])
    assert server_context([(str(bad_files["cert"]), str(bad_files["key"]))])
