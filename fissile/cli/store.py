"""``fissile store``: operations on a store itself, run beside (not through) the platform."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def store() -> None:
    """Move or inspect the state of a platform (no running platform needed)."""


@store.command()
@click.option("--from", "source", required=True, metavar="URL", help="sqlite:///path/fissile.db")
@click.option("--to", "target", required=True, metavar="URL", help="postgresql://...")
@click.option("--force", is_flag=True, help="Replace what the target holds.")
def migrate(source: str, target: str, force: bool) -> None:
    """Copy a single node's state (every resource and revision, with their generations and
    timestamps) into a PostgreSQL store, in one transaction.

    Stop the platform on the source first. A target that holds anything is refused unless
    --force. Archives and builds stay in the data dir (docs/cluster.md).
    """
    from fissile.store import StoreError
    from fissile.store.transfer import sqlite_to_postgres

    if not source.startswith("sqlite:///"):
        raise click.BadParameter("must be sqlite:///path", param_hint="--from")
    if not target.startswith(("postgresql://", "postgres://")):
        raise click.BadParameter("must be postgresql://...", param_hint="--to")
    try:
        moved = sqlite_to_postgres(Path(source.removeprefix("sqlite://")), target, force=force)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    for kind, count in sorted(moved.resources.items()):
        click.echo(f"{kind}: {count}")
    click.echo(f"revisions: {moved.revisions}")
    click.echo(f"moved {sum(moved.resources.values())} resources and {moved.revisions} revisions")


@store.command()
@click.option(
    "--store", "url", required=True, metavar="URL", help="sqlite:///path or postgresql://..."
)
def schema(url: str) -> None:
    """Show the schema version a store records beside the one this fissile uses, and what
    starting this fissile on it would do. Changes nothing."""
    from fissile.store import StoreError
    from fissile.store import schema as versions

    try:
        if url.startswith("sqlite:///"):
            from fissile.store.sqlite import recorded_version

            found = recorded_version(Path(url.removeprefix("sqlite://")))
        elif url.startswith(("postgresql://", "postgres://")):
            from fissile.store.postgres import recorded_version as recorded_pg_version

            found = recorded_pg_version(url)
        else:
            raise click.BadParameter("must be sqlite:///path or postgresql://...")
    except (StoreError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"store schema version: {found if found else 'none recorded'}")
    click.echo(f"this fissile's: {versions.VERSION}")
    if found > versions.VERSION:
        raise click.ClickException(
            "the store is newer than this fissile, which refuses to start on it: upgrade fissile"
        )
    if found < versions.VERSION:
        click.echo(f"starting this fissile migrates the store to version {versions.VERSION}")
    else:
        click.echo("up to date")
