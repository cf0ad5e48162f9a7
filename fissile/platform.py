"""``fissile up``: one process running the control API, the router, the executor and the
builder on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

import fissile
from fissile.builder import ArchiveStore, Builder
from fissile.builder.sandbox import BuildSandbox
from fissile.config import Config
from fissile.controlplane import Resources, create_api
from fissile.controlplane.app import environment_readiness
from fissile.controlplane.auth import ensure_token
from fissile.controlplane.canaries import Canaries
from fissile.controlplane.caps import Caps
from fissile.controlplane.revisions import Revisions
from fissile.events import EventBus
from fissile.executor import Executor
from fissile.invocations import Invocations, InvocationStore
from fissile.models import EnvironmentSpec, PlatformInfo
from fissile.observability import LogBook, tracing
from fissile.observability.access import AccessLog
from fissile.observability.crashes import CrashLog
from fissile.observability.exposition import Exposition, Sources
from fissile.observability.stats import Stats, pool_gauges
from fissile.router import Router, RouterProtocol
from fissile.router.app import INVOCATION_PREFIX
from fissile.router.bounded import bounded_protocol
from fissile.router.forwarded import TrustedProxies, parse_networks
from fissile.router.front_door import FrontDoor
from fissile.router.internal import PlatformSocketProtocol
from fissile.router.limits import Limits, default_max_connections, raise_fd_limit
from fissile.sandbox import SandboxUnavailable
from fissile.store import AlreadyExists, Store, StoreError, open_store
from fissile.triggers.service import Triggers
from fissile.values.sealing import Sealer

if TYPE_CHECKING:
    from fissile.invocations.pgstore import PostgresInvocationStore
    from fissile.triggers.claims import SharedClaims

logger = logging.getLogger("fissile")

# How long a stopping platform lets in-flight requests finish.
DRAIN_TIMEOUT = 30


class StartupError(Exception):
    pass


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the platform (two servers share it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen for the {what} on {host}:{port}: {exc.strerror}"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class Platform:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping = asyncio.Event()
        self.hurry = asyncio.Event()  # a second signal: stop without waiting for requests
        self._lock: int | None = None
        self.store: Store | None = None
        self.executor: Executor | None = None
        self.builder: Builder | None = None
        self.logs: LogBook | None = None
        self.access_log: AccessLog | None = None
        self.events = EventBus()
        self.invocations: Invocations | None = None
        self.triggers: Triggers | None = None
        self.stats: Stats | None = None
        self.canaries: Canaries | None = None
        self.canary_leader: Any = None  # fissile.cluster.canary_leader.CanaryLeader in a cluster
        self.cluster: Any = None  # fissile.cluster.service.Cluster in cluster mode
        self.rate_sharing: Any = None  # fissile.cluster.ratelimits.RateSharing, likewise
        self._servers: list[_Server] = []
        self._serving: list[asyncio.Task[None]] = []
        self._ready = False

    def ready(self) -> bool:
        # Environments' zygotes are reported one by one by /healthz: one starting must not
        # make the whole platform look down.
        return self._ready

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._signalled)
        try:
            await self.start()
            await self.stopping.wait()
        finally:
            await self.stop()

    def _signalled(self) -> None:
        if self.stopping.is_set():
            self.hurry.set()
        self.stopping.set()

    async def start(self) -> None:
        config = self.config
        if config.otlp_endpoint:
            try:
                tracing.configure(config.otlp_endpoint)
            except tracing.TracingUnavailable as exc:
                raise StartupError(str(exc)) from None
        if config.data_dir.is_dir():
            # Another platform on this data dir is the likelier fault, and it holds the ports
            # too: say so, rather than that a port is taken. (Only an existing data dir can
            # be in use; a new one is made after the ports, so a busy port leaves nothing.)
            self._lock = _lock_data_dir(config)
        if config.tls_cert is not None:
            _check_tls(config.tls_cert, config.tls_key)
        router_sock = _listen(config.host, config.port, "router")
        api_sock = _listen(config.api_host, config.api_port, "control API")
        if self._lock is None:
            self._lock = _lock_data_dir(config)
        try:
            token = ensure_token(config.token_file)
        except OSError as exc:
            raise StartupError(
                f"cannot read or create the API token file {config.token_file}: {exc.strerror}"
            ) from None
        if not token:
            # An empty token would let every request carrying "Bearer " in.
            raise StartupError(f"the API token file {config.token_file} is empty")
        # Secrets' key: a file of its own beside (not in) the database, made on first use.
        sealer = Sealer(config.secrets_key)
        try:
            self.store = store = open_store(config.store)
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        _first_start(store)
        if not config.secrets_key.exists() and store.list("secrets"):
            _say(
                f"WARNING: the secrets key {config.secrets_key} is missing: stored secrets cannot"
                " be opened, and functions using them will not start (restore the key file)"
            )
        self.logs = logs = LogBook(config.logs)
        archives = ArchiveStore(config.archives)
        try:
            self.executor = executor = Executor(
                store,
                config.deploy,
                logs,
                sandbox_mode=config.sandbox,
                data_dir=config.data_dir,
                events=self.events,
                sealer=sealer,
            )
        except SandboxUnavailable as exc:
            raise StartupError(str(exc)) from None
        executor.max_response_body = config.max_response_body
        executor.metrics.enabled = config.metrics
        self.access_log = access_log = AccessLog(
            config.access_log_path,
            config.access_log,  # type: ignore[arg-type]
            invocation_prefix=INVOCATION_PREFIX,
            max_bytes=config.access_log_max_bytes,
            backups=config.access_log_backups,
        )
        await access_log.start()
        sandbox = executor.sandbox
        _say(sandbox.summary())
        if not _loopback(config.api_host):
            _say(
                f"WARNING: the control API listens on {config.api_host}, beyond loopback;"
                " anyone who can reach it and holds the token controls this platform"
            )
        self.builder = builder = Builder(
            store,
            archives,
            config.deploy,
            sandbox=_build_sandbox(executor, config),
            timeout=config.build_timeout,
        )
        shared_mq = _shared_mq(config)
        self.triggers = triggers = Triggers(
            store,
            executor,
            self.events,
            config.data_dir,
            claims=_claims(config),
            shared_mq=shared_mq,
        )
        caps = Caps.of_host(config.max_memory, config.max_cpu, config.max_scale, config.max_timeout)
        revisions = Revisions(store, executor, logs, config.deploy, keep=config.keep_revisions)
        resources = Resources(
            store,
            builder,
            archives,
            executor,
            logs,
            triggers.statuses,
            caps=caps,
            revisions=revisions,
            sealer=sealer,
        )
        self.invocations = invocations = Invocations(
            _invocation_store(config),
            executor,
            self.events,
            retention=config.retention,
        )
        router_limits, side_limits = _limits(config)
        router = Router(
            executor,
            max_body=config.max_body,
            front_door=FrontDoor(invocations),
            limits=router_limits,
            access_log=access_log,
            door=config.function_door,
            token=token,
            trusted=(
                TrustedProxies(parse_networks(config.trusted_proxies))
                if config.trusted_proxies
                else None
            ),
        )
        platform_socket = _listen_unix(executor.platform_socket)
        info = PlatformInfo(
            version=fissile.__version__,
            router_url=config.router_url,
            data_dir=str(config.data_dir),
            sandbox_mode=sandbox.mode,
            sandbox_active=sandbox.active(),
        )
        # What `fissile top` and the dashboard show: windows over the executor's counters.
        self.stats = stats = Stats(executor.metrics, pool_gauges(lambda: executor.functions))
        crashes = CrashLog()
        crashes.follow(self.events)
        api = create_api(
            resources,
            logs,
            info,
            self.ready,
            token=token,
            invocations=invocations,
            brokers=triggers.brokers,
            environments=environment_readiness(executor),
            metrics=Exposition(
                Sources(
                    executor,
                    requests=config.metrics,
                    invocations=invocations,
                    consumers=triggers.consumers,
                    brokers=triggers.brokers,
                    timers=triggers.timers,
                    builder=builder,
                    node=config.node_name if config.cluster else None,
                )
            ),
            metrics_public=config.metrics_public,
            stats=stats,
            crashes=crashes,
            access_log=access_log if access_log.enabled else None,
        )

        from fissile.controlplane.nodes import add_node_routes

        if config.cluster:
            self.cluster = await _join_cluster(config, token, executor)
            router.cluster = self.cluster.peers
            assert shared_mq is not None
            self.rate_sharing = _rate_sharing(config, shared_mq[1])
            router.keys.buckets = self.rate_sharing.limits.bucket  # before router.follow
            executor.fetch_deploy = self.cluster.artifacts.ensure
            # Any node builds any package: sources are offered, copied and fetched; a build
            # runs on the node whose API asked for it, or on one that takes it over.
            builder.fetch_source = self.cluster.sources.ensure
            resources.sources = self.cluster.sources
            builder.node = resources.node = self.cluster.nodes.name
            resources.alive = self.cluster.alive
            self.cluster.adopt = builder.adopt  # also resumes this node's own, at its start
            store.subscribe(builder.changed)
            executor.claim = self.cluster.nodes.claim
            nodes = self.cluster.nodes
            # A drained node takes no new background work: it claims no async invocation,
            # lets the serving nodes claim timer slots and watch events first, and its MQ
            # consumers stop fetching (docs/cluster.md, Draining).
            invocations.paused = lambda: nodes.draining
            if triggers.claims is not None:
                triggers.claims.paused = lambda: nodes.draining
            nodes.drain_followers.append(triggers.consumers.pause)
            triggers.consumers.pause(nodes.draining)
            # Pruned builds take their packed archives along, on every node that holds them.
            revisions.freed = self.cluster.forget_builds
            self.cluster.free = revisions.free
            executor.warm_share = self.cluster.warm_share
            from fissile.cluster.logs import ClusterLogs

            # fn logs reads every node's lines: peers ask this router, the API asks the peers.
            self.cluster.peers.logs = ClusterLogs(self.cluster.nodes, token, logs)
            self.cluster.peers.logs.access = access_log if access_log.enabled else None
            api.state.cluster_logs = self.cluster.peers.logs
            from fissile.cluster.stats import ClusterStats

            # top, fn stats and the dashboard merge every node's windows the same way.
            self.cluster.peers.stats = ClusterStats(self.cluster.nodes, token, stats, crashes)
            api.state.cluster_stats = self.cluster.peers.stats
        add_node_routes(api, self.cluster.nodes if self.cluster is not None else None)

        if self.cluster is None:
            builder.resume()
        revisions.start()  # first: the executor serves each function's newest revision
        # A revision function made for a route that a stop kept from being stored.
        resources.revision_functions.sweep()
        await executor.start()
        await invocations.start()
        stats.start()
        router.follow(store)
        if self.cluster is not None:
            await self._start_cluster(store)
            self.rate_sharing.start()
        triggers.start()
        if config.cluster:
            # One node of the cluster runs the canaries, on every node's counts.
            from fissile.cluster.canary_leader import CanaryLeader

            self.canary_leader = CanaryLeader(config.store, config.node, executor.metrics)
        self.canaries = Canaries(
            store,
            executor.metrics,
            counts=self.canary_leader,
            leading=self.canary_leader is None,
        )
        self.canaries.start()
        if self.canary_leader is not None:
            await self._start_canary_leader()
        servers: list[tuple[Any, socket.socket]] = [
            (router, router_sock),
            (api, api_sock),
            (triggers.socket_app, platform_socket),
        ]
        for app, sock in servers:
            # The router's protocol forwards function calls itself and hands the rest to
            # uvicorn's (fissile/router/protocol.py).
            # The others get uvicorn's, held to the same limits on heads and a cap of their
            # own on connections (fissile/router/bounded.py); the platform socket's also names
            # callers from the peer's credentials.
            protocol: Any = RouterProtocol
            # TLS on the router and the control API, not on the platform socket (local).
            tls: dict[str, Any] = {}
            if config.tls_cert is not None and app is not triggers.socket_app:
                tls = {"ssl_certfile": config.tls_cert, "ssl_keyfile": config.tls_key}
            if app is triggers.socket_app:
                protocol = bounded_protocol(side_limits, PlatformSocketProtocol)
            elif app is not router:
                protocol = bounded_protocol(side_limits)
            server = _Server(
                uvicorn.Config(
                    app,
                    http=protocol,
                    lifespan="off",
                    access_log=False,
                    log_level="warning",
                    server_header=False,
                    date_header=False,
                    timeout_graceful_shutdown=DRAIN_TIMEOUT,
                    # X-Forwarded-* are applied by the router itself, from trusted proxies only
                    # (router/forwarded.py): uvicorn's middleware cost ~1 % of its time.
                    proxy_headers=False,
                    # A float works (it only reaches loop.call_later); uvicorn annotates int.
                    timeout_keep_alive=config.keep_alive_timeout,  # type: ignore[arg-type]
                    **tls,
                )
            )
            self._servers.append(server)
            self._serving.append(asyncio.create_task(server.serve(sockets=[sock])))
        while not all(server.started for server in self._servers):
            await asyncio.sleep(0.01)
        self._ready = True
        self.events.publish(
            "node.started", {"version": fissile.__version__, "router_url": config.router_url}
        )
        _say(
            f"fissile {fissile.__version__}: router {config.router_url},"
            f" control API {'https' if config.tls_cert else 'http'}://{config.api_host}:"
            f"{config.api_port},"
            f" data {config.data_dir}"
        )

    async def _start_cluster(self, store: Store) -> None:
        from fissile.cluster.service import ClusterUnavailable

        try:
            await self.cluster.start(store)
        except ClusterUnavailable as exc:
            raise StartupError(str(exc)) from None

    async def _start_canary_leader(self) -> None:
        import psycopg

        assert self.canaries is not None
        try:
            await self.canary_leader.start(self.canaries)
        except (psycopg.Error, OSError) as exc:
            raise StartupError(f"cannot join the cluster's canary controller: {exc}") from None

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to DRAIN_TIMEOUT, or until a
        second Ctrl-C), then stop builds, instances and zygotes."""
        self._ready = False
        for server in self._servers:
            server.should_exit = True
        if self.invocations is not None:
            self.invocations.close_watchers()
        if self._serving:
            hurry = asyncio.create_task(self.hurry.wait())
            drained = asyncio.create_task(asyncio.wait(self._serving))
            await asyncio.wait(
                [drained, hurry], timeout=DRAIN_TIMEOUT + 1, return_when=asyncio.FIRST_COMPLETED
            )
            hurry.cancel()
            drained.cancel()
            for server in self._servers:
                server.force_exit = True
            await asyncio.wait(self._serving, timeout=2.0)
        if self.stats is not None:
            await self.stats.stop()
        if self.canary_leader is not None:
            await self.canary_leader.stop()
        if self.canaries is not None:
            await self.canaries.stop()
        if self.rate_sharing is not None:
            await self.rate_sharing.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        if self.triggers is not None:
            await self.triggers.stop()
        if self.invocations is not None:
            await self.invocations.stop()
            self.invocations.store.close()
        await self.events.drain()
        if tracing.enabled():
            # The last batch goes out now, off the loop, and never holds the stop for long.
            await asyncio.wait(
                [asyncio.create_task(asyncio.to_thread(tracing.shutdown))], timeout=5
            )
        if self.builder is not None:
            await self.builder.stop()
        if self.executor is not None:
            await self.executor.stop()
        if self.logs is not None:
            self.logs.close()
        if self.access_log is not None:
            await self.access_log.aclose()
        if self.store is not None:
            self.store.close()
        if self._lock is not None:
            os.close(self._lock)


