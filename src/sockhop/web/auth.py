"""HTTP Basic authentication (RFC 7617) from an htpasswd file, as nginx's ``auth_basic_user_file``: bcrypt only.

``htpasswd -B`` writes bcrypt (``$2y$``), checked with the ``bcrypt`` package. Apache's other formats -- MD5
(``$apr1$``), SHA-1 (``{SHA}``), crypt and plain text -- are weak or unsalted, and are refused when the file is read,
with one line naming the line and the user. A bcrypt check costs milliseconds by design, so a credential that passed
is remembered (by the Authorization header's exact value, until the file changes): a browser sends the same header
on every request. The file is read again when it changes (looked at once a second).
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Mapping
from http import HTTPStatus

from sockhop.errors import SockhopError
from sockhop.web.response import Response, error_response

#: Apache's other formats, by their prefix: refused, with what they are.
_REFUSED = (("$apr1$", "Apache MD5 ($apr1$)"), ("{SHA}", "SHA-1 ({SHA})"), ("$1$", "MD5-crypt ($1$)"),
            ("$5$", "SHA-256-crypt ($5$)"), ("$6$", "SHA-512-crypt ($6$)"))  # fmt: skip
_BCRYPT = ("$2y$", "$2b$", "$2a$")

#: Credentials remembered at most (then the memory starts over).
REMEMBERED = 1024


class HtpasswdError(SockhopError):
    """An htpasswd file that cannot be used."""


def read_htpasswd(path: str) -> dict[str, bytes]:
    """user -> bcrypt hash; every other format is one line of error naming the line and the user."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise HtpasswdError(f"cannot read the htpasswd file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        hashed = hashed.split(":", 1)[0]  # nginx allows a comment field after the hash
        if not sep or not user or not hashed:
            raise HtpasswdError(f"{path}:{number}: not USER:HASH")
        if not hashed.startswith(_BCRYPT):
            kind = next((name for prefix, name in _REFUSED if hashed.startswith(prefix)), "crypt or plain text")
            raise HtpasswdError(
                f"{path}:{number}: user {user}: {kind} is not accepted, only bcrypt (htpasswd -B {path} {user})"
            )
        users[user] = hashed.encode()
    return users


class BasicAuth:
    """Who may see a site: the users of one htpasswd file, under one realm."""

    def __init__(self, path: str, realm: str = "Restricted") -> None:
        import bcrypt  # noqa: F401 - a missing package is told at startup, not at the first request

        self.path = path
        self.realm = realm.replace('"', "'")
        self.users = read_htpasswd(path)
        self.stamp = self._stamp()
        self.checked = 0
        self.passed: dict[str, str] = {}  # Authorization value -> user, for credentials checked already
        self.lock = threading.Lock()

    def _stamp(self) -> tuple[int, int, int]:
        try:
            info = os.stat(self.path)
        except OSError:
            return (0, 0, 0)
        return (info.st_mtime_ns, info.st_ino, info.st_size)

    def _fresh(self, now: float) -> None:
        """Read the file again if it changed (looked at once a second); a broken new file keeps the old users."""
        second = int(now)
        if second == self.checked:
            return
        self.checked = second
        stamp = self._stamp()
        if stamp != self.stamp:
            self.stamp = stamp
            try:
                users = read_htpasswd(self.path)
            except HtpasswdError:
                return
            with self.lock:
                self.users, self.passed = users, {}

    def refused(self, fields: Mapping[str, str], now: float, head: bool = False) -> Response | None:
        """None if the request carries a valid user and password; else the 401 that asks for them."""
        self._fresh(now)
        value = fields.get("authorization")
        if value is not None:
            if value in self.passed:
                return None
            if self._check(value):
                with self.lock:
                    if len(self.passed) >= REMEMBERED:
                        self.passed.clear()
                    self.passed[value] = ""
                return None
        answer = error_response(HTTPStatus.UNAUTHORIZED, head=head)
        answer.headers.append(("WWW-Authenticate", f'Basic realm="{self.realm}", charset="UTF-8"'))
        return answer

    def _check(self, value: str) -> bool:
        import bcrypt

        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        hashed = self.users.get(user)
        if not sep or hashed is None:
            return False
        try:
            return bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return False
