"""``fissile apikey``: keys for routes with ``--auth apikey`` and for locked function doors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fissile.cli._output import Column, done, emit, output_option
from fissile.cli._params import spec_options, write_spec
from fissile.client import Client

COLUMNS: list[Column] = [
    ("NAME", lambda k: k["name"]),
    ("STARTS", lambda k: (k.get("hint") or "") + "..."),
    ("FUNCTIONS", lambda k: ",".join(k.get("functions") or []) or "(any)"),
    ("RATE", lambda k: k.get("rate") or ""),
]


@click.group()
def apikey() -> None:
    """API keys: callers of routes with --auth apikey (and of locked /function/ doors)."""


@apikey.command()
@click.option("--name", required=True)
@click.option(
    "--function", "functions", multiple=True, help="A function it may call (repeat) [default: any]."
)
@click.option("--rate", default=None, help="Most requests with this key, such as 10/s.")
@click.option("--burst", type=click.IntRange(1), default=None, help="Requests at once.")
@output_option
@spec_options
def create(
    name: str,
    functions: tuple[str, ...],
    rate: str | None,
    burst: int | None,
    output: str,
    spec: bool,
    specdir: Path,
) -> None:
    """Make a key; its value is printed this once (the platform keeps only a hash)."""
    body: dict[str, Any] = {"name": name, "functions": list(functions)}
    if rate is not None:
        body["rate"] = rate
    if burst is not None:
        body["burst"] = burst
    if spec:
        write_spec(specdir, "APIKey", body)
        return
    with Client() as client:
        created = client.create("apikeys", body)
    if output == "table":
        click.echo(created["value"])
        click.echo(
            f"API key '{name}' created: the line above is its value, shown only now;"
            " send it as X-API-Key",
            err=True,
        )
    else:
        emit(created, output, COLUMNS)


@apikey.command("list")
@output_option
def list_(output: str) -> None:
    """List keys (names and first characters, never values)."""
    with Client() as client:
        emit(client.list("apikeys"), output, COLUMNS)


@apikey.command()
@click.option("--name", required=True)
@output_option
def get(name: str, output: str) -> None:
    """Show one key."""
    with Client() as client:
        emit(client.get("apikeys", name), output, COLUMNS)


@apikey.command()
@click.option("--name", required=True)
@click.option("--function", "functions", multiple=True, help="Replace the functions it may call.")
@click.option("--any-function", is_flag=True, help="Let it call any function.")
@click.option("--rate", default=None, help="Set the rate ('' to drop it).")
@click.option("--burst", type=click.IntRange(1), default=None)
def update(
    name: str, functions: tuple[str, ...], any_function: bool, rate: str | None, burst: int | None
) -> None:
    """Change what a key may do (its value stays)."""
    with Client() as client:
        current = client.get("apikeys", name)
        fields = ("name", "functions", "rate", "burst", "labels")
        body: dict[str, Any] = {k: current[k] for k in fields if k in current}
        if functions:
            body["functions"] = list(functions)
        if any_function:
            body["functions"] = []
        if rate is not None:
            body["rate"] = rate or None
            if not rate:
                body["burst"] = None
        if burst is not None:
            body["burst"] = burst
        client.update("apikeys", name, body)
    done(f"API key '{name}' updated")


@apikey.command()
@click.option("--name", required=True)
def delete(name: str) -> None:
    """Delete a key: requests with it are refused at once."""
    with Client() as client:
        client.delete("apikeys", name)
    done(f"API key '{name}' deleted")
