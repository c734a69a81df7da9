"""Basic authentication from an htpasswd file that Apache's htpasswd wrote: curl and wget against a real server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sockhop.web.auth import BasicAuth, HtpasswdError, read_htpasswd
from tests.support import require_tool, start_server

from .helpers import feed, parse_responses, server

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth")
    path = folder / "users"
    tool = require_tool("htpasswd")
    subprocess.run([tool, "-c", "-B", "-b", "-C", "5", str(path), "bob", "s3cret"], check=True, capture_output=True)
    subprocess.run([tool, "-B", "-b", "-C", "5", str(path), "ann", "pässword"], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "hello.txt").write_text("hello\n")
    return root


def test_a_request_without_or_with_wrong_credentials_gets_401(site, htpasswd):
    proto = server(site, auth=BasicAuth(str(htpasswd), "Team"))
    for extra in ("", "Authorization: Basic Ym9iOndyb25n\r\n", "Authorization: Bearer x\r\n"):
        raw, _ = feed(proto, f"GET /hello.txt HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        answer = parse_responses(raw)[0]
        assert answer.status == 401 and answer.header("www-authenticate") == 'Basic realm="Team", charset="UTF-8"'
    for _ in range(3):  # checked once with bcrypt, then remembered; never answered from the memo without a check
        raw, _ = feed(proto, b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Ym9iOnMzY3JldA==\r\n\r\n")
        assert parse_responses(raw)[0].body == b"hello\n"
        raw, _ = feed(proto, b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        assert parse_responses(raw)[0].status == 401


@pytest.mark.parametrize(
    "line, says",
    [
        ("bob:$apr1$abc$def", "Apache MD5 ($apr1$) is not accepted, only bcrypt"),
        ("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1 ({SHA}) is not accepted"),
        ("bob:abJnggxhB/yWI", "crypt or plain text is not accepted"),
        ("nobody", "not USER:HASH"),
    ],
)
def test_other_formats_are_refused_in_one_line(tmp_path, line, says):
    path = tmp_path / "users"
    path.write_text(f"# team\n{line}\n")
    with pytest.raises(HtpasswdError, match=r".*:2: .*") as caught:
        read_htpasswd(str(path))
    assert says in str(caught.value) and "\n" not in str(caught.value)
    done = subprocess.run(
        [sys.executable, "-m", "sockhop", "serve", "web", str(tmp_path), "--auth-basic-user-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and done.stderr.strip().startswith("sockhop: ") and says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("model", ["eventloop", "thread", "prefork"])
def test_curl_and_wget_with_a_user(site, htpasswd, tmp_path, model):
    other = tmp_path / "open"
    other.mkdir()
    (other / "hello.txt").write_text("open\n")
    workers = ["--workers", "2"] if model == "prefork" else []
    proc = start_server(
        ["serve", "web", "--listen", "127.0.0.1:0", "--no-access-log", "--model", model, *workers,
         "--host", f"private.test={site},auth-basic-user-file={htpasswd}", "--host", f"open.test={other}"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        host, port = proc.address("web")
        curl = require_tool("curl")

        def fetch(name: str, *args: str) -> bytes:
            done = subprocess.run(
                [curl, "-sS", "--resolve", f"{name}:{port}:{host}", "-w", " %{http_code}", *args,
                 f"http://{name}:{port}/hello.txt"],
                capture_output=True,
                timeout=30,
            )  # fmt: skip
            return done.stdout

        assert fetch("private.test").endswith(b" 401")
        assert fetch("private.test", "-u", "bob:wrong").endswith(b" 401")
        assert fetch("private.test", "-u", "bob:s3cret") == b"hello\n 200"
        assert fetch("private.test", "-u", "ann:pässword", "--http2-prior-knowledge") == b"hello\n 200"
        assert fetch("open.test") == b"open\n 200"  # another host, no password
        done = subprocess.run(
            [require_tool("wget"), "-q", "-O", "-", "--user", "bob", "--password", "s3cret",
             f"http://{host}:{port}/hello.txt", "--header", "Host: private.test"],
            capture_output=True,
            timeout=30,
        )  # fmt: skip
        assert done.stdout == b"hello\n", done.stderr
    finally:
        proc.stop()
