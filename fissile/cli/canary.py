"""``fissile canary`` (alias ``canary-config``): move a route from one function to another
step by step, rolled back when the new one fails (Fission's CanaryConfig)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fissile._units import format_duration
from fissile.cli._output import Column, done, emit, output_option
from fissile.cli._params import spec_options, write_spec
from fissile.client import Client


def _rate(canary: dict[str, Any]) -> str:
    rate = canary.get("status", {}).get("error_rate")
    return "-" if rate is None else f"{rate:.1f}%"


COLUMNS: list[Column] = [
    ("NAME", lambda c: c["name"]),
    ("TRIGGER", lambda c: c["httptrigger"]),
    ("NEW", lambda c: c["newfunction"]),
    ("OLD", lambda c: c["oldfunction"]),
    ("STEP", lambda c: f"{c['increment_step']}%"),
    ("INTERVAL", lambda c: format_duration(c["increment_interval"])),
    ("THRESHOLD", lambda c: f"{c['failure_threshold']}%"),
    ("STATE", lambda c: c.get("status", {}).get("state")),
    ("WEIGHT", lambda c: f"{c.get('status', {}).get('weight', 0)}%"),
    ("ERRORS", _rate),
    ("MESSAGE", lambda c: c.get("status", {}).get("message") or ""),
]


@click.group()
def canary() -> None:
    """Canaries: shift a route's traffic to a new function step by step."""


def _settings(func: Any) -> Any:
    options = [
        click.option(
            "--increment-step",
            type=click.IntRange(1, 100),
            default=None,
            help="Percent of the traffic moved to the new function each interval [default: 20].",
        ),
        click.option(
            "--increment-interval",
            default=None,
            help="Time between steps, such as 30s, 1m, 2h [default: 2m].",
        ),
        click.option(
            "--failure-threshold",
            type=click.IntRange(0, 100),
            default=None,
            help="Percent of the new function's requests in an interval that may answer 5xx"
            " before it is rolled back [default: 10].",
        ),
        click.option(
            "--failure-type",
            type=click.Choice(["status-code"]),
            default=None,
            help="What counts as a failure: a 5xx status [default: status-code].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _apply(body: dict[str, Any], settings: dict[str, Any]) -> None:
    for key, value in settings.items():
        if value is not None:
            body[key] = value


@canary.command()
@click.option("--name", required=True)
@click.option("--newfunction", required=True, help="The function taking over.")
@click.option("--oldfunction", required=True, help="The function the route serves now.")
@click.option("--httptrigger", required=True, help="The route (HTTP trigger) to move.")
@_settings
@output_option
@spec_options
def create(
    name: str,
    newfunction: str,
    oldfunction: str,
    httptrigger: str,
    output: str,
    spec: bool,
    specdir: Path,
    **settings: Any,
) -> None:
    """Start moving a route from --oldfunction to --newfunction."""
    body: dict[str, Any] = {
        "name": name,
        "newfunction": newfunction,
        "oldfunction": oldfunction,
        "httptrigger": httptrigger,
    }
    _apply(body, settings)
    if spec:
        write_spec(specdir, "CanaryConfig", body)
        return
    with Client() as client:
        created = client.create("canaries", body)
    if output == "table":
        status = created["status"]
        done(
            f"canary '{name}' created: {newfunction} at {status['weight']}%, up"
            f" {created['increment_step']}% every {format_duration(created['increment_interval'])}"
        )
    else:
        emit(created, output, COLUMNS)


@canary.command("list")
@output_option
def list_(output: str) -> None:
    """List canaries, their state and the new function's weight."""
    with Client() as client:
        emit(client.list("canaries"), output, COLUMNS)


@canary.command()
@click.option("--name", required=True)
@output_option
def get(name: str, output: str) -> None:
    """Show one canary: state, weight, the last interval's error rate."""
    with Client() as client:
        emit(client.get("canaries", name), output, COLUMNS)


@canary.command()
@click.option("--name", required=True)
@_settings
def update(name: str, **settings: Any) -> None:
    """Change a canary's step, interval or threshold; it starts over from the route's
    current weights (pending again)."""
    fields = (
        "name",
        "newfunction",
        "oldfunction",
        "httptrigger",
        "increment_step",
        "increment_interval",
        "failure_threshold",
        "failure_type",
        "labels",
    )
    with Client() as client:
        current = client.get("canaries", name)
        body = {k: current[k] for k in fields if k in current}
        _apply(body, settings)
        client.update("canaries", name, body)
    done(f"canary '{name}' updated")


@canary.command()
@click.option("--name", required=True)
def delete(name: str) -> None:
    """Stop and delete a canary; the route keeps the weights it has."""
    with Client() as client:
        client.delete("canaries", name)
    done(f"canary '{name}' deleted")
