"""Responses under abuse and as a feature, on a real ``fissile up``: an 800 MB body streamed
through the supervisor with its memory bounded, a client that does not read (the instance is
paused, the platform serves on), a body over ``--max-response-body`` (cut, the instance
recycled, noted in ``fn logs``), and functions that stream (generators, server-sent events)."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from syskit import Platform, write

BIG = 800 * 1024 * 1024
# Growth of the supervisor's RSS allowed while a body streams through it (DESIGN: bounded per
# connection, never the body).
RSS_HEADROOM = 100 * 1024 * 1024

CODE = """
import asyncio, time

MiB = 1024 * 1024
produced = 0

def big(request):
    total = int(request.query["mib"])
    block = b"z" * MiB
    return (block for _ in range(total))

async def endless(request):
    global produced
    if request.query.get("produced"):
        return {"produced": produced}
    async def body():
        global produced
        while True:
            produced += 65536
            yield b"e" * 65536
    return body()

def slow(request):
    def body():
        yield "first\\n"
        time.sleep(3)
        yield "second\\n"
    return body()

async def events(request):
    async def body():
        for n in range(3):
            yield f"id: {n}\\ndata: tick {n}\\n\\n"
            await asyncio.sleep(0.5)
    return body(), 200, {"content-type": "text/event-stream", "cache-control": "no-cache"}

def declared(request):
    return b"d" * int(request.query["bytes"])

def hello(request):
    return "hello"
