"""TLS as one more sans-IO layer: a StreamProtocol that wraps another, so every model gets TLS unchanged.

The standard library's ``ssl.MemoryBIO`` + ``SSLObject`` do TLS without a socket: ciphertext from the engine is
written into one BIO, plaintext for the inner protocol is read out of the SSLObject, and the inner protocol's
replies are encrypted into the other BIO, whose bytes go back to the engine as this layer's Reply. Nothing here
blocks, so the event loop never waits on a handshake; the blocking models drive it the same way.

Two ways in:

* implicit TLS (HTTPS, SMTPS, DNS over TLS): the handshake starts with the connection, and the inner protocol's
  ``connection_made`` is called only once it is done -- an SMTPS greeting is sent encrypted;
* STARTTLS: the layer starts in plaintext, passing bytes straight through, until the inner protocol puts
  :data:`START_TLS` in a reply's ``send``: what comes before it goes out in plaintext, and from then on everything
  is TLS. Plaintext the client sent after its STARTTLS command is discarded here (RFC 3207: no command injection).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

from sockhop.engine.protocol import (
    START_TLS,
    WHEN_DRAINED,
    Address,
    FileRegion,
    Reply,
    StreamProtocol,
    as_reply,
    then_mapped,
)
from sockhop.engine.shared import close_region, peer_name
from sockhop.errors import SockhopError

log = logging.getLogger("sockhop.tls")


class CertificateFileError(SockhopError):
    """A --tls-cert or --tls-key file cannot be used: the line says which, and what is wrong with it."""


READ_SIZE = 64 * 1024
HANDSHAKE_TIMEOUT = 10.0  # seconds a client gets to finish its handshake, however it trickles (Reply.alarm)


class TLSLayer(StreamProtocol):
    """One connection's TLS, around one inner protocol."""

    PLAIN, HANDSHAKE, OPEN, CLOSED = range(4)

    def __init__(
        self,
        context: ssl.SSLContext,
        inner: StreamProtocol,
        *,
        implicit: bool = True,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        client_side: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        self.client_side = client_side  # an outbound connection (engine/reactor.py): we say ClientHello first
        self.server_hostname = server_hostname  # SNI and the name the certificate is checked against
        self.early: list = []  # a client's bytes given before its handshake is done, sealed once it is
        self.context = context
        self.inner = inner
        if not client_side:  # what it wraps knows it is carried by TLS (a proxy says X-Forwarded-Proto: https)
            layer: object = inner
            while layer is not None:
                try:
                    layer.secure = True  # type: ignore[attr-defined]
                except AttributeError:
                    break
                layer = getattr(layer, "inner", None)
        self.implicit = implicit
        self.handshake_timeout = handshake_timeout
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls: ssl.SSLObject | None = None
        self.state = self.PLAIN
        self.peer: Address = None
        self.local: Address = None
        self.waiting = False  # the inner protocol's deferred work runs: feed it nothing meanwhile
        self.resume_alarm: float | None = None  # STARTTLS: the inner protocol's alarm, re-armed after the handshake
        self.drain = False  # the inner protocol sent WHEN_DRAINED: the next ciphertext handed out carries it
        if client_side and implicit:
            self._begin()  # TLS from the first byte: what is sent before the connection is up waits for it

    @classmethod
    def factory(
        cls,
        context: ssl.SSLContext | ServerCertificates,
        inner: Callable[[], StreamProtocol],
        *,
        implicit: bool = True,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> Callable[[], TLSLayer]:
        """A Listener factory: each connection gets its own layer around a new inner protocol. Given
        :class:`ServerCertificates`, each new connection takes its context as it is now (SIGHUP may have replaced
        it); connections already open keep the one they began with."""
        if isinstance(context, ServerCertificates):
            certificates = context
            return lambda: cls(certificates.context, inner(), implicit=implicit, handshake_timeout=handshake_timeout)
        return lambda: cls(context, inner(), implicit=implicit, handshake_timeout=handshake_timeout)

    @property
    def version(self) -> str | None:
        return self.tls.version() if self.tls is not None and self.state == self.OPEN else None

    # -- the engine's events -------------------------------------------------------------------------------------
    def connection_made(self, peer: Address, local: Address) -> Reply:
        self.peer, self.local = peer, local
        if self.client_side and self.implicit:
            return self._handshake()._replace(alarm=self.handshake_timeout)  # our ClientHello
        if self.implicit:
            self._begin()
            return Reply(alarm=self.handshake_timeout)  # the client speaks first (ClientHello)
        return self._outer(self.inner.connection_made(peer, local))

    def data_received(self, data: bytes) -> Reply:
        if self.state == self.PLAIN:
            return self._outer(as_reply(self.inner.data_received(data)))
        if self.state == self.CLOSED:
            return Reply()
        self.incoming.write(data)
        if self.state == self.HANDSHAKE:
            return self._handshake()
        return self._sealed(self._read_plaintext())

    def eof_received(self) -> Reply:
        if self.state in (self.PLAIN, self.OPEN):
            return self._outer(self.inner.eof_received(), close=True)
        return Reply(close=True)

    def stop_requested(self) -> Reply:
        if self.state == self.HANDSHAKE:
            return Reply(close=True)
        return self._outer(self.inner.stop_requested())

    def timed_out(self) -> Reply:
        if self.state == self.HANDSHAKE:
            log.info("%s: TLS handshake timed out", peer_name(self.peer))
            return Reply(close=True)
        return self._outer(self.inner.timed_out(), close=True)

    def output_drained(self) -> Reply:
        if self.state != self.OPEN:
            return Reply()
        return self._outer(self.inner.output_drained())

    def connection_lost(self) -> None:
        self.inner.connection_lost()

    @property
    def wakeable(self) -> bool:  # type: ignore[override]
        return self.inner.wakeable

    def attach(self, handle) -> None:
        self.inner.attach(handle.mapped(self._outer, self.inner))

    def woken(self) -> Reply:
        return self._outer(self.inner.woken())

    # -- inside ----------------------------------------------------------------------------------------------------
    def _begin(self) -> None:
        self.tls = self.context.wrap_bio(
            self.incoming, self.outgoing, server_side=not self.client_side, server_hostname=self.server_hostname
        )
        self.state = self.HANDSHAKE

    def _handshake(self) -> Reply:
        assert self.tls is not None
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return Reply(self._ciphertext())
        except (ssl.SSLError, ValueError) as exc:
            return self._sealed(self._fail(exc))
        self.state = self.OPEN
        if self.early:
            early, self.early = tuple(self.early), []
            self._seal(early)
        resumed = " (session resumed)" if self.tls.session_reused else ""
        log.debug("%s: %s %s%s", peer_name(self.peer), self.tls.version(), self.tls.cipher()[0], resumed)
        if self.implicit or self.client_side:
            # implicit TLS: the conversation begins now; a client's STARTTLS: it begins again, encrypted (RFC 3207:
            # the client says EHLO again), so the inner protocol is told the connection is made once more
            first = self._outer(self.inner.connection_made(self.peer, self.local), flush=False)
        else:
            # STARTTLS: the conversation goes on where it was (the inner protocol reset itself), under its own
            # deadline again
            first = Reply(alarm=self.resume_alarm)
        alarm = 0.0 if first.alarm is None else first.alarm  # the handshake's deadline is over
        if first.close or first.then is not None:
            return self._sealed(first._replace(alarm=alarm))
        rest = self._read_plaintext()
        return self._sealed(rest._replace(alarm=alarm if rest.alarm is None else rest.alarm))

    def _read_plaintext(self) -> Reply:
        """Feed decrypted data to the inner protocol until no whole record is left, deferred work is asked for,
        or the conversation ends. What the inner protocol answers is encrypted into the outgoing BIO."""
        assert self.tls is not None
        alarm = None
        while not self.waiting:
            try:
                plain = self.tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # the client's close_notify: its end of the stream
                self._outer(self.inner.eof_received(), close=True, flush=False)
                return Reply((), True, None, alarm)
            except (ssl.SSLError, ValueError) as exc:
                return self._fail(exc)
            if not plain:
                break
            reply = self._outer(as_reply(self.inner.data_received(plain)), flush=False)
            if reply.alarm is not None:
                alarm = reply.alarm
            if reply.close or reply.then is not None:
                return Reply((), reply.close, reply.then, alarm)
        return Reply((), False, None, alarm)

    def _outer(self, reply: Reply, *, close: bool = False, flush: bool = True) -> Reply:
        """The engine's view of an inner reply: encrypted once TLS is on, STARTTLS carried out, deferred work
        wrapped so that what it answers is encrypted too and reading resumes after it."""
        pieces: tuple = ()
        send = reply.send
        alarm = reply.alarm
        if send and send[-1] is START_TLS and self.state == self.PLAIN:
            pieces = send[:-1]  # the last plaintext ("220 Ready to start TLS"), then the switch
            self._begin()
            if self.client_side:  # a client's STARTTLS: our ClientHello goes out now
                try:
                    self.tls.do_handshake()
                except ssl.SSLWantReadError:
                    pass
            self.resume_alarm, alarm = alarm, self.handshake_timeout  # a STARTTLS handshake has its deadline too
        elif self.state == self.PLAIN:
            pieces = send
        else:
            self._seal(send)
        closing = close or reply.close
        if closing and self.state == self.OPEN:
            self._close_notify()
        then = None
        if reply.then is not None:
            self.waiting = True

            def resumed(inner_after: Reply) -> Reply:
                self.waiting = False
                after = self._outer(inner_after, flush=False)
                if self.state == self.PLAIN:
                    return after  # still plaintext (STARTTLS not yet said): what it sends is in after.send
                if after.close or after.then is not None or self.state != self.OPEN:
                    return self._sealed(after)
                more = self._read_plaintext()
                return self._sealed(more._replace(alarm=after.alarm if more.alarm is None else more.alarm))

            then = then_mapped(reply.then, resumed)
        if flush and self.state != self.PLAIN:
            pieces += self._ciphertext()
        return Reply(pieces, closing, then, alarm)

    def _seal(self, pieces: tuple) -> None:
        """Encrypt pieces into the outgoing BIO. A file region cannot go by sendfile through TLS: its bytes are
        read and encrypted."""
        if self.state != self.OPEN:
            if self.client_side and self.state == self.HANDSHAKE:
                self.early.extend(pieces)  # a forwarder's request may come before the upstream's handshake ends
            return  # handshake unfinished or connection closing: nothing may be written
        assert self.tls is not None
        for piece in pieces:
            if piece is WHEN_DRAINED:
                self.drain = True
                continue
            if isinstance(piece, FileRegion):
                try:
                    data = piece.read()
                finally:
                    close_region(piece)
            else:
                data = piece
            if data:
                self.tls.write(data)

    def _close_notify(self) -> None:
        assert self.tls is not None
        try:
            self.tls.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError, ValueError):
            pass  # our close_notify is in the BIO; the client's is not awaited
        self.state = self.CLOSED

    def _ciphertext(self) -> tuple[bytes, ...]:
        data = self.outgoing.read()
        pieces = (data,) if data else ()
        if self.drain:  # the inner protocol waits to hear that its burst has gone: so it is, once this has
            self.drain = False
            pieces += (WHEN_DRAINED,)
        return pieces

    def _sealed(self, reply: Reply) -> Reply:
        """A reply whose pieces went into the BIO: send the BIO's bytes."""
        return Reply(self._ciphertext(), reply.close, reply.then, reply.alarm)

    def _fail(self, exc: Exception) -> Reply:
        reason = getattr(exc, "reason", None) or str(exc)
        log.info("%s: TLS failed: %s", peer_name(self.peer), reason)
        self.state = self.CLOSED
        return Reply(close=True)  # the caller sends what is in the BIO: an alert, if OpenSSL wrote one


def server_context(
    certs: list[tuple[str, str]], *, alpn: tuple[str, ...] = (), names: list[list[str]] | None = None
) -> ssl.SSLContext:
    """A server context: TLS 1.2 and 1.3 only, OpenSSL's modern defaults, the given ALPN protocols, and with
    several certificates, SNI choosing the one whose names match the client's server name (the first otherwise).

    ``certs`` is [(certfile, keyfile), ...]; ``names`` the names each one serves (read from the certificate's
    subjectAltName when not given). A file that cannot be used raises CertificateFileError, saying which and why.
    """

    def one(cert: str, key: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
        ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")  # TLS 1.2 with forward secrecy and AEAD only
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        load_pair(ctx, cert, key)
        return ctx

    if not certs:
        raise SockhopError("TLS needs a certificate: give --tls-cert FILE and --tls-key FILE")
    contexts = [one(cert, key) for cert, key in certs]
    main = contexts[0]
    if len(contexts) > 1:
        served = names or [certificate_names(cert) for cert, _ in certs]

        def pick(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            if server_name:
                for ctx, patterns in zip(contexts, served, strict=True):
                    if any(name_matches(p, server_name) for p in patterns):
                        sslobj.context = ctx
                        return

        main.sni_callback = pick  # type: ignore[assignment]
    return main


def _no_passphrase() -> bytes:
    raise ValueError("encrypted")  # never OpenSSL's prompt on the terminal: a server has no one to ask


def load_pair(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    """Load a certificate chain and its key into ``ctx``; every way it fails is one line naming the file and what
    is wrong with it, in words (never OpenSSL's "PEM lib"). Raises CertificateFileError."""
    cert_text, key_text = _read(cert, "certificate"), _read(key, "key")
    if b"-----BEGIN CERTIFICATE-----" not in cert_text:
        if b"PRIVATE KEY-----" in cert_text:
            raise CertificateFileError(
                f"{cert} holds a private key, not a certificate: were --tls-cert and --tls-key swapped?"
            )
        raise CertificateFileError(f"{cert} is not a PEM certificate: it has no -----BEGIN CERTIFICATE----- block")
    if b"ENCRYPTED PRIVATE KEY-----" in key_text or b"Proc-Type: 4,ENCRYPTED" in key_text:
        raise CertificateFileError(_encrypted(key))
    if b"PRIVATE KEY-----" not in key_text:
        if b"-----BEGIN CERTIFICATE-----" in key_text:
            raise CertificateFileError(f"{key} holds a certificate, not a private key: give the key as --tls-key")
        raise CertificateFileError(f"{key} is not a PEM private key: it has no -----BEGIN PRIVATE KEY----- block")
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except ValueError:
        raise CertificateFileError(_encrypted(key)) from None
    except ssl.SSLError as exc:  # before OSError: SSLError is one
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise CertificateFileError(
                f"the key does not match the certificate: {key} is not the key of {cert}"
            ) from None
        raise CertificateFileError(_damaged(cert, cert_text, key, key_text)) from None
    except OSError as exc:
        raise CertificateFileError(f"cannot read {cert} or {key}: {exc.strerror or exc}") from None


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise CertificateFileError(f"cannot read {path}: no such file") from None
    except IsADirectoryError:
        raise CertificateFileError(f"cannot read {path}: it is a folder; give the {what} file") from None
    except OSError as exc:
        raise CertificateFileError(f"cannot read {path}: {exc.strerror or exc}") from None


def _encrypted(key: str) -> str:
    return (
        f"the key {key} is encrypted, and a server has no one to ask for its passphrase: "
        f"decrypt it once (openssl pkey -in {key} -out plain.key)"
    )


def _damaged(cert: str, cert_text: bytes, key: str, key_text: bytes) -> str:
    """Which of the two OpenSSL could not read, found with cryptography (only on this path, so start-up does not
    pay for it), and what is wrong with it."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        x509.load_pem_x509_certificates(cert_text)
    except ValueError:
        return f"{cert}: the certificate is damaged (its PEM block does not decode to a certificate)"

    try:
        load_pem_private_key(key_text, None)
    except TypeError:
        return _encrypted(key)
    except (ValueError, UnsupportedAlgorithm):
        return f"{key}: the private key is damaged or of a kind TLS cannot use"
    return f"cannot use certificate {cert} with key {key}: OpenSSL refused them"


class ServerCertificates:
    """A listener's certificates and the server context made from them, re-read on SIGHUP (``reload`` is a
    Listener.reload hook): new handshakes use the new context, open connections keep theirs. A file that does not
    load leaves the old context in place, and says why in one log line."""

    def __init__(
        self, certs: list[tuple[str, str]], *, alpn: tuple[str, ...] = (), names: list[list[str]] | None = None
    ) -> None:
        self.certs, self.alpn, self.names = certs, alpn, names
        self.context = server_context(certs, alpn=alpn, names=names)

    def reload(self) -> None:
        try:
            context = server_context(self.certs, alpn=self.alpn, names=self.names)
        except (SockhopError, ValueError, OSError) as exc:
            log.error("TLS certificates not reloaded, the old ones stay in use: %s", exc)
            return
        self.context = context
        log.info("TLS certificates reloaded from %s", ", ".join(cert for cert, _ in self.certs))


def name_matches(pattern: str, name: str) -> bool:
    """DNS name matching as certificates mean it: exact, or one leftmost wildcard label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def certificate_names(certfile: str) -> list[str]:
    """The DNS names (subjectAltName) a PEM certificate is for."""
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - cryptography is a dependency
        return []
    with open(certfile, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)
