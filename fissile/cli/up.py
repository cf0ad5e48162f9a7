"""``fissile up``: run the whole platform in the foreground."""

from __future__ import annotations

from pathlib import Path

import click

from fissile.cli._params import DURATION, MEMORY
from fissile.config import Config, default_data_dir


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
def up(
    data_dir: Path | None,
    host: str,
    port: int,
    api_host: str,
    api_port: int,
    max_body: int,
    sandbox: str,
    retention: float,
    build_timeout: float,
    log_level: str,
) -> None:
    """Run the router, control API, executor and builder until Ctrl-C or SIGTERM."""
    from fissile.platform import StartupError, run

    if retention < 1:
        # Shorter, a finished record would be gone before its caller could read it.
        raise click.BadParameter("must be at least 1s", param_hint="--retention")
    if build_timeout < 1:
        raise click.BadParameter("must be at least 1s", param_hint="--build-timeout")

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
        build_timeout=build_timeout,
    )
    try:
        run(config)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None
