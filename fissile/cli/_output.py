"""Printing resources: tables for people, ``-o json`` / ``-o yaml`` for scripts."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click
import yaml

Column = tuple[str, Callable[[dict[str, Any]], Any]]

output_option = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
    help="Output format.",
)


def emit(
    data: dict[str, Any] | list[dict[str, Any]], output: str, columns: Sequence[Column]
) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2, default=str))
    elif output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), nl=False)
    else:
        rows = data if isinstance(data, list) else [data]
        cells = [[header for header, _ in columns]]
        cells += [[_cell(getter(row)) for _, getter in columns] for row in rows]
        # Plain aligned columns, never truncated: names must stay copyable (kubectl's habit).
        widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
        for line in cells:
            click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def done(message: str) -> None:
    click.echo(message)
