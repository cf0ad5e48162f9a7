"""``fissile mqt`` (alias ``mqtrigger``): functions fed from message-queue topics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fissile.cli._output import Column, done, emit, output_option
from fissile.cli._params import spec_options, write_spec
from fissile.client import Client
from fissile.models import MQTYPES

COLUMNS: list[Column] = [
    ("NAME", lambda t: t["name"]),
    ("MQTYPE", lambda t: t["mqtype"]),
    ("TOPIC", lambda t: t["topic"]),
    ("RESPTOPIC", lambda t: t.get("resptopic")),
    ("ERRORTOPIC", lambda t: t.get("errortopic")),
    ("FUNCTION", lambda t: t["function"]),
    ("STATE", lambda t: (t.get("status") or {}).get("state")),
    ("ERROR", lambda t: (t.get("status") or {}).get("error")),
]
FIELDS = (
    "name",
    "function",
    "mqtype",
    "topic",
    "resptopic",
    "errortopic",
    "maxretries",
    "concurrency",
    "broker_url",
    "labels",
)


@click.group()
def mqt() -> None:
    """Message-queue triggers: each message on a topic becomes a call of a function."""


@mqt.command()
@click.option("--name", required=True)
@click.option("--function", required=True)
@click.option("--mqtype", type=click.Choice(MQTYPES), default="embedded", show_default=True)
@click.option("--topic", required=True)
@click.option("--resptopic", default=None, help="Publish 2xx response bodies here.")
@click.option("--errortopic", default=None, help="Publish messages that failed every try here.")
@click.option("--maxretries", type=click.IntRange(0, 100), default=3, show_default=True)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Messages in flight at once (1 keeps the topic's order).",
)
@click.option("--broker-url", default=None, help="The broker's URL [default: its local default].")
@output_option
@spec_options
def create(output: str, spec: bool, specdir: Path, **options: Any) -> None:
    """Feed a function from a topic."""
    body = {k: v for k, v in options.items() if v is not None}
    if spec:
        write_spec(specdir, "MessageQueueTrigger", body)
        return
    with Client() as client:
        created = client.create("mqtriggers", body)
    if output == "table":
        done(
            f"mq trigger '{created['name']}' created: {created['mqtype']} topic"
            f" {created['topic']} feeds {created['function']}"
        )
    else:
        emit(created, output, COLUMNS)


@mqt.command("list")
@click.option("--function", default=None, help="Only triggers of this function.")
@output_option
def list_(function: str | None, output: str) -> None:
    """List message-queue triggers and their consumers' state."""
    with Client() as client:
        triggers = client.list("mqtriggers")
    if function:
        triggers = [t for t in triggers if t["function"] == function]
    emit(triggers, output, COLUMNS)


@mqt.command()
@click.option("--name", required=True)
@output_option
def get(name: str, output: str) -> None:
    """Show one trigger and its consumer (state, error, counts)."""
    with Client() as client:
        emit(client.get("mqtriggers", name), output, COLUMNS)


@mqt.command()
@click.option("--name", required=True)
@click.option("--function", default=None)
@click.option("--mqtype", type=click.Choice(MQTYPES), default=None)
@click.option("--topic", default=None)
@click.option("--resptopic", default=None)
@click.option("--errortopic", default=None)
@click.option("--maxretries", type=click.IntRange(0, 100), default=None)
@click.option("--concurrency", type=click.IntRange(1, 1000), default=None)
@click.option("--broker-url", default=None)
def update(name: str, **options: Any) -> None:
    """Change a trigger (its consumer restarts)."""
    with Client() as client:
        current = client.get("mqtriggers", name)
        body = {k: current.get(k) for k in FIELDS}
        body.update({k: v for k, v in options.items() if v is not None})
        client.update("mqtriggers", name, body)
    done(f"mq trigger '{name}' updated")


@mqt.command()
@click.option("--name", required=True)
def delete(name: str) -> None:
    """Delete a trigger (its consumer stops)."""
    with Client() as client:
        client.delete("mqtriggers", name)
    done(f"mq trigger '{name}' deleted")
