"""``fissile topic``: publish messages to a broker's topic through the platform."""

from __future__ import annotations

import sys

import click

from fissile.cli._output import done
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
