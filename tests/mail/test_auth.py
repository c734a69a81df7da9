"""SMTP AUTH (RFC 4954) and submission (RFC 6409): the password file, the SASL exchange as a sans-IO state machine
(and hypothesis feeding it anything), failed logins slowed by the protocol's alarm, the sender a login may use,
and relaying only for a login or a relay network."""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import os
import stat
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockhop.mail.auth import (
    Exchange,
    PasswordFileError,
    SASLError,
    Users,
    check_password,
    parse_password_file,
    set_password,
)
from sockhop.mail.codes import Code
from tests.mail.helpers import POLICY, Conversation, MemoryStore

EHLO = b"EHLO client.test\r\n"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


@pytest.fixture(scope="module")
def users(tmp_path_factory):
    path = tmp_path_factory.mktemp("users") / "passwd"
    set_password(path, "alice", "wonderland")
    set_password(path, "bob@elsewhere.test", "builder", ("bob@example.test",))
    return Users.load(path)


DELAY = 0.05


class RelayingStore(MemoryStore):
    relays = True


def conversation(users, *, tls=True, store=None, **policy):
    policy = dataclasses.replace(POLICY, users=users, auth_delay=DELAY, **policy)
    return Conversation(policy, store or RelayingStore(), tls=tls)


# -- the password file ---------------------------------------------------------------------------------------------
def test_password_file_holds_salted_scrypt_never_the_password(tmp_path):
    path = tmp_path / "passwd"
    set_password(path, "Carol", "hunter2", ("c@x.test",))
    set_password(path, "dave", "hunter2")
    text = path.read_text()
    assert "hunter2" not in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    carol, dave = parse_password_file(text).values()
    assert carol.name == "carol" and carol.addresses == ("c@x.test",)
    assert carol.hash != dave.hash  # salted: the same password hashes differently
    set_password(path, "carol", "new one")  # a new password keeps the other users and the addresses
    again = parse_password_file(path.read_text())
    assert set(again) == {"carol", "dave"} and again["carol"].addresses == ("c@x.test",)
    assert check_password(again["carol"].hash, "new one") and not check_password(again["carol"].hash, "hunter2")


@pytest.mark.parametrize("line", ["alice", "alice:plaintext", ":scrypt$1$2$3$4$5", "bob:scrypt$1$2"])
def test_password_file_mistakes_name_the_line(line):
    with pytest.raises(PasswordFileError, match=r"users:2: expected"):
        parse_password_file("# users\n" + line + "\n", "users")


def test_bad_user_name_refused(tmp_path):
    with pytest.raises(PasswordFileError, match="bad user name"):
        set_password(tmp_path / "p", "a:b", "x")


def test_verify_counts_failures(users):
    before = users.failures
    assert users.verify("ALICE", "wonderland").name == "alice"
    assert users.verify("alice", "nope") is None
    assert users.verify("nobody", "wonderland") is None
    assert users.failures == before + 2


def test_own_addresses(users):
    domains = frozenset({"example.test", "other.test"})
    alice, bob = users.users["alice"], users.users["bob@elsewhere.test"]
    assert users.may_send_as(alice, "Alice@example.test", domains)
    assert users.may_send_as(alice, "alice@other.test", domains)
    assert not users.may_send_as(alice, "bob@example.test", domains)
    assert users.may_send_as(bob, "bob@elsewhere.test", domains) and users.may_send_as(bob, "bob@example.test", domains)


# -- SASL ----------------------------------------------------------------------------------------------------------
@given(st.text(min_size=1).filter(lambda s: "\0" not in s), st.text().filter(lambda s: "\0" not in s))
@settings(max_examples=200, deadline=None)
def test_plain_and_login_give_back_what_was_sent(user, password):
    plain = b64(b"\0" + user.encode() + b"\0" + password.encode()).decode()
    assert Exchange("PLAIN").start(plain) == ("credentials", (user, password))
    login = Exchange("login")
    assert login.start(None) == ("challenge", "VXNlcm5hbWU6")
    assert login.step(b64(user.encode()).decode()) == ("challenge", "UGFzc3dvcmQ6")
    assert login.step(b64(password.encode()).decode() or "=") == ("credentials", (user, password))