"""


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


class RssSampler:
    """The supervisor's RSS, sampled every 50 ms on a thread while a transfer runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = _rss(pid)
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(_rss(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return max(self.samples) - self.baseline


def _deploy(platform: Platform, directory: Path, name: str, entry: str, *extra: str) -> None:
    source = write(directory / f"{name}.py", CODE)
    platform.ok(
        "fn", "create", "--name", name, "--code", str(source), "--entrypoint", entry, *extra
    )


def _until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def streaming(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    directory = tmp_path_factory.mktemp("streaming")
    _deploy(platform, directory, "stream-big", "big", "--memory", "64Mi", "--timeout", "300s")
    _deploy(
        platform,
        directory,
        "stream-endless",
        "endless",
        "--memory",
        "64Mi",
        "--concurrency",
        "2",
        "--max-scale",
        "1",
        "--timeout",
        "120s",
    )
    _deploy(platform, directory, "stream-slow", "slow")
    _deploy(platform, directory, "stream-events", "events")
    _deploy(platform, directory, "stream-hello", "hello")
    return platform


def _get(platform: Platform, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", platform.port, timeout=300)
    conn.request("GET", path)
    return conn.getresponse()


def test_800_mb_stream_through_a_bounded_supervisor(streaming: Platform) -> None:
    assert streaming.get("/function/stream-big?mib=1").status_code == 200  # warm
    received = 0
    with RssSampler(streaming.pid) as rss:
        response = _get(streaming, f"/function/stream-big?mib={BIG // (1024 * 1024)}")
        assert response.status == 200
        assert response.getheader("transfer-encoding") == "chunked"
        while data := response.read(1 << 20):
            received += len(data)
        response.close()
    assert received == BIG
    assert len(rss.samples) >= 5, rss.samples
    assert rss.growth < RSS_HEADROOM, (rss.baseline, max(rss.samples))


def test_a_client_that_does_not_read_pauses_the_instance(streaming: Platform) -> None:
    def produced() -> int:
        value: int = streaming.get("/function/stream-endless?produced=1").json()["produced"]
        return value

    baseline = _rss(streaming.pid)
    stuck = socket.create_connection(("127.0.0.1", streaming.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        stuck.sendall(b"GET /function/stream-endless HTTP/1.1\r\nhost: stuck\r\n\r\n")
        readings = [produced()]
        while len(readings) < 4 or not readings[-1] or len(set(readings[-4:])) > 1:
            assert len(readings) < 200, readings
            time.sleep(0.25)
            readings.append(produced())
        plateau = readings[-1]
        # Paused: its generator is not advanced and its process uses no CPU.
        [pid] = streaming.json_of("fn", "get", "--name", "stream-endless")["status"]["pids"]
        ticks = _cpu_ticks(pid)
        time.sleep(1.0)
        assert _cpu_ticks(pid) - ticks <= 5  # 50 ms: a couple of `produced` calls, no stream
        assert produced() == plateau
        assert plateau < 32 * 1024 * 1024, readings  # the buffers between, not the body
        assert _rss(streaming.pid) - baseline < 50 * 1024 * 1024
        # A neighbour is served meanwhile.
        assert streaming.get("/function/stream-hello").text == "hello"
        # Reading resumes the instance.
        got = 0
        while got < plateau + 16 * 1024 * 1024:
            got += len(stuck.recv(1 << 20))
        assert produced() > plateau
    finally:
        stuck.close()
    # The client gone, its stream ends and the instance is free again.
    _until(
        lambda: (
            streaming.json_of("fn", "get", "--name", "stream-endless")["status"]["inflight"] == 0
        ),
        30,
        "the instance released",
    )


def test_a_generator_streams_before_the_function_finishes(streaming: Platform) -> None:
    started = time.monotonic()
    with streaming.http.stream("GET", f"{streaming.router_url}/function/stream-slow") as response:
        arrivals = []
        for line in response.iter_lines():
            arrivals.append((line, time.monotonic() - started))
    assert [line for line, _ in arrivals] == ["first", "second"]
    # The function sleeps 3 s between its items: the first arrived long before it finished.
    assert arrivals[1][1] - arrivals[0][1] > 1.5, arrivals
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_server_sent_events_from_a_function(streaming: Platform) -> None:
    url = f"{streaming.router_url}/function/stream-events"
    with streaming.http.stream("GET", url, headers={"accept": "text/event-stream"}) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        events: list[tuple[str, float]] = []
        block: list[str] = []
        for line in response.iter_lines():
            if line:
                block.append(line)
            elif block:
                events.append(("\n".join(block), time.monotonic()))
                block = []
    assert [text for text, _ in events] == [f"id: {n}\ndata: tick {n}" for n in range(3)]
    assert events[2][1] - events[0][1] > 0.5  # one by one, as the function produced them


@pytest.fixture(scope="module")
def capped(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    running = Platform(
        tmp_path_factory.mktemp("capped") / "data", ("--max-response-body", "1Mi")
    ).start()
    try:
        directory = tmp_path_factory.mktemp("capped-code")
        _deploy(running, directory, "capped-big", "big")
        _deploy(running, directory, "capped-declared", "declared")
        yield running
        running.stop_cleanly()
    finally:
        running.abandon()


def test_a_stream_over_max_response_body_is_cut_and_its_instance_recycled(
    capped: Platform,
) -> None:
    assert capped.get("/function/capped-big?mib=0").status_code == 200  # warm
    [pid] = capped.json_of("fn", "get", "--name", "capped-big")["status"]["pids"]
    with socket.create_connection(("127.0.0.1", capped.port), timeout=60) as client:
        client.sendall(b"GET /function/capped-big?mib=8 HTTP/1.1\r\nhost: capped\r\n\r\n")
        raw = b""
        while data := client.recv(1 << 20):
            raw += data
    head, _, body = raw.partition(b"\r\n\r\n")
    # What the client sees: a 200 with a chunked body that stops short, with no terminating
    # zero-length chunk, and the connection closed.
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head
    assert not body.endswith(b"0\r\n\r\n")
    assert len(body) <= 1024 * 1024 + 64 * 1024  # the cap, plus chunk framing
    logs = capped.ok("fn", "logs", "--name", "capped-big").out
    assert "exceeded --max-response-body (1048576 bytes); response cut, instance recycled" in logs
    _until(lambda: not Path(f"/proc/{pid}").exists(), 30, f"instance {pid} ended")
    # The function serves on, from a new instance.
    response = capped.get("/function/capped-big?mib=1")
    assert response.status_code == 200 and len(response.content) == 1024 * 1024


def test_a_declared_length_over_max_response_body_is_a_502(capped: Platform) -> None:
    response = capped.get(f"/function/capped-declared?bytes={2 * 1024 * 1024}")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "response_too_large"
    assert "--max-response-body" in error["message"]
    assert capped.get("/function/capped-declared?bytes=10").content == b"d" * 10
