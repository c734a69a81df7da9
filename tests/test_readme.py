"""Every line of README.md works as printed: its ```sh blocks and its two ```python blocks, run the way a newcomer
pastes them, each checked against what its comment promises.

SCENES below is the table: every README line is in it exactly once (a line printed twice, twice), so a new or
changed line nobody classified fails the test. A scene starts its server lines in the background in a scratch
folder holding what the README assumes exists (./site, ./www, ./mail, example.com.zone, zones/*.zone, cert.pem and
key.pem from a test CA whose certificate is ca.pem, a.pdf, message.eml, half of big.iso), waits until they announce
their listeners, runs its client lines with bash exactly as printed (``sockhop`` from the venv's bin on PATH), checks
each one's exit status and a key part of its output, and stops the servers by PID. A line that cannot run here as
printed says so in ``how``, with the equivalent that is run instead. Every command runs under ``loopback_dns``: no
name lookup can leave the machine, and ``sockhop resolve example.com`` (no @SERVER) asks the port-53 server the
scene runs. The README's ports are fixed (the suite runs one test at a time): a taken port fails the test at once.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sockhop.localca import SERVER_NAMES, CertificateAuthority, KeyPair
from tests.support import LISTENING, ROOT, loopback_dns, own_network, require_root, require_tool, said

README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the venv's bin: where `make run` / `make install` put `sockhop`
PORTS = {  # every fixed port a README server line takes, as (port, udp too)
    7007: True,
    7443: False,
    8080: False,
    8000: False,
    8443: False,
    5353: True,
    5354: True,
    8853: False,
    2525: False,
    8025: False,
    4465: False,
    5587: False,
    9100: False,
    9000: False,
    9001: False,
    53: True,
    80: False,
}


# --- what README.md prints ------------------------------------------------------------------------------------------


def command_of(line: str) -> str:
    """A line's command without its trailing comment, whitespace collapsed: the table's key."""
    text = re.sub(r"\\\n\s*", " ", line)
    text = re.sub(r"\s#\s.*$", "", text)
    return " ".join(text.split())


def readme_lines(text: str) -> list[str]:
    """Every line of every ```sh block (a line ending in ``\\`` joined with the next), as printed, and a label
    for each ```python block: the heading or sentence that introduces it."""
    lines: list[str] = []
    block: str | None = None
    before = ""
    pending = ""
    for raw in text.splitlines():
        if block is None:
            if raw.startswith("```sh"):
                block = "sh"
            elif raw.startswith("```python"):
                block = "python"
                lines.append(f"python: {before}")
            elif raw.startswith("```"):
                block = "other"
            elif raw.strip():
                before = raw.strip()
            continue
        if raw.startswith("```"):
            block = None
            continue
        if block != "sh" or not raw.strip():
            continue
        pending += raw
        if raw.endswith("\\"):
            pending += "\n"
            continue
        lines.append(pending)
        pending = ""
    return lines


def python_block(label: str) -> str:
    text = README.read_text()
    start = text.index("```python\n", text.index(label)) + len("```python\n")
    return text[start : text.index("```", start)]


# --- the table ------------------------------------------------------------------------------------------------------


@dataclass
class Line:
    """One README line: ``text`` its command (the table's key); ``expect`` what its output (stdout and stderr)
    must contain; ``status`` its exit status; ``run`` what is run instead when it cannot run as printed, ``how``
    why; ``before``/``after`` what the test does around it (set the scene, check files)."""

    text: str
    expect: tuple[str, ...] = ()
    status: int = 0
    run: str = ""
    how: str = ""
    stdin: str = ""
    before: Callable[[Stage], None] | None = None
    after: Callable[[Stage, subprocess.CompletedProcess], None] | None = None


@dataclass
class Scene:
    """Server lines started together in the background (each announcing ``listening``), then the client lines
    that use them, in order."""

    servers: list[Line]
    listening: tuple[str, ...] = ()
    clients: list[Line] = field(default_factory=list)
    check: Callable[[Stage], None] | None = None
    not_run: list[Line] = field(default_factory=list)  # what ``check`` checks instead of running them

    def lines(self) -> list[Line]:
        return [*self.servers, *self.clients, *self.not_run]


@dataclass
class Stage:
    """The scratch folder, the environment every line runs in, and the servers a scene has running."""

    folder: Path
    env: dict[str, str]
    servers: list[Server] = field(default_factory=list)
    others: list[int] = field(default_factory=list)  # masters started by a restart, stopped by PID too
    created_users: list[str] = field(default_factory=list)


SERVE_WEB_TLS = "sockhop serve web ./site --listen :8080 --listen-tls :8443 --tls-cert cert.pem --tls-key key.pem"
SERVE_MAIL_TLS = (
    "sockhop serve mail ./mail --domain example.test --tls-cert cert.pem --tls-key key.pem "
    "--listen 127.0.0.1:2525 --listen-tls 127.0.0.1:4465"
)
SERVE_SUBMISSION = (
    "sockhop serve mail ./mail --domain example.test --tls-cert cert.pem --tls-key key.pem --users users "
    "--listen 127.0.0.1:2525 --listen-submission 127.0.0.1:5587 "
    "--spool ./spool --relay-networks 192.0.2.0/24 --aliases aliases --dns 127.0.0.1:5353"
)
SERVE_RELAY = (
    "sockhop serve mail ./mail --domain example.test --listen 127.0.0.1:2626 --spool ./spool "
    "--relay-networks 127.0.0.0/8 --dns 127.0.0.1:5353 --relay-tls sockhop.test=required "
    "--relay-cacert sockhop-data/tls/ca.pem"
)
SERVE_DNS_TLS = (
    "sockhop serve dns example.com.zone --listen :5353 --listen-tls :8853 --tls-cert cert.pem --tls-key key.pem"
)
ECHO_HELLO = ("hello",)


def scenes() -> list[Scene]:  # noqa: PLR0915 (one table)
    return [
        Scene(
            [],
            not_run=[
                Line(
                    "make run",
                    how="not run (it never returns): the Makefile's run target is checked to install into .venv and "
                    "run `sockhop up`, which the tour's first scene runs",
                ),
                Line("make test", how="not run (it is this suite): the Makefile's test target is checked instead"),
            ],
            check=check_makefile,
        ),
        # A short tour
        Scene(
            [Line("sockhop up")],
            (
                "echo tcp 127.0.0.1:7007",
                "echo udp 127.0.0.1:7007",
                "web tcp 127.0.0.1:8080",
                "web tls 127.0.0.1:8443",
                "dns udp 127.0.0.1:5353",
                "dns tls 127.0.0.1:8853",
                "mail tcp 127.0.0.1:2525",
                "mail tls 127.0.0.1:4465",
                "mail tcp 127.0.0.1:5587",
                "echo tls 127.0.0.1:7443",
            ),
            [
                Line("echo hello | sockhop talk 127.0.0.1 7007", ECHO_HELLO),
                Line("echo hello | sockhop talk --udp 127.0.0.1 7007", ECHO_HELLO),
                Line(
                    "sockhop send --to you@sockhop.test --dns 127.0.0.1:5353 --body hi --attach a.pdf",
                    ("delivered via",),
                    after=lambda stage, done: check_delivered(stage.folder / "sockhop-data", "a.pdf"),
                ),
                Line(
                    "python: From Python (the mail client's MX lookups):",
                    ("10 mail.sockhop.test.",),
                    run=f'{sys.executable} -c "$README_PYTHON"',
                    how="the block is run by the venv's python, as a file would be",
                ),
            ],
        ),
        Scene(
            [Line("sockhop serve echo --model fork --listen :7007")],
            ("echo tcp [::]:7007 (model fork",),
            check=echo_probe,
        ),
        Scene(
            [Line("sockhop serve echo --model prefork --workers 4")],
            ("echo tcp 127.0.0.1:7007 (model prefork",),
            check=lambda stage: (echo_probe(stage), assert_workers(stage, 4)),
        ),
        Scene(
            [Line("sockhop serve echo --udp --model pool --listen [::1]:7007")],
            ("echo udp [::1]:7007 (model pool",),
            check=lambda stage: assert_equal(udp_echo(("::1", 7007), b"hello"), b"hello"),
        ),
        Scene(
            [Line("sockhop serve echo --model thread --max-connections 100 --idle-timeout 30 -v")],
            ("echo tcp 127.0.0.1:7007 (model thread",),
            check=echo_probe,
        ),
        Scene(
            [],
            clients=[
                Line("sockhop ports", ("ephemeral",)),
                Line("sockhop ports https", ("443",)),
            ],
        ),
        # The web
        Scene([Line("sockhop serve web ./site")], ("web tcp 127.0.0.1:8080",)),
        Scene(
            [Line("sockhop serve web ./site --listen :8000 --model prefork --workers 4 --access-log access.log")],
            ("web tcp [::]:8000 (model prefork",),
            check=lambda stage: (
                assert_workers(stage, 4),
                http_probe(8000, "Hello from ./site"),
                wait_for_text(stage.folder / "access.log", '"GET / HTTP/1.1" 200'),
            ),
        ),
        Scene(
            [Line("sockhop serve web ./site --no-listing --dotfiles --follow-symlinks --no-access-log")],
            ("web tcp 127.0.0.1:8080",),
        ),
        Scene(
            [
                Line(
                    "sockhop serve web --host a.test=./site --host b.test=./site,no-listing,access-log=b.log "
                    "--max-body 10M --compress"
                )
            ],
            ("web tcp 127.0.0.1:8080",),
            [
                Line(
                    "curl --compressed --resolve b.test:8080:127.0.0.1 http://b.test:8080/",
                    ("Hello from ./site",),
                    after=lambda stage, done: wait_for_text(stage.folder / "b.log", '"GET / HTTP/1.1" 200'),
                )
            ],
        ),
        Scene(
            [
                Line("sockhop serve web ./www --listen 127.0.0.1:8000 --no-access-log"),
                Line(
                    "sockhop serve web ./site --proxy /app/=http://127.0.0.1:8000/,http://127.0.0.1:9000/ "
                    "--proxy-read-timeout 30"
                ),
            ],
            ("web tcp 127.0.0.1:8000", "web tcp 127.0.0.1:8080"),
            [
                Line("curl -i http://127.0.0.1:8080/app/", ("Hello from ./www", "Via: 1.1 sockhop")),
                Line(
                    "curl --http2-prior-knowledge -i http://127.0.0.1:8080/app/",
                    ("HTTP/2 200", "via: 1.1 sockhop", "Hello from ./www"),
                ),
            ],
        ),
        Scene(
            [
                Line(
                    "sockhop serve web --host a.test=./site,proxy=/=unix:/tmp/app.sock --host b.test=./site "
                    "--proxy-connect-timeout 3"
                )
            ],
            ("web tcp 127.0.0.1:8080",),
        ),
        Scene(
            [
                Line(
                    "sockhop serve web ./site --error-page 404=/404.html "
                    "--cache-control '/assets/=max-age=31536000, immutable'"
                )
            ],
            ("web tcp 127.0.0.1:8080",),
        ),
        Scene(
            [Line(SERVE_WEB_TLS)],
            ("web tcp [::]:8080", "web tls [::]:8443"),
            [
                Line("sockhop get http://127.0.0.1:8080/", ("Hello from ./site",)),
                Line(
                    "sockhop get -i http://127.0.0.1:8080/a http://127.0.0.1:8080/b",
                    ("HTTP/1.1 200 OK", "page a", "page b"),
                ),
                Line(
                    "sockhop get -L -O http://127.0.0.1:8080/docs",
                    after=lambda stage, done: assert_file(stage.folder / "docs", "the docs\n"),
                ),
                Line(
                    "sockhop get -C -o big.iso http://127.0.0.1:8080/big.iso",
                    before=lambda stage: (stage.folder / "big.iso").write_bytes(BIG[: len(BIG) // 3]),
                    after=lambda stage, done: assert_bytes(stage.folder / "big.iso", BIG),
                ),
                Line(
                    "sockhop get -f -H 'Accept: text/html' --timeout 5 http://127.0.0.1:8080/missing",
                    ("404",),
                    status=22,
                ),
                Line("sockhop get --cacert ca.pem https://localhost:8443/", ("Hello from ./site",)),
                Line("sockhop get -k https://127.0.0.1:8443/", ("Hello from ./site", "warning: not verifying")),
                Line(
                    "sockhop get -v -d 'a=1' -d 'b=2' -u bob:pw http://127.0.0.1:8080/form",
                    ("> POST /form HTTP/1.1", "> Authorization: Basic Ym9iOnB3", "< HTTP/1.1 405"),
                ),
                Line(
                    "sockhop get -s -o /dev/null -w '%{http_code} %{time_total}\\n' http://127.0.0.1:8080/", ("200 0.",)
                ),
                Line(
                    "sockhop get --retry 3 --max-time 10 --cacert ca.pem "
                    "--resolve www.sockhop.test:8443:127.0.0.1 https://www.sockhop.test:8443/",
                    ("Hello from ./site",),
                ),
                Line(
                    "sockhop get --http2-prior-knowledge -v http://127.0.0.1:8080/a http://127.0.0.1:8080/b",
                    ("* Using HTTP/2 with prior knowledge (h2c)", "> GET /b HTTP/2", "< HTTP/2 200", "page a"),
                ),
                Line(
                    "sockhop get --http1.1 --cacert ca.pem https://localhost:8443/",
                    ("Hello from ./site",),
                ),
                Line("curl --http2-prior-knowledge http://127.0.0.1:8080/", ("Hello from ./site",)),
                Line("curl --cacert ca.pem https://localhost:8443/", ("Hello from ./site",)),
            ],
        ),
        # Mail
        Scene([Line("sockhop serve mail ./mail --domain example.test")], ("mail tcp 127.0.0.1:2525",)),
        Scene(
            [Line("sockhop serve mail ./mail --domain example.test --catch-all --model prefork --listen :2525")],
            ("mail tcp [::]:2525 (model prefork",),
        ),
        Scene(
            [Line("sockhop serve mail ./mail --domain example.test --recipients bob,carol --max-size 20M")],
            ("mail tcp 127.0.0.1:2525",),
        ),
        Scene(
            [Line(SERVE_MAIL_TLS)],
            ("mail tcp 127.0.0.1:2525", "mail tls 127.0.0.1:4465"),
            [
                Line(
                    "echo hi | sockhop send --from me@example.test --to bob@example.test --server 127.0.0.1:2525 "
                    "--subject Hello",
                    ("delivered",),
                ),
                Line(
                    "sockhop send --to bob@example.test --server localhost:2525 --tls required --cacert ca.pem "
                    "--body hi",
                    ("delivered",),
                ),
                Line(
                    "sockhop send --to bob@example.test --cc carol@example.test --bcc dave@example.test "
                    "--header 'Subject: hi' --add-header 'X-Ticket: 42' --server 127.0.0.1:2525 --body hi -v",
                    (" ~> RCPT TO:<dave@example.test>", "dave@example.test: delivered", " ~> X-Ticket: 42"),
                ),
                Line(
                    "sockhop send --to bob@example.test --server 127.0.0.1:2525 --data message.eml",
                    ("delivered",),
                    after=lambda stage, done: check_delivered(stage.folder / "mail", "Subject: as it is"),
                ),
                Line("sockhop mailbox ./mail/bob", ("Hello", "as it is")),
                Line("swaks --server 127.0.0.1 --port 2525 --pipeline --to bob@example.test", ("250 2.0.0",)),
                Line("swaks --server 127.0.0.1 --port 2525 --tls --to bob@example.test", ("STARTTLS", "~> QUIT")),
            ],
        ),
        # Mail: submission, relaying, the queue, aliases
        Scene(
            [],
            clients=[
                Line("sockhop mail passwd users alice", ("password of alice set in users",), stdin="pw\n"),
                Line(
                    "sockhop mail passwd users bob --address bob@other.test",
                    ("password of bob set",),
                    stdin="pw2\n",
                    after=lambda stage, done: assert_equal(plain_password(stage.folder / "users"), False),
                ),
            ],  # fmt: skip
        ),
        Scene(
            [Line(SERVE_SUBMISSION)],
            ("mail tcp 127.0.0.1:2525", "mail tcp 127.0.0.1:5587"),
            [
                Line(
                    "swaks --server 127.0.0.1 --port 5587 --tls --auth PLAIN --auth-user alice --auth-password pw "
                    "--from alice@example.test --to friend@elsewhere.test",
                    ("235 2.7.0", "250 2.0.0 Ok: queued"),
                ),
                Line("sockhop queue --spool ./spool", ("alice@example.test", "friend@elsewhere.test", "in 1 Request.")),
                Line(
                    "sockhop queue --spool ./spool --hold ID",
                    ("hold: 1 message(s)",),
                    run="sockhop queue --spool ./spool --hold $(ls spool/queue)",
                    how="ID is the queue id the listing printed",
                ),
            ],
        ),
        # Mail: delivery from the queue, by MX into `sockhop up`'s mail server
        Scene(
            [Line("sockhop up -q"), Line(SERVE_RELAY)],
            ("mail tcp 127.0.0.1:2525", "mail tcp 127.0.0.1:2626"),
            [
                Line(
                    "sockhop send --from me@example.test --to you@sockhop.test --server 127.0.0.1:2626 "
                    "--subject relayed --body hi",
                    ("delivered via 127.0.0.1:2626",),
                ),
                Line(
                    "sockhop mailbox sockhop-data/mail/you",
                    ("relayed",),
                    before=lambda stage: wait_for_mail(stage.folder / "sockhop-data" / "mail" / "you", "relayed"),
                ),
                Line("sockhop queue --spool ./spool --flush", ("due now",)),
            ],
        ),
        # DNS
        # The dashboard
        Scene(
            [Line("sockhop serve mail ./mail --domain example.test --dashboard 127.0.0.1:8025 --message-log mail.log")],
            ("mail tcp 127.0.0.1:2525", "dashboard tcp 127.0.0.1:8025"),
            [
                Line(
                    "swaks --server 127.0.0.1 --port 2525 --to bob@example.test --header 'Subject: hello dashboard'",
                    ("250 2.0.0",),
                ),
                Line("curl -s 'http://127.0.0.1:8025/api/v1/messages?query=hello+dashboard'", ('"hello dashboard"',)),
                Line(
                    "curl -N --max-time 3 http://127.0.0.1:8025/api/v1/events",
                    ("event: stats", '"name": "mail"'),
                    status=28,
                ),
                Line(
                    "python: Your test suite can assert on the mail your application sent; with the first line above "
                    "running:",
                    ("1 passed",),
                    run=f'printf "%s" "$README_PYTHON" > test_welcome.py && {sys.executable} -m pytest -q '
                    "-p no:cacheprovider test_welcome.py",
                    how="the block is saved as test_welcome.py and run by pytest, as a suite of yours would be",
                ),
            ],
            check=lambda stage: wait_for_text(stage.folder / "mail.log", "to=<bob@example.test>"),
        ),
        Scene(
            [Line("sockhop serve web ./site --dashboard :8025 --dashboard-password-file dashboard.pass")],
            ("web tcp 127.0.0.1:8080", "dashboard tcp [::]:8025"),
            check=check_dashboard_password,
        ),
        Scene([Line("sockhop serve dns example.com.zone")], ("dns udp 127.0.0.1:5353", "dns tcp 127.0.0.1:5353")),
        Scene(
            [
                Line(
                    "sudo sockhop serve dns zones/*.zone --listen :53 --user nobody --model prefork --workers 4 "
                    "--allow-transfer 192.0.2.0/24",
                    run="exec sockhop serve dns zones/*.zone --listen :53 --user nobody --model prefork --workers 4 "
                    "--allow-transfer 192.0.2.0/24",
                    how="without sudo (not installed here; the test is root already)",
                )
            ],
            ("dns udp [::]:53 (model prefork",),
            [
                Line(
                    "sockhop resolve example.com",
                    ("example.com.", "192.0.2.1", "status: NOERROR"),
                    how="under loopback_dns, whose /etc/resolv.conf names 127.0.0.1: the port-53 server this scene "
                    "runs answers, and no query leaves the machine",
                ),
            ],
            check=lambda stage: assert_user(stage, "nobody"),
        ),
        Scene(
            [Line("sockhop serve dns example.com.zone --query-log -")],
            ("dns udp 127.0.0.1:5353",),
            [
                Line(
                    "kill -HUP $(pidof -sx sockhop)",
                    run="kill -HUP {pid}",
                    how="with the server's real pid: other sockhops may run on this machine",
                    before=add_record,
                    after=lambda stage, done: check_new_record(stage),
                ),
            ],
        ),
        Scene(
            [Line("sockhop serve dns example.com.zone --model fork --tcp-only")],
            ("dns tcp 127.0.0.1:5353 (model fork",),
            check=lambda stage: assert_equal(tcp_answer("www.example.com"), "192.0.2.2"),
        ),
        # Signed zones and rate limiting
        Scene(
            [],
            clients=[
                Line("sockhop dns keygen example.com", ("wrote example.com.key", "example.com. 3600 IN DS ")),
                Line("sockhop dns ds example.com", ("example.com. 3600 IN DS ",)),
            ],
            check=lambda stage: assert_equal(oct((stage.folder / "example.com.key").stat().st_mode & 0o777), "0o600"),
        ),
        Scene(
            [Line("sockhop serve dns example.com.zone --sign example.com.key")],
            ("dns udp 127.0.0.1:5353",),
            [Line("dig @127.0.0.1 -p 5353 +dnssec www.example.com", ("status: NOERROR", "flags: do", "RRSIG\tA 13 "))],
        ),
        Scene(
            [Line("sockhop serve dns example.com.zone.signed", before=lambda stage: presign(stage.folder))],
            ("dns udp 127.0.0.1:5353",),
            check=lambda stage: assert_equal(signed_types("www.example.com"), ["A", "RRSIG"]),
        ),
        Scene(
            [Line("sockhop serve dns example.com.zone --rrl-rate 20 --rrl-slip 2 --rrl-exempt 192.0.2.0/24")],
            ("dns udp 127.0.0.1:5353",),
        ),
        Scene(
            [Line(SERVE_DNS_TLS)],
            ("dns udp [::]:5353", "dns tls [::]:8853"),
            [
                Line("dig @127.0.0.1 -p 5353 www.example.com", ("status: NOERROR", "192.0.2.2", "flags: qr aa")),
                Line("sockhop resolve www.example.com @127.0.0.1:5353", ("ANSWER SECTION", "192.0.2.2")),
                Line("sockhop resolve example.com MX @127.0.0.1:5353 --short", ("10 mail.example.com.",)),
                Line(
                    "sockhop resolve @127.0.0.1 -p 5353 +short -x 192.0.2.2 a.example.com b.example.com MX",
                    ("192.0.2.4", "20 mail.example.com."),
                ),
                Line(
                    "sockhop resolve +noall +answer +norec +dnssec -t TXT example.com @127.0.0.1:5353",
                    ('"v=spf1 -all"',),
                ),
                Line("sockhop resolve www.example.com @localhost:8853 --tls --cacert ca.pem", ("192.0.2.2",)),
                Line(
                    "kdig @127.0.0.1 -p 8853 +tls-ca=ca.pem +tls-hostname=localhost www.example.com",
                    ("192.0.2.2", "TLS"),
                ),
            ],
        ),
        # Zones that move
        Scene(
            [
                Line(
                    f"sockhop serve dns example.com.zone --tsig upd:{TSIG} --allow-update key:upd "
                    "--allow-transfer key:upd",
                    before=lambda stage: (stage.folder / "example.com.zone").write_text(ZONE),  # serial 1 again
                )
            ],
            ("dns udp 127.0.0.1:5353",),
            [
                Line(
                    "printf 'server 127.0.0.1 5353\\nzone example.com\\nupdate add new.example.com 300 A 192.0.2.77"
                    f"\\nsend\\n' | nsupdate -y hmac-sha256:upd:{TSIG}"
                ),
                Line("dig @127.0.0.1 -p 5353 +short new.example.com", ("192.0.2.77",)),
                Line(
                    f"dig @127.0.0.1 -p 5353 -y hmac-sha256:upd:{TSIG} example.com IXFR=1",
                    ("new.example.com.\t300\tIN\tA\t192.0.2.77", "XFR size: 5 records"),
                ),
                Line(
                    f"dig @127.0.0.1 -p 5353 -y hmac-sha256:upd:{TSIG} example.com AXFR",
                    ("new.example.com.", "XFR size: 12 records"),
                ),
                Line("sockhop dns fold example.com.zone", ("folded 1 changes, serial 1 -> 2",)),
            ],
            check=check_folded,
        ),
        # Secondaries and NOTIFY
        Scene(
            [
                Line(
                    f"sockhop serve dns example.com.zone --tsig upd:{TSIG} --allow-update key:upd "
                    "--allow-transfer key:upd --notify 127.0.0.1:5354,key=upd",
                    before=lambda stage: (stage.folder / "example.com.zone").write_text(ZONE),  # serial 1 again
                ),
                Line(
                    f"sockhop serve dns --secondary example.com@127.0.0.1:5353,key=upd --tsig upd:{TSIG} "
                    "--listen 127.0.0.1:5354 --data secondary"
                ),
            ],
            ("dns udp 127.0.0.1:5353", "dns udp 127.0.0.1:5354"),
            [
                Line(
                    "printf 'server 127.0.0.1 5353\\nzone example.com\\nupdate add moved.example.com 300 A "
                    f"192.0.2.78\\nsend\\n' | nsupdate -y hmac-sha256:upd:{TSIG}",
                    before=lambda stage: wait_for_serial(5354, 1),  # the first transfer (it follows the start)
                ),
                Line(
                    "dig @127.0.0.1 -p 5354 +short moved.example.com",
                    ("192.0.2.78",),
                    before=lambda stage: wait_for_serial(5354, 2),  # NOTIFY and IXFR take a moment
                ),
                Line(
                    "sockhop dns show secondary/example.com.axfr",
                    ("$ORIGIN example.com.", "moved.example.com. 300 IN A 192.0.2.78"),
                    before=wait_for_kept_copy,  # written once the new version is served
                ),
            ],
            check=check_secondary,
        ),
        # In production
        Scene(
            [
                Line(
                    "sudo sockhop serve web /srv/www --listen :80 --user www-data",
                    run="exec sockhop serve web ./www --listen :80 --user www-data",
                    how="without sudo (not installed here; the test is root already), serving ./www, not /srv/www",
                )
            ],
            ("web tcp [::]:80",),
            check=lambda stage: (assert_user(stage, "www-data"), http_probe(80, "Hello from ./www")),
        ),
        Scene(
            [
                Line("sockhop serve web www --listen :8080 --reuse-port &", how="in the background, as `&` does"),
                Line("sockhop serve web www --listen :8080 --reuse-port &", how="in the background, as `&` does"),
            ],
            ("web tcp [::]:8080",),
            check=lambda stage: http_probe(8080, "Hello from ./www"),
        ),
        Scene([Line("sockhop serve web www --proxy-protocol 10.0.0.0/8")], ("web tcp 127.0.0.1:8080",)),
        Scene(
            [Line("sockhop serve web www --admin 127.0.0.1:9100 --log-format json --pid-file web.pid")],
            ("web tcp 127.0.0.1:8080",),
            [
                Line(
                    "kill -USR2 $(cat web.pid)",
                    how="as printed; then the new master is awaited, a request made (so the counters have a line) "
                    "and the new master stopped by its pid",
                    after=lambda stage, done: after_restart(stage, 1),
                ),
                Line("curl -s 127.0.0.1:9100/metrics | grep sockhop_http_requests", ('code="200"',)),
                Line(
                    "curl -s 127.0.0.1:9100/metrics | grep sockhop_connections",
                    ("sockhop_connections_total{", "sockhop_connections_open{", "sockhop_connections_refused_total{"),
                ),
            ],
        ),
        Scene(
            [],
            clients=[Line("sockhop check --config examples/sockhop.toml", ("ok",))],
        ),
        Scene(
            [Line("sockhop up --config examples/sockhop.toml --pid-file up.pid")],
            ("web tcp 127.0.0.1:8080", "dns udp 127.0.0.1:5353", "mail tcp 127.0.0.1:2525"),
            [
                Line(
                    "kill -USR2 $(cat up.pid)",
                    how="as printed; then every service's restart is awaited",
                    after=lambda stage, done: after_restart(stage, 3),
                ),
            ],
        ),
        Scene(
            [
                Line(
                    "sudo sockhop up --admin 127.0.0.1:9100 --log-format json --user sockhop",
                    run="exec sockhop up --admin 127.0.0.1:9100 --log-format json --user sockhop",
                    before=lambda stage: ensure_user(stage, "sockhop"),
                    how="without sudo (not installed here; the test is root already), with a user `sockhop` the "
                    "test creates when there is none (and removes)",
                )
            ],
            ("web tcp 127.0.0.1:8080", "dns udp 127.0.0.1:5353", "mail tcp 127.0.0.1:2525"),
            check=lambda stage: assert_user(stage, "sockhop"),
        ),
        Scene(
            [
                Line(
                    "python: ## Embedding the engine",
                    run=f'exec {sys.executable} -c "$README_PYTHON"',
                    how="the block is run by the venv's python in the background; it announces nothing, so the "
                    "test waits for port 9000 and sends a line that must come back upper-cased",
                )
            ],
            check=lambda stage: assert_equal(echo_once(9000, b"hello\n"), b"HELLO\n"),
        ),
        Scene(
            [
                Line(
                    "python: A stream written to later, woken from another thread:",
                    run=f'exec {sys.executable} -c "$README_PYTHON"',
                    how="the block is run by the venv's python in the background; it announces nothing, so the "
                    "test waits for port 9001 and reads two events a second apart from the open response",
                )
            ],
            check=lambda stage: assert_equal(events_from(9001, 2), 2),
        ),
    ]


# --- the scratch folder ---------------------------------------------------------------------------------------------

BIG = bytes(range(256)) * 4096  # 1 MiB

ZONE = """$ORIGIN example.com.
$TTL 3600
@     SOA  ns1 hostmaster 1 7200 3600 1209600 3600
@     NS   ns1
@     A    192.0.2.1
@     MX   10 mail
@     TXT  "v=spf1 -all"
ns1   A    192.0.2.1
www   A    192.0.2.2
mail  A    192.0.2.3
a     A    192.0.2.4
b     MX   20 mail
"""

TSIG = "c29ja2hvcCBkeW5hbWljIHVwZGF0ZSBrZXkgISEhISE="  # the README's example key: base64 of 32 bytes


def wait_for_serial(port: int, serial: int, timeout: float = 15.0) -> None:
    """Until the server on ``port`` answers example.com's SOA with ``serial``."""
    import dns.exception
    import dns.message
    import dns.query

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = dns.query.udp(dns.message.make_query("example.com", "SOA"), "127.0.0.1", port=port, timeout=1)
            if reply.answer and reply.answer[0][0].serial == serial:
                return
        except (OSError, dns.exception.DNSException):
            pass
        time.sleep(0.1)
    pytest.fail(f"no serial {serial} on port {port} within {timeout:g} s")


def wait_for_kept_copy(stage: Stage, timeout: float = 15.0) -> None:
    """The secondary writes its copy of serial 2 off the event loop, once that version is served."""
    from sockhop.dns.axfrfile import read
    from sockhop.dns.zone import ZoneError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if read(str(stage.folder / "secondary" / "example.com.axfr")).serial == 2:
                return
        except ZoneError:
            pass
        time.sleep(0.1)
    pytest.fail("the secondary kept no copy of serial 2")


def check_secondary(stage: Stage) -> None:
    """The primary's journal goes, for the scenes after."""
    (stage.folder / "example.com.zone.jnl").unlink(missing_ok=True)
    (stage.folder / "example.com.zone").write_text(ZONE)


def check_folded(stage: Stage) -> None:
    """The update is in the zone file, the journal empty; then the scratch zone as it was, for the scenes after."""
    zone = stage.folder / "example.com.zone"
    assert "new.example.com. 300 IN A 192.0.2.77" in zone.read_text()
    assert (stage.folder / "example.com.zone.jnl").read_text() == ""
    zone.write_text(ZONE)
    (stage.folder / "example.com.zone.jnl").unlink()


DASHBOARD_PASSWORD = "correct horse battery staple"

MESSAGE = "From: me@example.test\r\nTo: bob@example.test\r\nSubject: as it is\r\n\r\nsent as it is\r\n"


def make_scratch(folder: Path) -> None:
    """What the README's lines take for granted in the folder they are typed in."""
    site = folder / "site"
    (site / "docs").mkdir(parents=True)
    (site / "index.html").write_text("<h1>Hello from ./site</h1>\n")
    (site / "a").write_text("page a\n")
    (site / "b").write_text("page b\n")
    (site / "docs" / "index.html").write_text("the docs\n")
    (site / "big.iso").write_bytes(BIG)
    (folder / "www").mkdir()
    (folder / "www" / "index.html").write_text("<h1>Hello from ./www</h1>\n")
    (folder / "mail").mkdir()
    (folder / "dashboard.pass").write_text(DASHBOARD_PASSWORD + "\n")
    (folder / "example.com.zone").write_text(ZONE)
    (folder / "zones").mkdir()
    (folder / "zones" / "example.com.zone").write_text(ZONE)
    (folder / "zones" / "example.net.zone").write_text(ZONE.replace("example.com.", "example.net."))
    (folder / "a.pdf").write_bytes(b"%PDF-1.4\n%sockhop test\n")
    (folder / "message.eml").write_bytes(MESSAGE.encode())
    (folder / "aliases").write_text("# sendmail's format\npostmaster: alice\nteam: alice,\n  bob\n")
    authority = CertificateAuthority.create("sockhop README test CA")
    authority.save(KeyPair(folder / "ca.pem", folder / "ca.key"))
    # the names of the certificate `sockhop up` makes, which the README says these lines work with
    authority.issue(list(SERVER_NAMES), KeyPair(folder / "cert.pem", folder / "key.pem"))
    shutil.copytree(ROOT / "examples", folder / "examples")
    for path in [folder, *folder.rglob("*")]:  # a server that drops to another user still reads them
        path.chmod(0o755 if path.is_dir() else 0o644)


# --- running lines --------------------------------------------------------------------------------------------------


@dataclass
class Server:
    line: Line
    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    stdout: Path | None = None

    def log(self) -> str:
        return "\n".join(self.lines)

    def announced(self) -> list[str]:
        return [said(line) for line in self.lines if LISTENING.match(said(line))]


def shell(stage: Stage, line: Line) -> list[str]:
    text = line.run or line.text
    if text.endswith("&"):
        text = "exec " + text[:-1].rstrip()
    elif not line.run and line.text.startswith("sockhop"):
        text = "exec " + text
    return loopback_dns(["bash", "-c", text], stage.folder)


def environment(stage: Stage, line: Line) -> dict[str, str]:
    env = dict(stage.env)
    if line.text.startswith("python: "):
        env["README_PYTHON"] = python_block(line.text.removeprefix("python: "))
    return env


def start(stage: Stage, line: Line) -> Server:
    if line.before:
        line.before(stage)
    out = stage.folder / f"server-{len(stage.servers)}.out"
    proc = subprocess.Popen(
        shell(stage, line),
        cwd=stage.folder,
        env=environment(stage, line),
        stdin=subprocess.DEVNULL,
        stdout=out.open("w"),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    server = Server(line, proc, stdout=out)
    stage.servers.append(server)

    def drain() -> None:
        assert proc.stderr is not None
        with proc.stderr:  # closed here, at its end: a restarted master holds it open after its first one ends
            for text in proc.stderr:
                server.lines.append(text.rstrip("\n"))

    threading.Thread(target=drain, daemon=True).start()
    return server


def wait_announced(stage: Stage, scene: Scene) -> None:
    deadline = time.monotonic() + 20
    while True:
        announced = "\n".join(a for server in stage.servers for a in server.announced())
        if all(want in announced for want in scene.listening):
            return
        for server in stage.servers:
            if server.proc.poll() is not None:
                pytest.fail(f"{server.line.text!r} exited with {server.proc.returncode}:\n{server.log()}")
        if time.monotonic() > deadline:
            logs = "\n".join(server.log() for server in stage.servers)
            pytest.fail(f"not announced {scene.listening} within 20 s:\n{logs}")
        time.sleep(0.05)


def run_client(stage: Stage, line: Line) -> None:
    if line.before:
        line.before(stage)
    text = line.run.format(pid=stage.servers[0].proc.pid if stage.servers else 0) if line.run else line.text
    done = subprocess.run(
        loopback_dns(["bash", "-c", text], stage.folder),
        cwd=stage.folder,
        env=environment(stage, line),
        input=line.stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = done.stdout + done.stderr
    assert done.returncode == line.status, f"{line.text}\nexit {done.returncode}, not {line.status}:\n{output}"
    for want in line.expect:
        assert want in output, f"{line.text}\nprinted no {want!r}:\n{output}"
    if line.after:
        line.after(stage, done)


def stop_servers(stage: Stage) -> None:
    for server in stage.servers:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
    for server in stage.servers:
        try:
            server.proc.wait(15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    for pid in stage.others:
        stop_pid(pid)
    stage.servers.clear()
    stage.others.clear()


def stop_pid(pid: int) -> None:
    """Stop a process this test caused (a master a restart started: not our child), by its pid."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def left_behind(folder: Path) -> list[int]:
    """Processes still running in the scratch folder: every line runs there, and nothing else does (its name is
    fresh), so these are this test's, whoever their parent is now."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cwd = os.readlink(proc / "cwd") if proc.name.isdigit() else ""
        except OSError:
            continue
        if cwd == str(folder) or cwd.startswith(f"{folder}/"):
            found.append(int(proc.name))
    return found


# --- checks ---------------------------------------------------------------------------------------------------------


def check_makefile(stage: Stage) -> None:
    """`make run` installs sockhop in .venv and starts `sockhop up`; `make test` installs the test dependencies (the
    real clients too) and runs the whole suite -- as the README's first lines say."""
    makefile = (ROOT / "Makefile").read_text()

    def recipe(target: str) -> str:
        match = re.search(rf"^{re.escape(target)}:([^\n]*)\n((?:\t[^\n]*\n)*)", makefile, re.M)
        assert match, f"the Makefile has no {target} target"
        return match[1] + "\n" + match[2]

    venv = recipe("$(BIN)/sockhop")
    assert "-m venv $(VENV)" in venv and "pip install -q -e '.[test]'" in venv, venv
    run = recipe("run")
    assert "$(BIN)/sockhop" in run.splitlines()[0] and "$(BIN)/sockhop up" in run, run
    test = recipe("test")
    assert "test-deps" in test.splitlines()[0] and "$(BIN)/python -m pytest" in test, test
    assert "tests/install-clients.sh" in recipe("test-deps")


def echo_probe(stage: Stage) -> None:
    assert_equal(echo_once(7007, b"hello\n"), b"hello\n")


def connect_when_listening(port: int, deadline: float) -> socket.socket:
    """A connection to 127.0.0.1:``port``, retried while it is refused (a server just started) until ``deadline``."""
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def events_from(port: int, count: int) -> int:
    """Server-Sent Events read from a response that stays open, until ``count`` have come (or 15 s)."""
    deadline = time.monotonic() + 15
    sock = connect_when_listening(port, deadline)
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        said = b""
        while said.count(b"\ndata: ") < count and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            said += chunk
    assert said.startswith(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"), said
    return said.count(b"\ndata: ")


def echo_once(port: int, data: bytes) -> bytes:
    deadline = time.monotonic() + 15
    sock = connect_when_listening(port, deadline)
    with sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
    return got


def udp_echo(address: tuple[str, int], data: bytes) -> bytes:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(data, address)
        return sock.recv(4096)


def tcp_answer(name: str) -> str:
    """The A record of ``name`` asked over TCP of 127.0.0.1:5353 (dnspython, as a real client)."""
    import dns.message
    import dns.query

    reply = dns.query.tcp(dns.message.make_query(name, "A"), "127.0.0.1", port=5353, timeout=5)
    return reply.answer[0][0].address


def presign(folder: Path) -> None:
    """example.com.zone.signed, as ldns-signzone writes it (with a new ECDSA P-256 key)."""
    keygen, signzone = require_tool("ldns-keygen"), require_tool("ldns-signzone")
    key = subprocess.run([keygen, "-a", "ECDSAP256SHA256", "-k", "example.com"], cwd=folder, capture_output=True,
                         text=True, check=True, timeout=30).stdout.strip()  # fmt: skip
    subprocess.run([signzone, "-o", "example.com.", "example.com.zone", key], cwd=folder, check=True, timeout=30)
    (folder / "example.com.zone.signed").chmod(0o644)


def signed_types(name: str) -> list[str]:
    """The types in the answer to a DO query for ``name``'s A over UDP to 127.0.0.1:5353."""
    import dns.message
    import dns.query
    import dns.rdatatype

    query = dns.message.make_query(name, "A", want_dnssec=True)
    reply = dns.query.udp(query, "127.0.0.1", port=5353, timeout=5)
    return sorted(dns.rdatatype.to_text(rrset.rdtype) for rrset in reply.answer)


def assert_workers(stage: Stage, count: int) -> None:
    """Under prefork, ``count`` worker processes beside the master."""
    deadline = time.monotonic() + 10
    while len(found := children(stage.servers[0].proc.pid)) != count:
        assert time.monotonic() < deadline, f"{len(found)} workers, not {count}"
        time.sleep(0.05)


def wait_for_text(path: Path, text: str) -> None:
    deadline = time.monotonic() + 5
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"no {text!r} in {path}"
        time.sleep(0.05)


def check_dashboard_password(stage: Stage) -> None:
    """Without the password 401; with it (any user name) the API answers, whatever name the Host header gives."""
    import base64
    import http.client

    for authorization, status in ((None, 401), ("you:wrong", 401), ("anyone:" + DASHBOARD_PASSWORD, 200)):
        conn = http.client.HTTPConnection("127.0.0.1", 8025, timeout=5)
        headers = {"Host": "dashboard.example"}
        if authorization:
            headers["Authorization"] = "Basic " + base64.b64encode(authorization.encode()).decode()
        conn.request("GET", "/api/v1/messages", headers=headers)
        assert conn.getresponse().status == status, authorization
        conn.close()


def http_probe(port: int, want: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
    assert want.encode() in got, got


def assert_equal(got, want) -> None:
    assert got == want, f"{got!r} != {want!r}"


def assert_file(path: Path, text: str) -> None:
    assert path.is_file() and path.read_text() == text, f"{path}: {path.exists() and path.read_text()!r}"


def assert_bytes(path: Path, data: bytes) -> None:
    got = path.read_bytes()
    assert got == data, f"{path}: {len(got)} bytes, not the {len(data)} served"


def plain_password(users: Path) -> bool:
    """Whether a password stands in the file as typed (a field of its own): an scrypt hash's base64 may well hold
    the letters "pw" somewhere, so a substring test would fail now and then."""
    return any(field in ("pw", "pw2") for line in users.read_text().splitlines() for field in line.split(":"))


def wait_for_mail(maildir: Path, text: str) -> None:
    """The queue runner delivers after the 250: give it a few seconds."""
    deadline = time.monotonic() + 10
    while not any(text.encode() in path.read_bytes() for path in maildir.glob("new/*")):
        assert time.monotonic() < deadline, f"no message holding {text!r} in {maildir}"
        time.sleep(0.05)


def check_delivered(maildir: Path, text: str) -> None:
    messages = [path.read_bytes() for path in maildir.rglob("new/*") if path.is_file()]
    assert any(text.encode() in message for message in messages), f"no message holding {text!r} in {maildir}"


def add_record(stage: Stage) -> None:
    zone = stage.folder / "example.com.zone"
    zone.write_text(ZONE.replace(" 1 7200", " 2 7200") + "new   A    192.0.2.9\n")


def check_new_record(stage: Stage) -> None:
    deadline = time.monotonic() + 10
    while True:
        done = subprocess.run(
            [str(BIN / "sockhop"), "resolve", "+short", "new.example.com", "@127.0.0.1:5353"],
            env=stage.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if "192.0.2.9" in done.stdout:
            break
        assert time.monotonic() < deadline, f"the zone was not re-read on SIGHUP: {stage.servers[0].log()}"
        time.sleep(0.1)
    query_log = stage.servers[0].stdout
    assert query_log and "new.example.com" in query_log.read_text(), "no query line on standard output"


def after_restart(stage: Stage, masters: int) -> None:
    """Wait for ``masters`` "restarted: new master N serves" lines; N are stopped by pid with the scene."""
    deadline = time.monotonic() + 20
    while True:
        new = [int(m[1]) for line in stage.servers[0].lines if (m := re.search(r"new master (\d+) serves", said(line)))]
        if len(new) >= masters:
            stage.others.extend(new)
            break
        assert time.monotonic() < deadline, f"no restart:\n{stage.servers[0].log()}"
        time.sleep(0.05)
    if masters == 1:
        http_probe(8080, "Hello from ./www")


def ensure_user(stage: Stage, name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
        stage.created_users.append(name)


def assert_user(stage: Stage, name: str) -> None:
    """The scene's server runs as ``name`` (its own process, or its children under prefork)."""
    uid = pwd.getpwnam(name).pw_uid
    pids = [stage.servers[0].proc.pid, *children(stage.servers[0].proc.pid)]
    uids = {int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[1]) for pid in pids}
    assert uid in uids, f"no process of {stage.servers[0].line.text!r} runs as {name}: uids {uids}"


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *children(int(child))]
    return found


# --- the tests ------------------------------------------------------------------------------------------------------


def unclassified(readme: str) -> tuple[list[str], list[str]]:
    """The README's lines the table lacks, and the table's lines the README lacks (a line printed twice counts
    twice)."""
    printed = Counter(command_of(line) for line in readme_lines(readme))
    table = Counter(command_of(line.text) for scene in scenes() for line in scene.lines())
    return list((printed - table).elements()), list((table - printed).elements())


def test_every_readme_line_is_in_the_table():
    new, gone = unclassified(README.read_text())
    assert not new, f"README lines nobody classified in tests/test_readme.py: {new}"
    assert not gone, f"table lines no longer in README.md: {gone}"
    for scene in scenes():
        for line in scene.lines():
            assert not line.run or line.how, f"{line.text!r} runs as something else without saying why"


def test_a_new_or_changed_readme_line_is_caught():
    readme = README.read_text()
    changed = readme.replace("sockhop ports https", "sockhop ports http") + "\n```sh\nsockhop frobnicate  # new\n```\n"
    new, gone = unclassified(changed)
    assert new == ["sockhop ports http", "sockhop frobnicate"] and gone == ["sockhop ports https"], (new, gone)
    continued = readme.replace("--listen-tls 127.0.0.1:4465", "--listen-tls 127.0.0.1:4466")
    assert unclassified(continued)[0] == [command_of(SERVE_MAIL_TLS).replace("4465", "4466")]


def ports_free() -> None:
    taken = []
    for port, udp in PORTS.items():
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("0.0.0.0", port))
                except OSError:
                    taken.append(f"{port}/{'udp' if kind == socket.SOCK_DGRAM else 'tcp'}")
    if taken:
        pytest.fail(f"the README's ports are taken on this machine, so its lines cannot run: {', '.join(taken)}")


def test_every_readme_line_runs_as_printed():
    """In a network namespace of the test's own: the README's ports are fixed (8080, 5353, 53, 80...), and there
    nothing else on this machine can hold them, nor can anything the lines start reach beyond its loopback."""
    require_root("the privileged-port lines, --user, and loopback_dns's private mount namespace")
    for tool in ("dig", "kdig", "swaks", "curl"):
        require_tool(tool)
    code = "from tests.test_readme import run_every_line; run_every_line()"
    done = subprocess.run(own_network([sys.executable, "-c", code]), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-10000:]


def run_every_line() -> None:
    """Every scene in turn: its servers started, its client lines run as printed, its checks; then stopped."""
    ports_free()
    folder = Path(tempfile.mkdtemp(prefix="sockhop-readme-"))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    stage = Stage(folder, env)
    try:
        make_scratch(folder)
        for scene in scenes():
            for line in scene.servers:
                start(stage, line)
            if scene.servers and scene.servers[0].text.startswith("python: "):
                pass  # announces nothing: its check waits for its port
            elif scene.servers:
                wait_announced(stage, scene)
            for line in scene.clients:
                run_client(stage, line)
            if scene.check:
                scene.check(stage)
            stop_servers(stage)
            assert not left_behind(folder), f"{scene.lines()[0].text!r} left processes behind: {left_behind(folder)}"
    finally:
        stop_servers(stage)
        for pid in left_behind(folder):  # only after a failure: processes this test started, by their pid
            stop_pid(pid)
        for name in stage.created_users:
            subprocess.run(["userdel", name], check=False)
        shutil.rmtree(folder, ignore_errors=True)


def test_make_install_puts_a_working_sockhop_on_prefix(tmp_path):
    """`make install PREFIX=...` links the venv's sockhop into PREFIX/bin, and that command runs (the venv is the one
    running this test: -o keeps make from rebuilding it)."""
    make = require_tool("make")
    venv = BIN.parent
    done = subprocess.run(
        [make, "-C", str(ROOT), "install", f"PREFIX={tmp_path}", f"VENV={venv}", "-o", f"{venv}/bin/sockhop"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"sockhop: installed {tmp_path}/bin/sockhop" in done.stdout
    version = subprocess.run([str(tmp_path / "bin" / "sockhop"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("sockhop "), version.stdout + version.stderr
