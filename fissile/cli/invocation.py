"""``fissile invocation``: asynchronous invocations — look one up, list, wait, cancel."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from fissile.cli._output import Column, emit, output_option
from fissile.cli._params import DURATION
from fissile.client import Client, ClientError

COLUMNS: list[Column] = [
    ("ID", lambda i: i["id"]),
    ("FUNCTION", lambda i: i["function"]),
    ("STATUS", lambda i: i["status"]),
    ("ATTEMPTS", lambda i: f"{i['attempts']}/{i['max_attempts']}"),
    ("HTTP", lambda i: (i.get("response") or {}).get("status")),
    ("CREATED", lambda i: i["created_at"]),
    ("DURATION", lambda i: None if i["duration_ms"] is None else f"{i['duration_ms']:.1f}ms"),
    ("ERROR", lambda i: i.get("error")),
]

# Spelled out rather than imported: the CLI stays clear of the platform's modules.
_STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled", "dead")
_FINAL = set(_STATUSES[2:])


@click.group()
def invocation() -> None:
    """Asynchronous invocations (POST /async-function/NAME, or Prefer: respond-async)."""


@invocation.command()
@click.argument("invocation_id")
@output_option
def get(invocation_id: str, output: str) -> None:
    """Show one invocation: status, attempts, timings, response or error."""
    with Client() as client:
        found = client.invocation(invocation_id)
    if output != "table":
        emit(found, output, COLUMNS)
        return
    _describe(found)


@invocation.command("list")
@click.option("--status", type=click.Choice(_STATUSES), default=None)
@click.option("--function", default=None, help="Only this function's invocations.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@output_option
def list_(status: str | None, function: str | None, limit: int, output: str) -> None:
    """List invocations, newest first (``--status dead`` lists the dead letters)."""
    with Client() as client:
        emit(client.invocations(status, function, limit), output, COLUMNS)


@invocation.command()
@click.argument("invocation_id")
@click.option("--timeout", type=DURATION, default=300.0, show_default=True)
@output_option
def wait(invocation_id: str, timeout: float, output: str) -> None:
    """Wait until an invocation finishes; exit 0 only if it succeeded."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    with Client() as client:
        while True:
            found = client.invocation(invocation_id)
            if found["status"] in _FINAL:
                break
            if time.monotonic() > deadline:
                raise ClientError(
                    f"invocation {invocation_id} is still {found['status']} after {timeout:g}s"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
    if output != "table":
        emit(found, output, COLUMNS)
    else:
        _describe(found)
    if found["status"] != "succeeded":
        sys.exit(1)


@invocation.command()
@click.argument("invocation_id")
def cancel(invocation_id: str) -> None:
    """Cancel a queued invocation, or stop a running one (its instance is killed)."""
    with Client() as client:
        client.cancel_invocation(invocation_id)
    click.echo(f"invocation {invocation_id} cancelled")


def _describe(found: dict[str, Any]) -> None:
    response = found.get("response")
    rows = [
        ("ID", found["id"]),
        ("Function", found["function"]),
        ("Status", found["status"]),
        ("Attempts", f"{found['attempts']} of {found['max_attempts']}"),
        ("Request", f"{found['method']} {found['path']}"),
        ("Created", found["created_at"]),
        ("Started", found["started_at"] or "-"),
        ("Finished", found["finished_at"] or "-"),
        ("Duration", "-" if found["duration_ms"] is None else f"{found['duration_ms']:.1f} ms"),
        ("Error", found.get("error") or "-"),
        ("Response", "-" if response is None else f"HTTP {response['status']}"),
    ]
    callback = found.get("callback")
    if callback:
        rows.append(
            (
                "Callback",
                f"{callback['url']} ({callback['state']}, {callback['attempts']} attempts)"
                + (f": {callback['error']}" if callback.get("error") else ""),
            )
        )
    for key, value in rows:
        click.echo(f"{key + ':':<10}{value}")
    if response is not None and response["body"]:
        click.echo("")
        body = response["body"]
        if response["body_encoding"] == "base64":
            click.echo(f"(body, base64) {body}")
        else:
            click.echo(body.rstrip("\n"))
