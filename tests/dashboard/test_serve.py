"""The dashboard as served (``--dashboard``): its API over real HTTP (the standard library's client), its event
stream read by ``curl -N``, the activity tail, and hostile requests answered safely -- against one ``sockhop serve
mail`` for the module."""

from __future__ import annotations

import base64
import http.client
import json
import smtplib
import subprocess
import time
from email.message import EmailMessage

import pytest

from tests.dashboard.test_api import CRAFTED, deliver, mail
from tests.support import require_tool


def request(served, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    host, port = served[0].address("dashboard")
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def send(served, message: EmailMessage) -> None:
    with smtplib.SMTP(*served[0].address("mail"), timeout=10) as smtp:
        smtp.send_message(message, "alice@example.org", ["you@sockhop.test"])


def listed(served, query: str = "") -> list[dict]:
    status, _, body = request(served, "GET", f"/api/v1/messages?query={query}")
    assert status == 200
    return json.loads(body)["messages"]


def test_the_api_over_http_lists_opens_and_deletes_with_the_token(served):
    send(served, mail("over http", "the body", "<p>hi</p>", ("notes.txt", b"some notes")))
    [found] = listed(served, "over+http")
    status, headers, body = request(served, "GET", f"/api/v1/messages/{found['ID']}")
    assert status == 200 and headers["Content-Type"] == "application/json" and headers["X-Frame-Options"] == "DENY"
    message = json.loads(body)
    assert message["Text"] == "the body\n" and message["Attachments"][0]["FileName"] == "notes.txt"
    status, headers, body = request(served, "GET", f"/api/v1/messages/{found['ID']}/part/0")
    assert body == b"some notes" and headers["Content-Disposition"].startswith('attachment; filename="notes.txt"')
    status, headers, _ = request(served, "GET", f"/api/v1/messages/{found['ID']}/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "SAMEORIGIN"
    assert request(served, "POST", f"/api/v1/messages/{found['ID']}/delete")[0] == 403
    token = json.loads(request(served, "GET", "/api/v1/token")[2])["token"]
    status, _, body = request(served, "POST", f"/api/v1/messages/{found['ID']}/delete", {"X-Sockhop-Token": token})
    assert status == 200 and json.loads(body) == {"deleted": 1}
    assert listed(served, "over+http") == []


def test_the_page_and_its_files_are_served_under_a_strict_policy(served):
    status, headers, body = request(served, "GET", "/")
    assert status == 200 and b'<script src="/static/app.js"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert request(served, "GET", "/static/app.js")[1]["Content-Type"].startswith("text/javascript")
    assert request(served, "HEAD", "/static/style.css")[2] == b""
    services = json.loads(request(served, "GET", "/api/v1/services")[2])["services"]
    assert [s["name"] for s in services] == ["mail"] and services[0]["listeners"][0].startswith("tcp 127.0.0.1:")


def test_the_event_stream_brings_new_mail_the_log_and_the_counters(served):
    curl = require_tool("curl")
    host, port = served[0].address("dashboard")
    stream = subprocess.Popen([curl, "-sN", "--max-time", "10", f"http://{host}:{port}/api/v1/events"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert stream.stdout.readline() == "retry: 2000\n"
        send(served, mail("streamed to curl"))
        out = ""
        while not ("event: mail" in out and "to=<you@sockhop.test>" in out and out.endswith("\n\n")):
            line = stream.stdout.readline()
            assert line, out  # curl gave up (--max-time) before both came
            out += line
    finally:
        stream.terminate()
        stream.wait()
    events = out.split("\n\n")
    assert events[0].startswith("\nevent: stats\ndata: {")  # the counters first, as the stream opens
    assert any(e.startswith("event: mail\n") and "streamed to curl" in e for e in events), out
    assert any("event: log\n" in e and "data: mail " in e and "to=<you@sockhop.test>" in e for e in events), out
    status, _, body = request(served, "GET", "/api/v1/activity")
    assert any("to=<you@sockhop.test>" in line for line in json.loads(body)["lines"])


@pytest.mark.parametrize(
    "path", ["/api/v1/messages/..%2F..%2Fetc%2Fpasswd", "/api/v1/messages/../../etc/passwd/raw", "/../../etc/passwd",
             "/static/../api.py", "/static/%2e%2e/inbox.py", "/api/v1/messages/%00/raw"],
)  # fmt: skip
def test_no_path_reaches_outside_the_maildir(served, path):
    status, _, body = request(served, "GET", path)
    assert status in (400, 404) and b"root:" not in body and b"import" not in body


def test_a_crafted_filename_and_a_20_mb_message_are_answered_safely(served):
    deliver(served[1] / "mail", CRAFTED)
    deliver(served[1] / "mail", mail("twenty megabytes", attach=("big.bin", b"\x01" * (20 * 1024 * 1024))))
    [evil] = listed(served, "evil")
    disposition = request(served, "GET", f"/api/v1/messages/{evil['ID']}/part/0")[1]["Content-Disposition"]
    name = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert "/" not in name and ".." not in name and "\r" not in disposition and "\n" not in disposition
    [big] = listed(served, "twenty+megabytes")
    status, headers, body = request(served, "GET", f"/api/v1/messages/{big['ID']}/part/0")
    assert status == 200 and len(body) == 20 * 1024 * 1024 and headers["Content-Type"] == "application/octet-stream"
    assert request(served, "GET", "/api/v1/messages?limit=1")[0] == 200  # still serving


def test_a_name_that_is_not_local_is_refused_without_a_password(served):
    """DNS rebinding: a page of evil.example pointed at 127.0.0.1 names the server evil.example."""
    assert request(served, "GET", "/api/v1/token", {"Host": "evil.example"})[0] == 403
    assert request(served, "GET", "/api/v1/token", {"Host": "localhost:8025"})[0] == 200


def test_bad_requests_end_cleanly(served):
    import socket

    host, port = served[0].address("dashboard")
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"BLAH\x00 / HTTP/1.1\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"POST /api/v1/messages/delete HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 999999\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 413 ")


def test_a_password_guards_everything_and_is_needed_off_loopback(tmp_path, sockhop_server):
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    server = sockhop_server(["serve", "web", str(tmp_path), "--listen", "127.0.0.1:0", "--dashboard", "127.0.0.1:0",
                             "--dashboard-password-file", str(secret)], announce=2)  # fmt: skip
    served = (server, None)
    status, headers, _ = request(served, "GET", "/api/v1/messages")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
    wrong = {"Authorization": "Basic " + base64.b64encode(b"you:guess").decode()}
    assert request(served, "GET", "/api/v1/messages", wrong)[0] == 401
    right = {"Authorization": "Basic " + base64.b64encode(b"you:s3cret").decode(), "Host": "dash.example"}
    assert request(served, "GET", "/api/v1/messages", right)[0] == 200
    refused = subprocess.run(
        [*server.proc.args[:3], "serve", "web", str(tmp_path), "--listen", "127.0.0.1:0", "--dashboard", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert refused.returncode != 0 and refused.stderr.startswith("sockhop: the dashboard on 0.0.0.0:0 would show")
    assert len(refused.stderr.splitlines()) == 1


def test_the_tail_and_counters_reach_across_prefork_workers(tmp_path, sockhop_server):
    """The access log of two worker processes reaches the dashboard in their master, and so do their counters."""
    (tmp_path / "index.html").write_text("hello\n")
    server = sockhop_server(["serve", "web", str(tmp_path), "--listen", "127.0.0.1:0", "--model", "prefork",
                             "--workers", "2", "--access-log", str(tmp_path / "access.log"), "--dashboard",
                             "127.0.0.1:0"], announce=2)  # fmt: skip
    served = (server, None)
    web = http.client.HTTPConnection(*server.address("web"), timeout=10)
    for _ in range(3):
        web.request("GET", "/index.html")
        assert web.getresponse().read() == b"hello\n"
    web.close()

    def tail() -> list[str]:
        return json.loads(request(served, "GET", "/api/v1/activity")[2])["lines"]

    deadline = time.monotonic() + 10
    while not any('"GET /index.html HTTP/1.1" 200' in line for line in tail()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any(line.startswith("web 127.0.0.1 - - [") for line in tail()), tail()
    while time.monotonic() < deadline:
        [web_stats] = json.loads(request(served, "GET", "/api/v1/services")[2])["services"]
        if web_stats["results"].get("200") == 3:
            break
        time.sleep(0.2)
    assert web_stats["results"] == {"200": 3} and web_stats["model"].startswith("prefork")


def test_a_dashboard_port_taken_is_one_line_that_says_what_to_do(tmp_path):
    import socket
    import sys

    from tests.support import ROOT

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "sockhop", "serve", "web", str(tmp_path), "--listen",
                               "127.0.0.1:0", "--dashboard", f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=30, cwd=ROOT)  # fmt: skip
    assert done.returncode != 0 and len(done.stderr.splitlines()) == 1
    assert "already in use" in done.stderr and "--no-dashboard" in done.stderr
