"""``fissile up``: run the whole platform in the foreground."""

from __future__ import annotations

from pathlib import Path

import click

from fissile._units import format_memory
from fissile.cli._params import DURATION, MEMORY
from fissile.config import Config, default_data_dir
from fissile.models import MIN_MEMORY


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State, archives, builds and logs. [default: $FISSILE_DATA_DIR or ~/.local/share/fissile]",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Router address.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-host", default="127.0.0.1", show_default=True, help="Control API address.")
@click.option("--api-port", default=8081, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--max-body", default="16Mi", show_default=True, type=MEMORY, help="Largest request body."
)
@click.option(
    "--sandbox",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "strict", "off"]),
    help="auto: every isolation layer this host allows; strict: refuse to start without all.",
)
@click.option(
    "--retention",
    default="24h",
    show_default=True,
    type=DURATION,
    help="How long finished asynchronous invocations are kept.",
)
@click.option(
    "--max-memory",
    type=MEMORY,
    default=None,
    help="Most memory one function may ask for. [default: the host's memory]",
)
@click.option(
    "--max-cpu",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Most CPU cores one function may ask for. [default: the host's cores]",
)
@click.option(
    "--max-scale-limit",
    type=click.IntRange(min=1),
    default=None,
    help="Highest max_scale a function may ask for. [default: 100]",
)
@click.option(
    "--max-timeout",
    type=DURATION,
    default=None,
    help="Longest timeout a function may ask for. [default: 1h]",
)
@click.option(
    "--max-response-body",
    default="1Gi",
    show_default=True,
    type=MEMORY,
    help="Largest response body a function may send; past it the response is cut.",
)
@click.option(
    "--build-timeout",
    default="10m",
    show_default=True,
    type=DURATION,
    help="A package build still running after this long is killed, with every process it started.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--max-header-bytes",
    default="64Ki",
    show_default=True,
    type=MEMORY,
    help="Largest request target plus headers (431 past it).",
)
@click.option(
    "--max-headers",
    default=100,
    show_default=True,
    type=click.IntRange(1),
    help="Most request headers (431 past it).",
)
@click.option(
    "--header-timeout",
    default="10s",
    show_default=True,
    type=DURATION,
    help="Time a client has to send a request's head, from connecting or from its first byte"
    " (408 past it).",
)
@click.option(
    "--keep-alive-timeout",
    default="5s",
    show_default=True,
    type=DURATION,
    help="How long an idle keep-alive connection stays open.",
)
@click.option(
    "--max-connections",
    default=None,
    type=click.IntRange(1),
    help="Open client connections to the router (503 past it)."
    " [default: the fd limit less a quarter of it (at least 1024 of 2048 or more),"
    " at most 65536]",
)
@click.option(
    "--metrics-public",
    is_flag=True,
    help="Serve the control API's /metrics without the token (for a scraper on loopback).",
)
@click.option(
    "--otlp-endpoint",
    default=None,
    metavar="URL",
    help="Export a span per hop (router to function, async attempts, MQ deliveries,"
    " context.invoke calls) to this OpenTelemetry collector over OTLP/HTTP, e.g."
    " http://127.0.0.1:4318 (needs the otlp extra). [default: off]",
)
@click.option(
    "--access-log",
    "access_log",
    default="json",
    show_default=True,
    type=click.Choice(["json", "text", "off"]),
    help="One line per router request in <data dir>/logs/access.log (rotated by size);"
    " also kept in memory for `fissile fn logs --requests`.",
)
@click.option(
    "--access-log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the access log here instead. [default: <data dir>/logs/access.log]",
)
@click.option(
    "--access-log-max-bytes",
    default="10Mi",
    show_default=True,
    type=MEMORY,
    help="Rotate the access log when it would pass this size (at least 64Ki).",
)
@click.option(
    "--access-log-backups",
    default=5,
    show_default=True,
    type=click.IntRange(0, 1000),
    help="Rotated access logs kept (access.log.1 the newest); 0: the log starts over.",
)
@click.option(
    "--secrets-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="FISSILE_SECRETS_KEY_FILE",
    default=None,
    help="The key secrets are encrypted with, made (0600) if missing; keep it on another disk"
    " than the data dir to keep backups of the data dir useless without it."
    " [env: FISSILE_SECRETS_KEY_FILE; default: <data dir>/keys/secrets.key]",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="FISSILE_TOKEN_FILE",
    default=None,
    help="The control API's bearer token, made (0600) if missing; for a token the operator"
    " provides (a systemd credential, a Kubernetes Secret). The CLI reads the same variable."
    " [env: FISSILE_TOKEN_FILE; default: <data dir>/api-token]",
)
@click.option(
    "--keep-revisions",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Revisions per function that keep their build, so `fn rollback` can return to them;"
    " older ones are pruned and their builds deleted.",
)
@click.option(
    "--store",
    "store_url",
    default=None,
    metavar="URL",
    envvar="FISSILE_STORE",
    help="Where resources and revisions live: sqlite:///path/fissile.db or"
    " postgresql://user@host:5432/db (state shared by the nodes of a cluster, docs/cluster.md)."
    " [env: FISSILE_STORE; default: sqlite://<data dir>/fissile.db]",
)
@click.option(
    "--metrics/--no-metrics",
    default=True,
    show_default=True,
    help="Count every request into its function's metrics (/metrics, fissile top).",
)
@click.option(
    "--function-door",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "open", "token", "off"]),
    help="Calls by name (/function/<name>, /async-function/<name>). auto: open, but a function"
    " with a route asking for credentials or a signature needs the platform token or an API"
    " key; open: open to anyone; token: the platform token or an API key; off: the platform"
    " token only (fn test, the dashboard).",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    metavar="CIDR",
    help="Honour X-Forwarded-Proto/Host/For/Prefix from these addresses only (repeat).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Serve the router and the control API over TLS with this PEM certificate (chain).",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="The certificate's PEM private key.",
)
@click.option(
    "--cluster",
    is_flag=True,
    help="Run as a node of a cluster (docs/cluster.md): needs --store postgresql://... and --nats.",
)
@click.option(
    "--nats",
    "nats_url",
    default=None,
    metavar="URL",
    envvar="FISSILE_NATS",
    help="The NATS server of the cluster, nats://host:4222. [env: FISSILE_NATS]",
)
@click.option(
    "--node-name",
    default=None,
    envvar="FISSILE_NODE_NAME",
    help="This node's name in the cluster, unique. [env: FISSILE_NODE_NAME; default: the"
    " host's name]",
)
@click.option(
    "--advertise",
    default=None,
    metavar="HOST:PORT",
    help="Where the other nodes reach this node's router. [default: --host:--port, or this"
    " host's name for 0.0.0.0]",
)
def up(
    data_dir: Path | None,
    host: str,
    port: int,
    api_host: str,
    api_port: int,
    max_body: int,
    sandbox: str,
    retention: float,
    max_memory: int | None,
    max_cpu: float | None,
    max_scale_limit: int | None,
    max_timeout: float | None,
    max_response_body: int,
    build_timeout: float,
    log_level: str,
    max_header_bytes: int,
    max_headers: int,
    header_timeout: float,
    keep_alive_timeout: float,
    max_connections: int | None,
    metrics_public: bool,
    otlp_endpoint: str | None,
    access_log: str,
    access_log_file: Path | None,
    access_log_max_bytes: int,
    access_log_backups: int,
    secrets_key_file: Path | None,
    token_file: Path | None,
    metrics: bool,
    function_door: str,
    trusted_proxies: tuple[str, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    keep_revisions: int,
    store_url: str | None,
    cluster: bool,
    nats_url: str | None,
    node_name: str | None,
    advertise: str | None,
) -> None:
    """Run the router, control API, executor and builder until Ctrl-C or SIGTERM."""
    from fissile.platform import StartupError, run

    if retention < 1:
        # Shorter, a finished record would be gone before its caller could read it.
        raise click.BadParameter("must be at least 1s", param_hint="--retention")
    for hint, value in (
        ("--header-timeout", header_timeout),
        ("--keep-alive-timeout", keep_alive_timeout),
    ):
        if value < 0.1:
            raise click.BadParameter("must be at least 0.1s", param_hint=hint)
    if max_header_bytes < 1024:
        raise click.BadParameter("must be at least 1Ki", param_hint="--max-header-bytes")
    if access_log_max_bytes < 64 * 1024:
        raise click.BadParameter("must be at least 64Ki", param_hint="--access-log-max-bytes")

    if max_timeout is not None and max_timeout <= 0:
        raise click.BadParameter("must be more than 0s", param_hint="--max-timeout")
    if max_memory is not None and max_memory < MIN_MEMORY:
        raise click.BadParameter(
            f"must be at least {format_memory(MIN_MEMORY)}, the least a function may have",
            param_hint="--max-memory",
        )
    if build_timeout < 1:
        raise click.BadParameter("must be at least 1s", param_hint="--build-timeout")
    if otlp_endpoint is not None and not otlp_endpoint.startswith(("http://", "https://")):
        raise click.BadParameter("must be an http:// or https:// URL", param_hint="--otlp-endpoint")
    if store_url is not None and not store_url.startswith(
        ("sqlite:///", "postgresql://", "postgres://")
    ):
        raise click.BadParameter("must be sqlite:///path or postgresql://...", param_hint="--store")

    if cluster:
        node_name, advertise = _cluster_options(
            store_url, nats_url, node_name, advertise, host, port, tls_cert
        )
    elif nats_url or node_name or advertise:
        raise click.UsageError("--nats, --node-name and --advertise need --cluster")

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("give --tls-cert and --tls-key together")
    from fissile.router.forwarded import parse_networks

    try:
        parse_networks(trusted_proxies)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--trusted-proxy") from None

    config = Config(
        data_dir=data_dir or default_data_dir(),
        host=host,
        port=port,
        api_host=api_host,
        api_port=api_port,
        max_body=max_body,
        log_level=log_level,
        sandbox=sandbox,
        retention=retention,
        max_memory=max_memory,
        max_cpu=max_cpu,
        max_scale=max_scale_limit,
        max_timeout=max_timeout,
        max_header_bytes=max_header_bytes,
        max_headers=max_headers,
        header_timeout=header_timeout,
        keep_alive_timeout=keep_alive_timeout,
        max_connections=max_connections,
        max_response_body=max_response_body,
        build_timeout=build_timeout,
        metrics_public=metrics_public,
        otlp_endpoint=otlp_endpoint,
        metrics=metrics,
        access_log=access_log,
        access_log_file=access_log_file,
        access_log_max_bytes=access_log_max_bytes,
        access_log_backups=access_log_backups,
        function_door=function_door,
        trusted_proxies=trusted_proxies,
        tls_cert=tls_cert,
        tls_key=tls_key,
        secrets_key_file=secrets_key_file,
        api_token_file=token_file,
        keep_revisions=keep_revisions,
        store_url=store_url,
        cluster=cluster,
        nats_url=nats_url,
        node_name=node_name,
        advertise=advertise,
    )
    try:
        run(config)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None


def _cluster_options(
    store_url: str | None,
    nats_url: str | None,
    node_name: str | None,
    advertise: str | None,
    host: str,
    port: int,
    tls_cert: Path | None,
) -> tuple[str, str]:
    """Check cluster mode's flags; this node's name and advertised address."""
    import re
    import socket

    if store_url is None or not store_url.startswith(("postgresql://", "postgres://")):
        raise click.UsageError("--cluster needs --store postgresql://... (the state nodes share)")
    if nats_url is None:
        raise click.UsageError("--cluster needs --nats nats://host:port")
    if not nats_url.startswith(("nats://", "tls://")):
        raise click.BadParameter("must be a nats:// URL", param_hint="--nats")
    if tls_cert is not None:
        # Peers forward to each other's routers over plain HTTP today.
        raise click.UsageError("--cluster does not support --tls-cert yet")
    name = node_name or socket.gethostname()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", name):
        raise click.BadParameter(
            "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
            param_hint="--node-name",
        )
    if advertise is None:
        reachable = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
        advertise = f"[{reachable}]:{port}" if ":" in reachable else f"{reachable}:{port}"
    address, _, advertised_port = advertise.rpartition(":")
    if not address or not advertised_port.isdigit() or not 0 < int(advertised_port) < 65536:
        raise click.BadParameter("must be HOST:PORT", param_hint="--advertise")
    return name, advertise
