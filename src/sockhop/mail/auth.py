"""Who may submit mail: the password file, and the SASL mechanisms PLAIN and LOGIN (RFC 4616, RFC 4954) as SMTP
AUTH carries them.

The password file holds one user a line, ``name:scrypt$N$r$p$SALT$HASH[:address,address]`` (salt and hash in
base64), written by ``sockhop mail passwd FILE USER``: a salted scrypt from the standard library, never the
password itself. The addresses after the second colon are the senders the user may use beside their own name
(``name@domain`` for each served domain, or ``name`` itself when it is an address).

Verifying costs one scrypt (tens of milliseconds, and 16 MiB): the protocol runs it in ``Reply.then``, off the event
loop, and an unknown user costs the same as a wrong password, so timing does not tell which names exist.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from sockhop.errors import SockhopError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # the parameters RFC 7914 gives for interactive logins
SALT_BYTES = 16
HASH_BYTES = 32
SCHEME = "scrypt"


class PasswordFileError(SockhopError):
    """The password file cannot be read or has a line that is not ``name:hash[:addresses]``."""


def hash_password(password: str, *, salt: bytes | None = None, n: int = SCRYPT_N) -> str:
    """``scrypt$N$r$p$SALT$HASH`` for ``password``, with a fresh random salt."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = _scrypt(password.encode("utf-8"), salt, n, SCRYPT_R, SCRYPT_P)
    b64 = base64.b64encode
    return f"{SCHEME}${n}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=256 * r * (n + p + 2), dklen=HASH_BYTES)


def check_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches a ``scrypt$...`` hash (compared in constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        expected = base64.b64decode(digest, validate=True)
        got = _scrypt(password.encode("utf-8"), base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(got, expected)


@dataclass(frozen=True)
class User:
    name: str
    hash: str
    addresses: tuple[str, ...] = ()  # senders allowed beyond the user's own name


@functools.cache
def _dummy() -> str:
    """A hash to check an unknown user's password against: it costs a scrypt like a known one."""
    return hash_password("not a password", salt=b"\0" * SALT_BYTES)


class Users:
    """The users of a password file, read once at start-up. ``failures`` counts failed logins in this process."""

    def __init__(self, users: dict[str, User]) -> None:
        self.users = users
        self.failures = 0
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | os.PathLike) -> Users:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PasswordFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        return cls(parse_password_file(text, str(path)))

    def verify(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else None (counted)."""
        user = self.users.get(name.lower())
        ok = check_password(user.hash if user else _dummy(), password) and user is not None
        if not ok:
            with self._lock:
                self.failures += 1
        return user if ok else None

    def may_send_as(self, user: User, sender: str, domains: frozenset[str]) -> bool:
        """Whether ``user`` may use ``sender`` as the envelope sender: their own name (with each served domain when
        the name has no @) or one of the addresses listed for them."""
        sender = sender.lower()
        own = {user.name} if "@" in user.name else {f"{user.name}@{domain}" for domain in domains}
        return sender in own or sender in (a.lower() for a in user.addresses)


def parse_password_file(text: str, where: str = "password file") -> dict[str, User]:
    """The users of a password file's text; blank lines and ``#`` comments are skipped."""
    users: dict[str, User] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, rest = line.partition(":")
        digest, _, addresses = rest.partition(":")
        if not sep or not name or not digest.startswith(SCHEME + "$") or digest.count("$") != 5:
            raise PasswordFileError(f"{where}:{number}: expected name:scrypt$...[:addresses]")
        listed = tuple(a.strip() for a in addresses.split(",") if a.strip())
        users[name.lower()] = User(name.lower(), digest, listed)
    return users


def set_password(path: str | os.PathLike, name: str, password: str, addresses: tuple[str, ...] | None = None) -> None:
    """Add ``name`` to the password file or change their password (and addresses, when given), atomically: the new
    file is written beside the old one, made durable and renamed over it, readable by its owner only."""
    if not name or any(ch in name for ch in ":\n\r \t") or not name.isprintable():
        raise PasswordFileError(f"bad user name {name!r}: no colons, spaces or control characters")
    path = Path(path)
    try:
        old = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise PasswordFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    users = parse_password_file(old, str(path))
    previous = users.get(name.lower())
    kept = addresses if addresses is not None else (previous.addresses if previous else ())
    users[name.lower()] = User(name.lower(), hash_password(password), kept)
    lines = [f"{u.name}:{u.hash}" + (":" + ",".join(u.addresses) if u.addresses else "") for u in users.values()]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PasswordFileError(f"cannot write {path}: {exc.strerror}") from None


# -- SASL as SMTP AUTH carries it -----------------------------------------------------------------------------------
MECHANISMS = ("PLAIN", "LOGIN")
LOGIN_PROMPTS = (base64.b64encode(b"Username:").decode(), base64.b64encode(b"Password:").decode())


class SASLError(ValueError):
    """The client's response is not what the mechanism expects (bad base64, wrong shape)."""


def decode_response(line: str) -> bytes:
    """A client's base64 response (``=`` alone: empty, RFC 4954). Raises SASLError."""
    line = line.strip()
    if line == "=":
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise SASLError("invalid base64") from None


def parse_plain(response: bytes) -> tuple[str, str]:
    """PLAIN's ``authzid NUL authcid NUL passwd`` -> (user, password). An authzid other than the user (acting as
    someone else) is refused. Raises SASLError."""
    parts = response.split(b"\0")
    if len(parts) != 3:
        raise SASLError("PLAIN expects authzid NUL authcid NUL password")
    try:
        authzid, authcid, password = (part.decode("utf-8") for part in parts)
    except UnicodeDecodeError:
        raise SASLError("PLAIN credentials are not UTF-8") from None
    if not authcid or (authzid and authzid.lower() != authcid.lower()):
        raise SASLError("PLAIN needs a user, and no authorization identity other than it")
    return authcid, password


class Exchange:
    """One AUTH exchange, sans-IO: ``start`` with the AUTH arguments, then ``step`` with each line the client sends;
    each returns ("challenge", TEXT) for a 334 or ("credentials", (user, password)) once it has them. Raises
    SASLError on a malformed response."""

    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism.upper()
        self.user: str | None = None

    def start(self, initial: str | None) -> tuple[str, object]:
        if initial is None:
            return ("challenge", "" if self.mechanism == "PLAIN" else LOGIN_PROMPTS[0])
        return self.step(initial)

    def step(self, line: str) -> tuple[str, object]:
        data = decode_response(line)
        if self.mechanism == "PLAIN":
            return ("credentials", parse_plain(data))
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SASLError("LOGIN credentials are not UTF-8") from None
        if self.user is None:
            if not text:
                raise SASLError("LOGIN needs a user name")
            self.user = text
            return ("challenge", LOGIN_PROMPTS[1])
        return ("credentials", (self.user, text))
