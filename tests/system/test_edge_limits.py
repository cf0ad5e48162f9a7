"""The router's request side under abuse (a real ``fissile up``, raw sockets): header floods get
431 at once and cost no lasting memory, silent and slow clients get 408 after the header
timeout, past ``--max-connections`` new connections get 503, and garbage after pipelined
requests gets 400 after their answers -- while a function and the control API keep answering."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from syskit import Platform, Spawn, write

HEADER_TIMEOUT = 2.0
# Generous: the machine running the tests may be loaded.
DEADLINE = 60.0


class Reply:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }

    def error(self) -> str:
        code: str = json.loads(self.body)["error"]["code"]
        return code


def connect(platform: Platform) -> socket.socket:
    return socket.create_connection(("127.0.0.1", platform.port), timeout=DEADLINE)


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the router sends until it closes (each test here ends with a close)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def flood(sock: socket.socket, start: bytes, chunk: bytes, most: int) -> tuple[Reply, int]:
    """Send ``start`` then ``chunk`` over and over (up to ``most`` bytes) until the router
    answers; returns its answer and how much was sent."""
    sock.sendall(start)
    sent = 0
    sock.setblocking(False)
    try:
        while sent < most:
            readable, writable, _ = select.select([sock], [sock], [], DEADLINE)
            if readable:
                break
            if writable:
                try:
                    sent += sock.send(chunk)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    break
    finally:
        sock.setblocking(True)
    return Reply(read_to_end(sock)), sent


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def serving(platform: Platform) -> None:
    """A function and the control API both answer."""
    assert platform.get("/edge-hello", timeout=DEADLINE).text == "hello"
    assert platform.http.get(f"{platform.api_url}/healthz", timeout=DEADLINE).status_code == 200


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("edge")
    running = Platform(root / "data", ("--header-timeout", f"{HEADER_TIMEOUT:g}s")).start()
    try:
        source = write(root / "hello.py", "def main():\n    return 'hello'\n")
        running.ok("fn", "create", "--name", "edge-hello", "--code", str(source))
        running.ok("route", "create", "--function", "edge-hello", "--url", "/edge-hello")
        serving(running)
        yield running
        running.stop_cleanly()
        assert "Traceback" not in running.stderr(), running.stderr()[-5000:]
    finally:
        running.abandon()


def test_header_floods_get_431_at_once_and_leave_no_memory_behind(edge: Platform) -> None:
    for _ in range(20):
        serving(edge)
    before = rss(edge.pid)
    for _ in range(10):
        # Millions of headers: refused at the 101st.
        reply, sent = flood(
            connect(edge), b"GET /edge-hello HTTP/1.1\r\n", b"x: y\r\n" * 20000, 64 << 20
        )
        assert (reply.status, reply.error()) == (431, "too_many_headers")
        assert reply.headers["connection"] == "close"
        assert sent < 8 << 20, sent
        # One 64 MiB header: refused once 64 KiB of it arrived.
        reply, sent = flood(
            connect(edge), b"GET /edge-hello HTTP/1.1\r\nx-huge: ", b"h" * 65536, 64 << 20
        )
        assert (reply.status, reply.error()) == (431, "headers_too_large")
        assert sent < 8 << 20, sent
        # A 64 MiB request target.
        reply, sent = flood(connect(edge), b"GET /edge-hello?", b"u" * 65536, 64 << 20)
        assert (reply.status, reply.error()) == (431, "headers_too_large")
        assert sent < 8 << 20, sent
        serving(edge)
    assert rss(edge.pid) - before < 50 << 20, (before, rss(edge.pid))


def test_idle_connections_are_closed_by_the_header_timeout(edge: Platform) -> None:
    idle = [connect(edge) for _ in range(2000)]
    opened = time.monotonic()
    serving(edge)  # while they are open
    pending = {sock.fileno(): sock for sock in idle}
    replies: dict[int, bytes] = {fd: b"" for fd in pending}
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + DEADLINE
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(1000):
            chunk = pending[fd].recv(65536)
            replies[fd] += chunk
            if not chunk:
                poller.unregister(fd)
                pending.pop(fd).close()
    assert not pending, f"{len(pending)} of 2000 idle connections still open"
    assert time.monotonic() - opened >= HEADER_TIMEOUT * 0.9
    statuses = {Reply(raw).status for raw in replies.values()}
    assert statuses == {408}, statuses
    serving(edge)


def test_a_client_sending_its_head_byte_by_byte_gets_408(edge: Platform) -> None:
    sock = connect(edge)
    started = time.monotonic()
    for byte in b"GET /edge-hello HTTP/1.1\r\nhost: x\r\nx-slow: " + b"s" * 1000:
        if select.select([sock], [], [], 0)[0]:
            break
        sock.sendall(bytes([byte]))
        time.sleep(HEADER_TIMEOUT / 10)
    reply = Reply(read_to_end(sock))
    assert (reply.status, reply.error()) == (408, "header_timeout")
    assert time.monotonic() - started < HEADER_TIMEOUT * 10


def test_the_control_api_is_held_to_the_same_limits(edge: Platform) -> None:
    api = ("127.0.0.1", edge.api_port)
    silent = socket.create_connection(api, timeout=DEADLINE)
    slow = socket.create_connection(api, timeout=DEADLINE)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    many = socket.create_connection(api, timeout=DEADLINE)
    many.sendall(b"GET /healthz HTTP/1.1\r\n" + b"x: y\r\n" * 101 + b"\r\n")
    reply = Reply(read_to_end(many))
    assert (reply.status, reply.error()) == (431, "too_many_headers")
    for sock in (silent, slow):
        reply = Reply(read_to_end(sock))
        assert (reply.status, reply.error()) == (408, "header_timeout")
    serving(edge)


def test_pipelined_requests_then_garbage_get_their_answers_then_400(edge: Platform) -> None:
    sock = connect(edge)
    request = b"GET /edge-hello HTTP/1.1\r\nhost: x\r\n\r\n"
    sock.sendall(request * 3 + b"\x00\x01garbage\r\n\r\n")
    raw = read_to_end(sock)
    assert raw.count(b"HTTP/1.1 200 OK") == 3 and raw.count(b"hello") == 3, raw
    last = Reply(raw[raw.rindex(b"HTTP/1.1 ") :])
    assert (last.status, last.error()) == (400, "bad_request")
    assert raw.index(b"HTTP/1.1 400") > raw.rindex(b"HTTP/1.1 200")


def test_past_max_connections_new_ones_get_503_and_the_api_still_answers(
    spawn: Spawn, tmp_path: Path
) -> None:
    platform = spawn(None, "--max-connections", "50", "--header-timeout", "120s")
    source = write(tmp_path / "hello.py", "def main():\n    return 'hello'\n")
    platform.ok("fn", "create", "--name", "edge-hello", "--code", str(source))
    platform.ok("route", "create", "--function", "edge-hello", "--url", "/edge-hello")
    serving(platform)
    platform.http.close()  # its kept-alive connection would count against the 50
    held = [connect(platform) for _ in range(50)]
    time.sleep(0.5)  # let the router accept them all before the next
    extra = [connect(platform) for _ in range(20)]
    for sock in extra:
        reply = Reply(read_to_end(sock))
        assert (reply.status, reply.error()) == (503, "too_many_connections")
        assert reply.headers["retry-after"] == "1"
    with socket.create_connection(("127.0.0.1", platform.api_port), timeout=DEADLINE) as api:
        api.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert read_to_end(api).startswith(b"HTTP/1.1 200")
    for sock in held:
        sock.close()
    deadline = time.monotonic() + DEADLINE
    while True:
        sock = connect(platform)
        sock.sendall(b"GET /edge-hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        raw = read_to_end(sock)
        if raw.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"hello"), raw
