"""Client-side TLS shared by every sockhop client (talk, get, send, resolve): verified by default, and a
certificate problem told in one line that names what failed."""

from __future__ import annotations

import ssl
import sys


def client_context(cacert: str | None = None, *, insecure: bool = False) -> ssl.SSLContext:
    """A client TLS context: the system's trust store (or ``cacert``), host names checked, TLS 1.2 at least."""
    context = ssl.create_default_context(cafile=cacert)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        print("sockhop: warning: not verifying the server's certificate (-k)", file=sys.stderr)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
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