@given(st.sampled_from(["PLAIN", "LOGIN"]), st.lists(st.text(max_size=80), min_size=1, max_size=4))
@settings(max_examples=300, deadline=None)
def test_exchange_takes_anything_without_crashing(mechanism, lines):
    exchange = Exchange(mechanism)
    try:
        kind, _ = exchange.start(lines[0])
        for line in lines[1:]:
            if kind == "credentials":
                break
            kind, _ = exchange.step(line)
    except SASLError:
        pass


@given(st.lists(st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")), max_size=6))
@settings(max_examples=100, deadline=None)
def test_protocol_answers_any_auth_exchange_with_smtp_replies(lines):
    conv = conversation(None if not lines else USERS_FOR_FUZZ, tls=True)
    conv.feed(EHLO + b"AUTH LOGIN\r\n" + b"".join(line + b"\r\n" for line in lines))
    replies = conv.replies()  # parses: every byte sent is a well-formed reply
    assert all(r.code in (220, 250, 334, 235, 501, 535, 421, 500, 503, 502, 504, 538, 214, 252, 221) for r in replies)


USERS_FOR_FUZZ = Users({})


# -- AUTH in the protocol ------------------------------------------------------------------------------------------
def ehlo_lines(conv):
    return conv.replies()[1].lines


def test_auth_offered_only_under_tls_and_with_users(users):
    assert "AUTH PLAIN LOGIN" in ehlo_lines(_fed(conversation(users), EHLO))
    assert not any(line.startswith("AUTH") for line in ehlo_lines(_fed(conversation(users, tls=False), EHLO)))
    assert not any(line.startswith("AUTH") for line in ehlo_lines(_fed(conversation(None), EHLO)))
    plaintext = _fed(conversation(users, tls=False), EHLO + b"AUTH PLAIN " + b64(b"\0alice\0wonderland") + b"\r\n")
    assert (plaintext.replies()[-1].code, plaintext.replies()[-1].status) == (Code.ENCRYPTION_REQUIRED, "5.7.11")
    assert plaintext.server.session.user is None
    assert _fed(conversation(None), EHLO + b"AUTH PLAIN\r\n").codes()[-1] == Code.NOT_IMPLEMENTED


def _fed(conv, data):
    conv.feed(data)
    return conv


def test_auth_plain_initial_response_and_pipelined_mail(users):
    conv = conversation(users, submission=True)
    conv.feed(EHLO + b"AUTH PLAIN " + b64(b"\0alice\0wonderland") + b"\r\nMAIL FROM:<alice@example.test>\r\n")
    assert conv.codes()[2:] == [Code.AUTH_SUCCEEDED, Code.OK]
    assert conv.server.session.user.name == "alice"
    assert _fed(conv, b"AUTH PLAIN\r\n").codes()[-1] == Code.BAD_SEQUENCE  # in a transaction


def test_auth_login_exchange_and_cancel(users):
    conv = conversation(users)
    conv.feed(EHLO + b"AUTH LOGIN\r\n" + b64(b"alice") + b"\r\n" + b64(b"wonderland") + b"\r\n")
    assert conv.codes()[2:] == [Code.AUTH_CONTINUE, Code.AUTH_CONTINUE, Code.AUTH_SUCCEEDED]
    conv = conversation(users)
    conv.feed(EHLO + b"AUTH PLAIN\r\n*\r\nNOOP\r\n")
    assert [(r.code, r.status) for r in conv.replies()[2:]] == [(334, ""), (501, "5.0.0"), (250, "2.0.0")]
    conv = conversation(users)
    conv.feed(EHLO + b"AUTH PLAIN !!notbase64\r\nAUTH CRAM-MD5\r\n")
    assert conv.codes()[2:] == [Code.PARAMETER_SYNTAX, Code.PARAMETER_NOT_IMPLEMENTED]


def test_failed_login_answered_after_a_doubling_delay_then_the_door(users):
    conv = conversation(users)
    bad = b"AUTH PLAIN " + b64(b"\0alice\0wrong") + b"\r\n"
    took = []
    for data in (EHLO + bad + b"NOOP\r\n", bad, b"AUTH LOGIN " + b64(b"nobody") + b"\r\n" + b64(b"x") + b"\r\n"):
        begin = time.monotonic()
        conv.feed(data)  # the Conversation waits out the engine's timer, as a thread per connection does
        took.append(time.monotonic() - begin)
    assert took[0] >= DELAY and took[1] >= 2 * DELAY and took[2] >= 4 * DELAY, took
    codes = [(r.code, r.status) for r in conv.replies()[2:]]
    assert codes == [(535, "5.7.8"), (250, "2.0.0"), (535, "5.7.8"), (334, ""), (535, "5.7.8"), (421, "4.7.0")]
    assert conv.closed and conv.server.session.user is None


def test_submission_needs_a_login_and_own_sender(users):
    conv = conversation(users, submission=True)
    conv.feed(EHLO + b"MAIL FROM:<alice@example.test>\r\n")
    assert (conv.replies()[-1].code, conv.replies()[-1].status) == (Code.AUTH_REQUIRED, "5.7.0")
    conv.feed(b"AUTH PLAIN " + b64(b"\0alice\0wonderland") + b"\r\nMAIL FROM:<bob@example.test>\r\n")
    assert (conv.replies()[-1].code, conv.replies()[-1].status) == (Code.MAILBOX_NAME_NOT_ALLOWED, "5.7.1")
    conv.feed(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<x@remote.test>\r\nDATA\r\nhi\r\n.\r\n")
    assert conv.codes()[-4:] == [Code.OK, Code.OK, Code.START_MAIL_INPUT, Code.OK]
    assert conv.store.delivered[0].recipients == ["x@remote.test"]
    anyone = conversation(users, submission=True, sender_login_match=False)
    anyone.feed(EHLO + b"AUTH PLAIN " + b64(b"\0alice\0wonderland") + b"\r\nMAIL FROM:<bob@example.test>\r\n")
    assert anyone.codes()[-1] == Code.OK


# -- relaying ------------------------------------------------------------------------------------------------------
RELAY_NETS = (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32"))


@pytest.mark.parametrize(
    ("peer", "store", "login", "relayed"),
    [
        (("198.51.100.7", 1), RelayingStore(), False, False),  # a stranger: never an open relay
        (("192.0.2.9", 1), RelayingStore(), False, True),  # a relay network
        (("::ffff:192.0.2.9", 1, 0, 0), RelayingStore(), False, True),
        (("2001:db8::5", 1, 0, 0), RelayingStore(), False, True),
        (("198.51.100.7", 1), RelayingStore(), True, True),  # a login
        (("192.0.2.9", 1), MemoryStore(), False, False),  # no queue: nowhere to keep remote mail
        (("198.51.100.7", 1), MemoryStore(), True, False),
    ],
)
def test_relay_only_for_logins_and_relay_networks(users, peer, store, login, relayed):
    policy = dataclasses.replace(POLICY, users=users, relay_networks=RELAY_NETS)
    conv = Conversation(policy, store, tls=True, peer=peer)
    conv.feed(EHLO)
    if login:
        conv.feed(b"AUTH PLAIN " + b64(b"\0alice\0wonderland") + b"\r\n")
    conv.feed(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<someone@remote.test>\r\nRCPT TO:<local@example.test>\r\n")
    rcpt = conv.replies()[-2]
    assert (rcpt.code, rcpt.status) == ((250, "2.1.5") if relayed else (550, "5.7.1"))
    assert conv.replies()[-1].code == Code.OK  # local mail as ever
