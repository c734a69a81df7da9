"""One engine suite, every model, IPv4 and IPv6: the same protocol served six ways, through real sockets, with the
server as a real subprocess. Each test says what a user of that model may count on."""

from __future__ import annotations

import os
import random
import resource
import signal
import socket
import time

import pytest

from tests.engine.clients import (
    children,
    connect,
    cpu_seconds,
    echo_once,
    exchange_many,
    fd_count,
    read_until_eof,
    rss_kib,
    state,
    tree,
    wait_for,
)
from tests.support import start_server

MODELS = ["iterative", "fork", "thread", "pool", "eventloop", "prefork"]
DATAGRAM_MODELS = ["iterative", "pool", "eventloop", "prefork"]
FAMILIES = {"ipv4": "127.0.0.1", "ipv6": "::1"}
SERVER = "tests.engine.crashing_echo"


def listen_on(host: str) -> str:
    return f"[{host}]:0" if ":" in host else f"{host}:0"  # "" gives ":0": every interface


@pytest.fixture
def serve():
    """``serve(model, host, *flags, udp=False)`` starts the suite's server; all are stopped after the test."""
    started = []

    def start(model: str, host: str = "127.0.0.1", *extra: str, udp: bool = False, **kwargs):
        args = ["--model", model, "--listen", listen_on(host), "--workers", "2", *extra]
        if udp:
            args.append("--udp")
        proc = start_server(args, module=SERVER, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(params=MODELS)
def model(request):
    return request.param


@pytest.fixture(params=list(FAMILIES), ids=list(FAMILIES))
def host(request):
    return FAMILIES[request.param]


@pytest.fixture
def server(serve, model, host):
    """A server of the model on an ephemeral loopback port, stopped and reaped after the test."""
    proc = serve(model, host, "--grace", "3")
    yield proc
    assert proc.stop() == 0, proc.log()
    assert "Traceback" not in proc.log()


# -- serving many clients -------------------------------------------------------------------------------------------
def test_fifty_concurrent_clients_with_payloads_up_to_4mib(server, model):
    rng = random.Random(7)
    sizes = [1, 4 * 1024 * 1024] + [int(2 ** rng.uniform(0, 22)) for _ in range(48)]
    payloads = [rng.randbytes(size) for size in sizes]
    received = exchange_many(server.address(), payloads, timeout=120)
    assert [len(r) for r in received] == sizes
    assert received == payloads


def test_byte_at_a_time(server):
    payload = b"one byte at a time\r\n"
    with connect(server.address()) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in payload:
            sock.send(bytes([b]))
        got = b""
        while len(got) < len(payload):
            got += sock.recv(1024)
    assert got == payload


def test_half_close_with_data_in_flight_is_delivered(server):
    # The client sends everything, shuts its write side, and only then reads: the server must still send it all.
    payload = os.urandom(3 * 1024 * 1024)
    with connect(server.address()) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.sendall(payload[:65536])
        sock.shutdown(socket.SHUT_WR)
        assert read_until_eof(sock) == payload[:65536]
    assert exchange_many(server.address(), [payload])[0] == payload


def test_a_silent_client_does_not_hold_up_the_others(server, model):
    with connect(server.address()) as silent:
        silent.sendall(b"I say one thing and then nothing")
        if model == "iterative":
            # One request at a time: everyone else waits for the silent client, exactly as the lecture says.
            with connect(server.address(), timeout=1.0) as other:
                other.sendall(b"hello")
                with pytest.raises(TimeoutError):
                    other.recv(5)
                silent.close()
                other.settimeout(10)
                assert other.recv(5) == b"hello"
        else:
            assert echo_once(server.address(), b"not held up", timeout=5) == b"not held up"


def test_a_protocol_exception_costs_only_its_own_connection(server, model):
    with connect(server.address()) as bystander:
        bystander.sendall(b"before ")
        assert bystander.recv(7) == b"before "
        if model == "iterative":
            bystander.close()  # one at a time: the crash can only happen after this conversation
        with connect(server.address()) as doomed:
            doomed.sendall(b"please CRASH now")
            assert read_until_eof(doomed) == b""
        if model != "iterative":
            bystander.sendall(b"after")
            assert bystander.recv(5) == b"after"
    assert echo_once(server.address(), b"still serving") == b"still serving"
    assert wait_for(lambda: "protocol error in data_received" in server.log(), 5), server.log()


@pytest.mark.parametrize("how", ["LINGER", "AT-ONCE"])
def test_closing_lingers_unless_the_protocol_says_the_peer_is_done(server, how):
    """LINGER drains what the client sends after our last bytes (no reset can destroy them); AT-ONCE closes
    outright, as for an HTTP client that said Connection: close, so late input meets a reset."""
    with connect(server.address()) as client:
        client.sendall(how.encode())
        assert read_until_eof(client) == how.encode()
        client.sendall(b"late input")
        time.sleep(0.3)
        if how == "LINGER":
            client.sendall(b"more late input")
            assert client.recv(10) == b""
        else:
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                client.sendall(b"more late input")
                client.recv(10)


# -- lifecycle ------------------------------------------------------------------------------------------------------
def test_graceful_stop_delivers_in_flight_data(serve, model, host):
    proc = serve(model, host, "--grace", "5")
    payload = os.urandom(1024 * 1024)
    sock = connect(proc.address())
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"  # the conversation is under way
    proc.proc.send_signal(signal.SIGTERM)
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    assert read_until_eof(sock) == payload
    sock.close()
    assert proc.proc.wait(10) == 0
    with pytest.raises(OSError):
        connect(proc.address(), timeout=2).close()


def test_stop_ends_a_conversation_that_does_not_end_by_itself(serve, model):
    proc = serve(model, "127.0.0.1", "--grace", "1")
    sock = connect(proc.address())
    sock.sendall(b"x")
    assert sock.recv(1) == b"x"
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    assert read_until_eof(sock) == b""  # closed by the server at the end of the grace period
    assert proc.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    sock.close()


def test_no_zombies_and_no_leaked_descriptors(server, model):
    root = server.pid

    def fds() -> int:
        return sum(fd_count(p) for p in tree(root))

    echo_once(server.address())  # everything lazily made is made
    time.sleep(0.2)
    baseline = fds()
    for _ in range(3):
        exchange_many(server.address(), [b"x" * 1000] * 20)
    # Generous waits: a loaded machine (CI, other suites) can take seconds to schedule 60 exiting children.
    assert wait_for(lambda: fds() <= baseline, 30), (baseline, fds())
    assert wait_for(lambda: all(state(p) != "Z" for p in children(root)), 30)
    if model == "fork":
        assert wait_for(lambda: children(root) == [], 30), children(root)


def test_idle_timeout(serve, model, host):
    proc = serve(model, host, "--idle-timeout", "1")
    with connect(proc.address()) as idle:
        started = time.monotonic()
        if model == "iterative":
            assert read_until_eof(idle) == b"timed out\n"  # the protocol's last word, then the close
        else:
            with connect(proc.address()) as busy:
                for _ in range(6):  # a client that keeps talking is never idle
                    busy.sendall(b"tick")
                    assert busy.recv(4) == b"tick"
                    time.sleep(0.3)
                assert read_until_eof(idle, timeout=5) == b"timed out\n"
                busy.sendall(b"tock")
                assert busy.recv(4) == b"tock"
        assert 0.8 < time.monotonic() - started < 5


def test_the_protocols_alarm_fires_however_busy_the_client(serve, model):
    proc = serve(model, "127.0.0.1", "--idle-timeout", "30")
    with connect(proc.address()) as sock:
        started = time.monotonic()
        sock.sendall(b"ALARM")
        assert sock.recv(5) == b"ALARM"
        sock.settimeout(0.1)
        received = b""
        for _ in range(50):  # a slowloris: a byte every 0.1 s, never idle, never done
            time.sleep(0.1)
            try:
                sock.sendall(b".")
                chunk = sock.recv(100)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        assert received.endswith(b"timed out\n"), received
        assert 0.8 < time.monotonic() - started < 4


@pytest.mark.parametrize("model", [m for m in MODELS if m != "iterative"])
def test_connection_limit_refuses_cleanly_and_stays_up(serve, model):
    # pool: three threads, so all three are served at once; prefork: one worker holds the whole limit.
    proc = serve(model, "127.0.0.1", "--max-connections", "3", "--workers", "3" if model == "pool" else "1")
    held = [connect(proc.address()) for _ in range(3)]
    for sock in held:
        sock.sendall(b"in")
        assert sock.recv(2) == b"in"
    with connect(proc.address()) as extra:
        assert read_until_eof(extra) == b"busy\n"
    held.pop().close()
    assert wait_for(lambda: _served(proc.address()), 10)
    for sock in held:
        sock.sendall(b"still")
        assert sock.recv(5) == b"still"
        sock.close()
    assert proc.stop() == 0


def _served(addr) -> bool:
    try:
        return echo_once(addr, b"ok", timeout=2) == b"ok"
    except OSError:
        return False


def test_output_in_bursts_each_when_the_last_has_gone(serve, model):
    """WHEN_DRAINED: the protocol's next burst is asked for once the last has gone to the kernel, under every model
    (HTTP/2 sends files that way); and a client that stops reading holds the server at one burst, not all of them."""
    proc = serve(model, "127.0.0.1", "--idle-timeout", "30")
    with connect(proc.address()) as sock:
        sock.sendall(b"BURSTS:40\n")
        received = bytearray()
        while not received.endswith(b"done\n"):
            chunk = sock.recv(1 << 20)
            assert chunk, "closed before the last burst"
            received += chunk
        assert len(received) == 40 * 65536 + 5
        sock.sendall(b"still here")
        assert sock.recv(10) == b"still here"
    slow = connect(proc.address())
    slow.sendall(b"warm")
    assert slow.recv(4) == b"warm"
    time.sleep(0.2)
    before = rss_kib(proc.pid)
    slow.sendall(b"BURSTS:4000\n")  # 250 MiB, never read
    time.sleep(1.5)
    growth = rss_kib(proc.pid) - before
    slow.close()
    assert growth < 16 * 1024, f"server grew {growth} KiB for a client that reads none of its bursts"
    assert _served(proc.address())


def test_a_client_that_never_reads_cannot_grow_server_memory(server):
    sock = connect(server.address())
    # One round trip first: the connection's own cost (under fork, a whole child process) is not what is measured.
    sock.sendall(b"warm\n")
    assert sock.recv(16) == b"warm\n"
    time.sleep(0.2)
    before = rss_kib(server.pid)
    sock.setblocking(False)
    chunk = b"z" * 65536
    sent = 0
    stalled_since = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and sent < 256 * 1024 * 1024:
        try:
            sent += sock.send(chunk)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 1.0:
                break  # the server stopped reading: backpressure reached us
            time.sleep(0.01)
    growth = rss_kib(server.pid) - before
    sock.close()
    assert sent < 256 * 1024 * 1024, "the server kept reading from a client that never reads"
    assert growth < 16 * 1024, f"server grew {growth} KiB for one client that never reads (sent {sent} bytes)"


def test_survives_running_out_of_file_descriptors(serve, model):
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    proc = serve(model, "127.0.0.1", "--max-connections", "1000", preexec_fn=low_limit)
    clients = []
    try:
        for _ in range(80):
            clients.append(connect(proc.address(), timeout=2))
        time.sleep(0.5)  # the server is now at its descriptor limit, with clients still queued
        before = cpu_seconds(proc.pid)
        time.sleep(1.0)
        spent = cpu_seconds(proc.pid) - before
        assert spent < 0.5, f"busy loop while out of descriptors: {spent:.2f}s CPU in 1s"
    finally:
        for sock in clients:
            sock.close()
    assert wait_for(lambda: _served(proc.address()), 20), proc.log()
    assert proc.proc.poll() is None
    if model in ("thread", "pool", "eventloop", "prefork"):  # these hold every connection in one process
        assert "out of file descriptors" in proc.log()
    assert proc.stop() == 0


# -- prefork --------------------------------------------------------------------------------------------------------
def test_prefork_replaces_a_worker_killed_with_sigkill(serve, host):
    proc = serve("prefork", host)
    assert wait_for(lambda: len(children(proc.pid)) == 2, 10)
    victim = children(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: victim not in children(proc.pid) and len(children(proc.pid)) == 2, 10)
    for _ in range(20):
        assert echo_once(proc.address(), b"service goes on") == b"service goes on"
    assert wait_for(lambda: "starting a new one" in proc.log(), 5), proc.log()
    assert proc.stop() == 0


# -- UDP ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", DATAGRAM_MODELS)
def test_udp_datagrams_of_many_sizes(serve, model, host):
    proc = serve(model, host, udp=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect(proc.address(kind="udp"))
        for size in [1, 2, 100, 512, 1472, 1500, 4096, 9000, 32768, 65000, 65507]:
            payload = os.urandom(size)
            for _attempt in range(3):  # best effort, as UDP is
                sock.send(payload)
                try:
                    assert sock.recv(65535) == payload
                    break
                except TimeoutError:
                    continue
            else:
                pytest.fail(f"no echo for a {size}-byte datagram")
        sock.send(b"CRASH")  # a protocol error loses that datagram's answer only
        sock.send(b"after")
        assert sock.recv(100) == b"after"
    assert proc.stop() == 0


@pytest.mark.parametrize("model", DATAGRAM_MODELS)
def test_udp_burst_from_many_clients_each_answered(serve, model, host):
    """More datagrams than one batched receive takes (engine/mmsg.py), from several clients at once: each answer
    goes back to the client that asked, none lost on loopback."""
    proc = serve(model, host, udp=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    clients = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(4)]
    try:
        for client in clients:
            client.settimeout(5)
            client.connect(proc.address(kind="udp"))
        for i in range(50):
            for n, client in enumerate(clients):
                client.send(f"client {n} datagram {i}".encode())
        for n, client in enumerate(clients):
            got = sorted(client.recv(100) for _ in range(50))
            assert got == sorted(f"client {n} datagram {i}".encode() for i in range(50))
    finally:
        for client in clients:
            client.close()
    assert proc.stop() == 0


@pytest.mark.parametrize("model", ["fork", "thread"])
def test_udp_under_fork_or_thread_is_a_one_line_error(model, sockhop_server):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "sockhop", "serve", "echo", "--udp", "--model", model, "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot serve UDP" in lines[0], result.stderr


def test_a_wildcard_listen_serves_ipv4_and_ipv6(serve):
    proc = serve("eventloop", "")
    host, port = proc.address()
    assert host == "::"
    assert echo_once(("127.0.0.1", port), b"v4") == b"v4"
    assert echo_once(("::1", port), b"v6") == b"v6"
    assert proc.stop() == 0


def test_prefork_workers_end_with_a_killed_master(serve):
    proc = serve("prefork", "127.0.0.1")
    assert wait_for(lambda: len(children(proc.pid)) == 2, 10)
    workers = children(proc.pid)
    proc.proc.kill()  # SIGKILL: the master has no chance to stop them
    proc.proc.wait()
    assert wait_for(lambda: all(state(p) in ("gone", "Z") for p in workers), 10), [state(p) for p in workers]


@pytest.mark.parametrize("model", ["thread", "pool"])
def test_a_stop_signal_caught_by_a_worker_thread_still_stops(serve, model):
    import ctypes

    proc = serve(model, "127.0.0.1", "--grace", "1")
    with connect(proc.address()) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"  # a connection thread exists now
        threads = [t for t in _threads(proc.pid) if t != proc.pid and not _blocks(proc.pid, t, signal.SIGTERM)]
        assert threads  # connection or pool threads, which take signals
        # tgkill: SIGTERM to one worker thread, not to the process, so the main thread's poll is not interrupted.
        sys_tgkill = 234 if os.uname().machine == "x86_64" else 131
        assert ctypes.CDLL(None, use_errno=True).syscall(sys_tgkill, proc.pid, threads[0], signal.SIGTERM) == 0
        assert proc.proc.wait(10) == 0


def _threads(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def _blocks(pid: int, tid: int, sig: int) -> bool:
    with open(f"/proc/{pid}/task/{tid}/status") as status:
        lines = status.read().splitlines()
    for line in lines:
        if line.startswith("SigBlk:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False
