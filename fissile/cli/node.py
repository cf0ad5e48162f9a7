"""``fissile node``: the nodes of a cluster (``fissile up --cluster``, docs/cluster.md)."""

from __future__ import annotations

from typing import Any

import click

from fissile._units import format_memory
from fissile.cli._output import Column, done, emit, output_option
from fissile.client import Client

COLUMNS: list[Column] = [
    ("NAME", lambda n: n["name"]),
    ("ADDRESS", lambda n: n["address"]),
    ("VERSION", lambda n: n["version"]),
    ("STATE", lambda n: _state(n)),
    ("INSTANCES", lambda n: n["instances"]),
    ("INFLIGHT", lambda n: n["inflight"]),
    ("MEMFREE", lambda n: format_memory(n["memory_free"]) if n["memory_free"] else "-"),
    ("HEARTBEAT", lambda n: f"{n['heartbeat_age']:.1f}s ago"),
]


def _state(node: dict[str, Any]) -> str:
    """A stopped or dead node that will start drained says so."""
    state = str(node["state"])
    if node.get("drained") and state in ("stopped", "dead"):
        return f"{state} (drained)"
    return state


@click.group()
def node() -> None:
    """The nodes of a cluster: their heartbeats, draining one for maintenance, forgetting one
    retired for good."""


@node.command("list")
@output_option
def list_(output: str) -> None:
    """Every node that joined: address, version, state (active, draining, dead, stopped),
    instances, requests in flight, free memory and last heartbeat."""
    with Client() as client:
        emit(client.list("nodes"), output, COLUMNS)


@node.command()
@click.argument("name")
def drain(name: str) -> None:
    """Send no new work to NAME: its router forwards new requests to the other nodes while
    the requests in flight there finish. The drain outlives NAME's restarts until `fissile node
    resume` undoes it."""
    with Client() as client:
        client.node_action(name, "drain")
    done(f"node '{name}' draining: new requests go to the other nodes")


@node.command()
@click.argument("name")
def resume(name: str) -> None:
    """Put a drained node back to work (a stopped one starts active again)."""
    with Client() as client:
        client.node_action(name, "resume")
    done(f"node '{name}' active")


@node.command()
@click.argument("name")
def forget(name: str) -> None:
    """Delete NAME's row, for a node retired for good: it must be stopped or dead (a running
    node is refused). Starting a node under that name later joins it again."""
    with Client() as client:
        client.forget_node(name)
    done(f"node '{name}' forgotten")
