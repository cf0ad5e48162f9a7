"""``fissile watch``: functions called with platform events."""

from __future__ import annotations

from pathlib import Path

import click

from fissile.cli._output import Column, done, emit, output_option
from fissile.cli._params import spec_options, write_spec
from fissile.client import Client
from fissile.events import EVENT_TYPES

COLUMNS: list[Column] = [
    ("NAME", lambda t: t["name"]),
    ("EVENT", lambda t: t["event"]),
    ("FUNCTION", lambda t: t["function"]),
]


@click.group()
def watch() -> None:
    """Watch triggers: call a function with platform events (as a JSON body)."""


@watch.command()
@click.option("--name", required=True)
@click.option("--function", required=True)
@click.option(
    "--event",
    required=True,
    help=f"One of {', '.join(EVENT_TYPES)}; or a glob such as function.*",
)
@output_option
@spec_options
def create(name: str, function: str, event: str, output: str, spec: bool, specdir: Path) -> None:
    """Call a function on each platform event of a type."""
    body = {"name": name, "function": function, "event": event}
    if spec:
        write_spec(specdir, "WatchTrigger", body)
        return
    with Client() as client:
        created = client.create("watchtriggers", body)
    if output == "table":
        done(f"watch '{name}' created: {event} calls {function}")
    else:
        emit(created, output, COLUMNS)


@watch.command("list")
@output_option
def list_(output: str) -> None:
    """List watch triggers."""
    with Client() as client:
        emit(client.list("watchtriggers"), output, COLUMNS)


@watch.command()
@click.option("--name", required=True)
@output_option
def get(name: str, output: str) -> None:
    """Show one watch trigger."""
    with Client() as client:
        emit(client.get("watchtriggers", name), output, COLUMNS)


@watch.command()
@click.option("--name", required=True)
@click.option("--function", default=None)
@click.option("--event", default=None)
def update(name: str, function: str | None, event: str | None) -> None:
    """Change a watch trigger."""
    with Client() as client:
        current = client.get("watchtriggers", name)
        body = {k: current.get(k) for k in ("name", "function", "event", "labels")}
        if function:
            body["function"] = function
        if event:
            body["event"] = event
        client.update("watchtriggers", name, body)
    done(f"watch '{name}' updated")


@watch.command()
@click.option("--name", required=True)
def delete(name: str) -> None:
    """Delete a watch trigger."""
    with Client() as client:
        client.delete("watchtriggers", name)
    done(f"watch '{name}' deleted")
