"""The Combined Log Format, written once per batch of requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from sockhop.web.accesslog import AccessLog, format_entry

from .helpers import feed, server


def test_format_entry():
    line = format_entry("10.0.0.1", 1_700_000_000, 'GET /a"b HTTP/1.1', 200, 0, None, "curl/8")
    assert line == '10.0.0.1 - - [14/Nov/2023:22:13:20 +0000] "GET /a\\"b HTTP/1.1" 200 - "-" "curl/8"\n'


def test_requests_are_logged(tmp_path: Path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.txt").write_text("abc")
    log = AccessLog(str(tmp_path / "access.log"))
    proto = server(tmp_path / "site", log=log)
    feed(
        proto,
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: test/1\r\nReferer: http://r/\r\n\r\n"
        b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    feed(proto, b"\x00garbage")
    log.close()
    lines = (tmp_path / "access.log").read_text().splitlines()
    assert lines[0] == '127.0.0.1 - - [14/Nov/2023:22:13:20 +0000] "GET /a.txt HTTP/1.1" 200 3 "http://r/" "test/1"'
    assert lines[1].startswith('127.0.0.1 - - [14/Nov/2023:22:13:20 +0000] "GET /nope HTTP/1.1" 404 ')
    assert lines[2].startswith('127.0.0.1 - - [14/Nov/2023:22:13:20 +0000] "-" 400 ')


def test_repeated_requests_are_logged_alike(tmp_path: Path):
    """A request answered from the memo (the same bytes again) is logged exactly as the parsed one."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.txt").write_text("abc")
    log = AccessLog(str(tmp_path / "access.log"))
    proto = server(tmp_path / "site", log=log)
    request = b"GET /a.txt?q=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: t/1\r\nReferer: http://r/\r\n\r\n"
    for _ in range(3):
        feed(proto, request)
    log.close()
    lines = (tmp_path / "access.log").read_text().splitlines()
    assert lines == ['127.0.0.1 - - [14/Nov/2023:22:13:20 +0000] "GET /a.txt?q=1 HTTP/1.1" 200 3 "http://r/" "t/1"'] * 3


def test_lines_go_out_once_a_second_and_when_a_connection_ends(tmp_path: Path):
    """The first line of a second is written at once; the rest of that second wait for a later second or the end
    of a connection, so a busy server writes about once a second and a quiet one shows every request."""
    from sockhop.web.files import Site, SiteOptions
    from sockhop.web.protocol import HttpServer, WebOptions

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.txt").write_text("abc")
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    now = [1_700_000_000.25]
    options = WebOptions(Site(SiteOptions(root=tmp_path / "site")), access_log=log, clock=lambda: now[0])
    first, second = HttpServer(options), HttpServer(options)
    request = b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n"

    def logged() -> int:
        return len(path.read_text().splitlines())

    first.data_received(request)
    assert logged() == 1  # at once
    first.data_received(request)
    second.data_received(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert logged() == 1  # the same second: pending
    now[0] += 1
    second.data_received(request)
    assert logged() == 4  # a new second: everything
    first.data_received(request)
    assert logged() == 4
    first.connection_lost()
    assert logged() == 5
    log.close()
    stamps = [line.split("[", 1)[1].split("]", 1)[0] for line in path.read_text().splitlines()]
    assert stamps == ["14/Nov/2023:22:13:20 +0000"] * 3 + ["14/Nov/2023:22:13:21 +0000"] * 2


def test_an_empty_file_is_logged_with_a_dash_every_time(tmp_path: Path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "empty.txt").write_text("")
    log = AccessLog(str(tmp_path / "access.log"))
    proto = server(tmp_path / "site", log=log)
    for _ in range(2):  # parsed, then from the memo
        feed(proto, b"GET /empty.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    log.close()
    lines = (tmp_path / "access.log").read_text().splitlines()
    assert [line.split('" ', 1)[1] for line in lines] == ['200 - "-" "-"'] * 2


@pytest.mark.interop
@pytest.mark.parametrize("model", ["eventloop", "thread", "prefork"])
def test_a_rotated_log_is_followed_without_a_signal(tmp_path: Path, model):
    """logrotate's default: the file renamed away, lines keep coming; the server opens a new one under the name
    within a second (the first line of the next second), in every worker."""
    import os
    import subprocess
    import time

    from tests.support import require_tool, start_server

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.txt").write_text("abc")
    path = tmp_path / "access.log"
    workers = ["--workers", "2"] if model == "prefork" else []
    server = start_server(
        ["serve", "web", str(tmp_path / "site"), "--listen", "127.0.0.1:0", "--access-log", str(path),
         "--model", model, *workers],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        host, port = server.address("web")
        url = f"http://{host}:{port}/a.txt"
        curl = require_tool("curl")
        subprocess.run([curl, "-sS", "-o", "/dev/null", url], check=True, timeout=30)
        os.rename(path, tmp_path / "access.log.1")
        time.sleep(1.1)
        deadline = time.monotonic() + 10
        while not (path.exists() and "GET /a.txt" in path.read_text()):
            assert time.monotonic() < deadline, "no new access.log"
            subprocess.run([curl, "-sS", "-o", "/dev/null", url], check=True, timeout=30)
            time.sleep(0.3)
    finally:
        server.stop()
    assert (tmp_path / "access.log.1").read_text().count("GET /a.txt") >= 1


@pytest.mark.interop
def test_sigusr1_from_an_nginx_logrotate_script_does_not_kill_the_server(tmp_path: Path):
    import os
    import signal
    import subprocess

    from tests.support import require_tool, start_server

    (tmp_path / "a.txt").write_text("abc")
    server = start_server(
        ["serve", "web", str(tmp_path), "--listen", "127.0.0.1:0", "--no-access-log", "--model", "prefork",
         "--workers", "2"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        host, port = server.address("web")
        os.kill(server.pid, signal.SIGUSR1)
        done = subprocess.run([require_tool("curl"), "-sS", f"http://{host}:{port}/a.txt"], capture_output=True,
                              timeout=30)  # fmt: skip
        assert done.stdout == b"abc" and server.proc.poll() is None
    finally:
        server.stop()


@pytest.mark.parametrize("model", ["eventloop", "thread"])
def test_sigusr1_reopens_the_access_log_after_logrotate_moved_it(tmp_path: Path, model: str):
    import os
    import signal
    import subprocess
    import time

    from tests.support import require_tool, start_server

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.txt").write_text("abc")
    log = tmp_path / "access.log"
    server = start_server(
        ["serve", "web", str(tmp_path / "site"), "--listen", "127.0.0.1:0", "--access-log", str(log), "--model", model],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        host, port = server.address("web")

        def get(path: str) -> None:
            done = subprocess.run([require_tool("curl"), "-sS", f"http://{host}:{port}{path}"], capture_output=True,
                                  timeout=30)  # fmt: skip
            assert done.returncode == 0

        get("/a.txt?before")
        deadline = time.monotonic() + 5
        while "before" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.05)
        log.rename(tmp_path / "access.log.1")  # logrotate's move, then its postrotate kill -USR1
        os.kill(server.pid, signal.SIGUSR1)
        time.sleep(0.2)
        get("/a.txt?after")
        deadline = time.monotonic() + 5
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        assert "after" in log.read_text() and "after" not in (tmp_path / "access.log.1").read_text()
        assert "before" in (tmp_path / "access.log.1").read_text() and server.proc.poll() is None
    finally:
        server.stop()