async def _join_cluster(config: Config, token: str, executor: Executor) -> Any:
    """This node's part in the cluster (``fissile/cluster``), once NATS answered."""
    from fissile.cluster.service import Cluster

    assert config.nats_url is not None and config.node_name is not None
    assert config.advertise is not None
    await _check_nats(config.nats_url)
    return Cluster(
        config.store,
        config.node_name,
        config.advertise,
        config.data_dir,
        config.deploy,
        token,
        executor,
        timeout=(config.max_timeout or 3600.0) + 30.0,
        archives=config.archives,
    )


def _rate_sharing(config: Config, namespace: str) -> Any:
    """The routers' rate limits shared over NATS, under the cluster's namespace."""
    from fissile.cluster.ratelimits import RateSharing, subject

    assert config.nats_url is not None and config.node_name is not None
    return RateSharing(config.nats_url, subject(namespace), config.node_name)


async def _check_nats(url: str) -> None:
    """Cluster mode needs NATS: a node that cannot reach it refuses to start, saying so."""
    import nats
    import nats.errors

    from fissile.triggers.mq.base import redact

    failures: list[Exception] = []

    async def remember(exc: Exception) -> None:
        # Instead of the client's own log line (a traceback at every attempt).
        failures.append(exc)

    try:
        # max_reconnect_attempts=0 would mean forever to nats-py: one retry, then give up.
        client = await asyncio.wait_for(
            nats.connect(
                url,
                connect_timeout=5,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=remember,
            ),
            12,
        )
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        cause = failures[-1] if failures else exc
        reason = str(cause) or type(cause).__name__
        raise StartupError(f"cannot reach NATS at {redact(url)}: {reason}") from None
    await client.close()


