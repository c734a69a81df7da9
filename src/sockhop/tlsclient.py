"""Client-side TLS shared by every sockhop client (talk, get, send, resolve): verified by default, and a
certificate problem told in one line that names what failed."""

from __future__ import annotations

import ssl
import sys
from collections.abc import Sequence

from sockhop.errors import UsageError


class CACertError(UsageError):
    """The CA certificates given cannot be used."""


def client_context(
    cacert: str | None = None, *, insecure: bool = False, verify: bool = True, alpn: Sequence[str] = ()
) -> ssl.SSLContext:
    """A client TLS context: the system's trust store (or ``cacert``), host names checked, TLS 1.2 at least.

    ``insecure`` (the user's ``-k``) skips the check and says so on standard error; ``verify=False`` skips it
    silently, for callers whose policy is to encrypt without authenticating (mail's opportunistic STARTTLS, as
    Postfix's ``may``). ``alpn`` is offered in the handshake. A ``cacert`` that cannot be read is a
    :class:`CACertError` (one line), not an OSError.
    """
    if not verify or insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no trust store to load: nothing will be checked
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if insecure:
            print("sockhop: warning: not verifying the server's certificate (-k)", file=sys.stderr)
    else:
        try:
            context = ssl.create_default_context(cafile=cacert)
        except FileNotFoundError:
            raise CACertError(f"cannot use --cacert {cacert}: no such file") from None
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise CACertError(f"cannot use --cacert {cacert}: {reason}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def describe_certificate_error(exc: ssl.SSLCertVerificationError) -> str:
    """One line naming what failed: expired, wrong name, untrusted."""
    message = exc.verify_message or str(exc)
    if exc.verify_code == 10:
        return "the server's certificate has expired"
    if exc.verify_code == 62 or "mismatch" in message.lower():
        return f"the server's certificate is not for this name ({message})"
    if exc.verify_code in (18, 19, 20, 21):
        return f"the server's certificate is not trusted ({message}): give --cacert FILE, or -k to skip the check"
    return f"the server's certificate was refused: {message}"
