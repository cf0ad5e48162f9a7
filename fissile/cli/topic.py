"""``fissile topic``: publish to and read from a broker's topics through the platform."""

from __future__ import annotations

import base64
import sys

import click

from fissile.cli._output import done, emit, output_option
from fissile.cli._params import DURATION
from fissile.client import Client
from fissile.models import MQTYPES


@click.group()
def topic() -> None:
    """Topics of the brokers the platform reaches."""


@topic.command()
@click.option("--mqtype", type=click.Choice(MQTYPES), default="embedded", show_default=True)
@click.option("--topic", "name", required=True)
@click.option("--body", default=None, help="The message [default: read from stdin].")
@click.option("--content-type", default=None, help="Sent as the message's content-type header.")
@click.option("--broker-url", default=None, help="The broker's URL [default: its local default].")
def publish(
    mqtype: str,
    name: str,
    body: str | None,
    content_type: str | None,
    broker_url: str | None,
) -> None:
    """Publish one message."""
    data = body.encode() if body is not None else sys.stdin.buffer.read()
    with Client() as client:
        client.publish(name, data, mqtype=mqtype, broker_url=broker_url, content_type=content_type)
    done(f"published {len(data)} bytes to {mqtype} topic {name!r}")


@topic.command()
@click.option("--mqtype", type=click.Choice(MQTYPES), default="embedded", show_default=True)
@click.option("--topic", "name", required=True)
@click.option(
    "--group",
    default="fissile-cli",
    show_default=True,
    help="The consumer group to read as: it remembers what it has read.",
)
@click.option("--count", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--wait", type=DURATION, default=1.0, help="How long to wait for a first message.")
@click.option("--broker-url", default=None, help="The broker's URL [default: its local default].")
@output_option
def consume(
    mqtype: str,
    name: str,
    group: str,
    count: int,
    wait: float,
    broker_url: str | None,
    output: str,
) -> None:
    """Read (and acknowledge) up to COUNT messages as a consumer group, e.g. to look at a
    response or error topic. Each group reads every message once."""
    with Client() as client:
        messages = client.consume(
            name, mqtype=mqtype, broker_url=broker_url, group=group, count=count, wait=wait
        )
    if output != "table":
        emit(messages, output, [])
        return
    for message in messages:
        body = base64.b64decode(message["body_base64"])
        click.echo(body.decode("utf-8", "replace") if _printable(body) else f"<{len(body)} bytes>")


def _printable(body: bytes) -> bool:
    try:
        return body.decode("utf-8").isprintable() or b"\n" in body
    except UnicodeDecodeError:
        return False