def _limits(config: Config) -> tuple[Limits, Limits]:
    """The router's limits, and those of the control API and the platform socket (each capped
    at a quarter of the fds the router leaves, at least 64). The fd limit is raised to its hard
    limit first, since every client connection holds an fd; the default connection limit leaves
    the rest to the control API, instances and the store."""
    nofile = raise_fd_limit()
    max_connections = config.max_connections or default_max_connections(nofile)
    if max_connections > nofile:
        _say(
            f"WARNING: --max-connections {max_connections} is above this process's fd limit"
            f" ({nofile}): the control API may be starved of fds when the router is full"
        )
    router = Limits(
        max_header_bytes=config.max_header_bytes,
        max_headers=config.max_headers,
        header_timeout=config.header_timeout,
        max_connections=max_connections,
    )
    side = dataclasses.replace(router, max_connections=max(64, (nofile - max_connections) // 4))
    return router, side


def _build_sandbox(executor: Executor, config: Config) -> BuildSandbox:
    """Builds get the instances' sandbox (less the network namespace), in their cgroups."""
    sandbox = executor.sandbox
    if sandbox.mode == "off":
        return BuildSandbox.unsandboxed("fissile up --sandbox off")
    return BuildSandbox.like_instances(
        sandbox.active(), config.data_dir, config.deploy, executor.cgroups
    )


def _listen_unix(path: Path) -> socket.socket:
    """The platform socket: instances run as other uids, hence 0666 (its directory is the
    executor's, reachable by instances only through their sandbox's bind)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)
    sock.bind(str(path))
    os.chmod(path, 0o666)
    sock.listen(512)
    sock.setblocking(False)
    return sock


def _lock_data_dir(config: Config) -> int:
    """One ``fissile up`` per data dir: two would share the store but not their route tables,
    zygotes or builds."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(config.data_dir, 0o700)
    path = config.data_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise StartupError(
            f"the data dir {config.data_dir} is in use by another fissile up (pid {holder})"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _check_tls(cert: Path, key: Path | None) -> None:
    """A certificate and key that do not load stop the start with why (uvicorn would fail
    later, inside a server's task)."""
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"cannot use --tls-cert {cert} with --tls-key {key}: {exc}") from None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _invocation_store(config: Config) -> InvocationStore | PostgresInvocationStore:
    """In a cluster, async invocations live in PostgreSQL beside the resources, where every
    node can run them; on one node, in the data dir."""
    if not config.shared:
        return InvocationStore(config.invocations_db, config.invocation_bodies)
    from fissile.invocations.pgstore import PostgresInvocationStore

    try:
        return PostgresInvocationStore(config.store, config.node)
    except Exception as exc:
        raise StartupError(f"cannot open the invocation store: {exc}") from None


def _claims(config: Config) -> SharedClaims | None:
    if not config.shared:
        return None
    from fissile.triggers.claims import SharedClaims

    try:
        return SharedClaims(config.store, config.node)
    except Exception as exc:
        raise StartupError(
            f"cannot open the shared timer slots and watch deliveries: {exc}"
        ) from None


def _shared_mq(config: Config) -> tuple[str, str] | None:
    """In a cluster, the embedded MQ type is NATS JetStream under the cluster's prefix."""
    if not config.shared:
        return None
    import psycopg

    from fissile.triggers.mq.base import DEFAULT_URLS
    from fissile.triggers.mq.clustered import namespace

    try:
        with psycopg.connect(config.store, connect_timeout=5) as conn:
            row = conn.execute("SELECT current_database(), current_schema()").fetchone()
    except psycopg.Error as exc:
        raise StartupError(f"cannot name the cluster's topics: {exc}") from None
    assert row is not None
    return (config.nats_url or DEFAULT_URLS["nats"], namespace(row[0], row[1]))


def _first_start(store: Store) -> None:
    """A new data dir gets the built-in ``python`` environment (once: deleting it sticks)."""
    if store.find("meta", "platform") is not None:
        return
    # Nodes sharing a PostgreSQL store may start together: whoever creates first wins.
    with contextlib.suppress(AlreadyExists):
        if store.find("environments", "python") is None:
            store.create(
                "environments", "python", EnvironmentSpec(name="python").model_dump(mode="json")
            )
    with contextlib.suppress(AlreadyExists):
        store.create("meta", "platform", {"initialized_by": fissile.__version__})


def run(config: Config) -> None:
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    platform = Platform(config)
    factory: Any = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(platform.run())
