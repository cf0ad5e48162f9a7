"""Settings of one ``fissile up``: where data lives and where each listener binds."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_data_dir() -> Path:
    """``$FISSILE_DATA_DIR``, else ``$XDG_DATA_HOME/fissile`` (``~/.local/share/fissile``)."""
    explicit = os.environ.get("FISSILE_DATA_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fissile"


@dataclass
class Config:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8080
    api_host: str = "127.0.0.1"
    api_port: int = 8081
    max_body: int = 16 * 1024 * 1024
    log_level: str = "info"
    sandbox: str = "auto"
    retention: float = 24 * 3600.0  # how long finished async invocations are kept
    # Caps on what one function may ask for; None: derived from the host (controlplane/caps.py).
    max_memory: int | None = None
    max_cpu: float | None = None
    max_scale: int | None = None
    max_timeout: float | None = None
    # What one client may hold of the router (fissile/router/limits.py).
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_connections: int | None = None  # None: derived from the fd limit at start
    max_response_body: int = 1 << 30  # largest response body a function may send
    build_timeout: float = 600.0  # a build still running after this long is killed
    keep_revisions: int = 10  # revisions per function that keep their build (for rollbacks)
    metrics: bool = True  # the router counts requests (False: ``fissile up --no-metrics``)
    metrics_public: bool = False  # /metrics answers without the token
    otlp_endpoint: str | None = None  # where spans go over OTLP/HTTP; None: not recorded
    access_log: str = "json"  # json, text or off (fissile/observability/access.py)
    access_log_file: Path | None = None  # None: access.log in the logs dir
    access_log_max_bytes: int = 10 * 1024 * 1024  # rotated when it would pass this size
    access_log_backups: int = 5  # rotated files kept (access.log.1 the newest)
    # The edge (docs/security.md): who may call functions by name, which peers' X-Forwarded-*
    # headers count, and TLS for the router and the control API.
    function_door: str = "auto"
    trusted_proxies: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    secrets_key_file: Path | None = None  # None: keys/secrets.key in the data dir
    store_url: str | None = None  # None: the SQLite file in the data dir (``store``)
    api_token_file: Path | None = None  # None: api-token in the data dir
    # Cluster mode (docs/cluster.md): nodes sharing a PostgreSQL store.
    cluster: bool = False
    # NATS of a cluster: where the embedded MQ type lives there; None: NATS on loopback.
    nats_url: str | None = None
    # This node's name (`--node-name`; in cluster mode the host's name by default); None: the
    # host name and process id, for a single node on a PostgreSQL store.
    node_name: str | None = None
    advertise: str | None = None  # host:port peers reach this node's router at

    @property
    def shared(self) -> bool:
        """State, async invocations and timer slots are shared in PostgreSQL (a PostgreSQL
        store, with or without ``--cluster``)."""
        return self.store.split("://", 1)[0] in ("postgresql", "postgres")

    @property
    def node(self) -> str:
        if self.node_name:
            return self.node_name
        import socket

        return f"{socket.gethostname()}-{os.getpid()}"

    @property
    def invocations_db(self) -> Path:
        return self.data_dir / "invocations.db"

    @property
    def invocation_bodies(self) -> Path:
        return self.data_dir / "invocations"

    @property
    def database(self) -> Path:
        return self.data_dir / "fissile.db"

    @property
    def store(self) -> str:
        """Where resources live: ``--store``, else the SQLite file in the data dir."""
        return self.store_url or f"sqlite://{self.database}"

    @property
    def archives(self) -> Path:
        return self.data_dir / "archives"

    @property
    def deploy(self) -> Path:
        return self.data_dir / "deploy"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def access_log_path(self) -> Path:
        return self.access_log_file or self.logs / "access.log"

    @property
    def secrets_key(self) -> Path:
        """The key secrets are sealed with: never in the database (fissile/values/sealing.py)."""
        return self.secrets_key_file or self.data_dir / "keys" / "secrets.key"

    @property
    def token_file(self) -> Path:
        return self.api_token_file or self.data_dir / "api-token"

    @property
    def router_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.tls_cert is not None else "http"
        return f"{scheme}://{host}:{self.port}"
