"""``fissile timer`` (alias ``tt``): functions run on a cron schedule."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from fissile.cli._output import Column, done, emit, output_option
from fissile.cli._params import spec_options, write_spec
from fissile.client import Client
from fissile.triggers.schedule import Schedule, ScheduleError

COLUMNS: list[Column] = [
    ("NAME", lambda t: t["name"]),
    ("CRON", lambda t: t["cron"]),
    ("TIMEZONE", lambda t: t["timezone"]),
    ("FUNCTION", lambda t: t["function"]),
    ("LAST", lambda t: (t.get("status") or {}).get("last_fired")),
    ("NEXT", lambda t: (t.get("status") or {}).get("next_fire")),
]
FIELDS = ("name", "function", "cron", "timezone", "method", "labels")


@click.group()
def timer() -> None:
    """Timer triggers: run a function on a cron schedule."""


@timer.command()
@click.option("--name", required=True)
@click.option("--function", required=True)
@click.option(
    "--cron",
    required=True,
    help="5 fields, 6 with leading seconds, @hourly..., or '@every 30s'.",
)
@click.option("--timezone", default="UTC", show_default=True, help="IANA zone, e.g. Europe/Paris.")
@click.option(
    "--method", type=click.Choice(["GET", "POST", "PUT"]), default="POST", show_default=True
)
@output_option
@spec_options
def create(
    name: str,
    function: str,
    cron: str,
    timezone: str,
    method: str,
    output: str,
    spec: bool,
    specdir: Path,
) -> None:
    """Run a function on a schedule."""
    body: dict[str, Any] = {
        "name": name,
        "function": function,
        "cron": cron,
        "timezone": timezone,
        "method": method,
    }
    if spec:
        write_spec(specdir, "TimeTrigger", body)
        return
    with Client() as client:
        created = client.create("timetriggers", body)
    if output == "table":
        done(f"timer '{name}' created: {cron} ({timezone}) runs {function}")
    else:
        emit(created, output, COLUMNS)


@timer.command("list")
@click.option("--function", default=None, help="Only timers of this function.")
@output_option
def list_(function: str | None, output: str) -> None:
    """List timers."""
    with Client() as client:
        timers = client.list("timetriggers")
    if function:
        timers = [t for t in timers if t["function"] == function]
    emit(timers, output, COLUMNS)


@timer.command()
@click.option("--name", required=True)
@output_option
def get(name: str, output: str) -> None:
    """Show one timer, with when it last fired and fires next."""
    with Client() as client:
        emit(client.get("timetriggers", name), output, COLUMNS)


@timer.command()
@click.option("--name", required=True)
@click.option("--function", default=None)
@click.option("--cron", default=None)
@click.option("--timezone", default=None)
@click.option("--method", type=click.Choice(["GET", "POST", "PUT"]), default=None)
def update(
    name: str, function: str | None, cron: str | None, timezone: str | None, method: str | None
) -> None:
    """Change a timer."""
    with Client() as client:
        current = client.get("timetriggers", name)
        body = {k: current.get(k) for k in FIELDS}
        changes = {"function": function, "cron": cron, "timezone": timezone, "method": method}
        body.update({k: v for k, v in changes.items() if v is not None})
        client.update("timetriggers", name, body)
    done(f"timer '{name}' updated")


@timer.command()
@click.option("--name", required=True)
def delete(name: str) -> None:
    """Delete a timer."""
    with Client() as client:
        client.delete("timetriggers", name)
    done(f"timer '{name}' deleted")


@timer.command()
@click.option("--cron", required=True)
@click.option("--timezone", default="UTC", show_default=True)
@click.option("--count", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option(
    "--from",
    "start",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"]),
    default=None,
    help="Count from this UTC time [default: now].",
)
def showschedule(cron: str, timezone: str, count: int, start: datetime | None) -> None:
    """Print the next times a cron expression fires (computed here; no platform needed)."""
    try:
        schedule = Schedule(cron, timezone)
    except ScheduleError as exc:
        raise click.BadParameter(str(exc), param_hint="--cron/--timezone") from None
    instant = start.replace(tzinfo=UTC) if start is not None else datetime.now(UTC)
    for slot in schedule.upcoming(instant, count):
        click.echo(slot.astimezone(schedule.zone).isoformat())
