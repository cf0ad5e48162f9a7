"""``fissile env``: environments (a language runtime functions run on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fissile.cli._output import Column, done, emit, output_option
from fissile.cli._params import CONTRACTS, spec_options, write_spec
from fissile.client import Client

COLUMNS: list[Column] = [
    ("NAME", lambda e: e["name"]),
    ("IMAGE", lambda e: e["image"]),
    ("POOLSIZE", lambda e: e["poolsize"]),
    ("PRELOAD", lambda e: e["preload"]),
    ("NETWORK", lambda e: e.get("network")),
    ("CONTRACT", lambda e: e.get("contract", "auto")),
    ("COMMAND", lambda e: e.get("command") or ""),
]
contract_option = click.option(
    "--contract",
    type=click.Choice(CONTRACTS),
    default=None,
    help="How its functions are called unless they say otherwise [default: auto, or what"
    " the image implies: fission/python-fastapi-env is fission-fastapi].",
)
network_option = click.option(
    "--network",
    type=click.Choice(["host", "none"]),
    default=None,
    help="Default network of the environment's functions [default: host].",
)
command_option = click.option(
    "--command",
    default=None,
    help="With --image command: the program each instance runs, in the function's package"
    " (e.g. 'node server.js'); it serves HTTP on the socket it is handed.",
)

_FIELDS = ("name", "image", "poolsize", "preload", "network", "contract", "command", "labels")


def _modules(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [m.strip() for m in value.split(",") if m.strip()]


@click.group()
def env() -> None:
    """Environments: the runtime and preloaded libraries functions run on."""


@env.command()
@click.option("--name", required=True)
@click.option(
    "--image", default="python", show_default=True, help="Runtime image: python, command, binary."
)
@click.option("--poolsize", default=3, show_default=True, type=int, help="Warm instances kept.")
@click.option("--preload", default=None, help="Comma-separated modules the zygote imports once.")
@network_option
@contract_option
@command_option
@output_option
@spec_options
def create(
    name: str,
    image: str,
    poolsize: int,
    preload: str | None,
    network: str | None,
    contract: str | None,
    command: str | None,
    output: str,
    spec: bool,
    specdir: Path,
) -> None:
    """Create an environment."""
    body = {
        "name": name,
        "image": image,
        "poolsize": poolsize,
        "preload": _modules(preload) or [],
        "network": network or "host",
    }
    if contract is not None:
        body["contract"] = contract
    if command is not None:
        body["command"] = command
    if spec:
        write_spec(specdir, "Environment", body)
        return
    with Client() as client:
        created = client.create("environments", body)
    if output == "table":
        done(f"environment '{name}' created")
    else:
        emit(created, output, COLUMNS)


@env.command("list")
@output_option
def list_(output: str) -> None:
    """List environments."""
    with Client() as client:
        emit(client.list("environments"), output, COLUMNS)


@env.command()
@click.option("--name", required=True)
@output_option
def get(name: str, output: str) -> None:
    """Show one environment."""
    with Client() as client:
        emit(client.get("environments", name), output, COLUMNS)


@env.command()
@click.option("--name", required=True)
@click.option("--image", default=None)
@click.option("--poolsize", default=None, type=int)
@click.option("--preload", default=None, help="Comma-separated modules (replaces the list).")
@network_option
@contract_option
@command_option
def update(
    name: str,
    image: str | None,
    poolsize: int | None,
    preload: str | None,
    network: str | None,
    contract: str | None,
    command: str | None,
) -> None:
    """Change an environment; a new image or preload list restarts its instances."""
    with Client() as client:
        current = client.get("environments", name)
        body: dict[str, Any] = {k: current[k] for k in _FIELDS if k in current}
        if image is not None:
            body["image"] = image
            if contract is None and image != current.get("image"):
                body.pop("contract", None)  # the new image's, if it implies one
        if contract is not None:
            body["contract"] = contract
        if poolsize is not None:
            body["poolsize"] = poolsize
        if preload is not None:
            body["preload"] = _modules(preload)
        if network is not None:
            body["network"] = network
        if command is not None:
            body["command"] = command or None
        elif image is not None and image != "command":
            body.pop("command", None)  # only image command has one
        client.update("environments", name, body)
    done(f"environment '{name}' updated")


@env.command()
@click.option("--name", required=True)
def delete(name: str) -> None:
    """Delete an environment no function or package uses."""
    with Client() as client:
        client.delete("environments", name)
    done(f"environment '{name}' deleted")
