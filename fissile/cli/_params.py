"""Shared option types and helpers of the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fissile._units import parse_duration, parse_memory
from fissile.builder.archive import ArchiveError, zip_path
from fissile.client import Client
from fissile.specs.write import save


class DurationType(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class MemoryType(click.ParamType):  # type: ignore[type-arg]
    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return parse_memory(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


# models.Contract's values (tests/unit/test_cli_fn.py checks), without importing pydantic.
CONTRACTS = (
    "auto",
    "native",
    "fission",
    "fission-fastapi",
    "lambda",
    "lambda-v1",
    "gcf",
    "openfaas-http",
    "openfaas-flask",
    "asgi",
    "wsgi",
)

DURATION = DurationType()
MEMORY = MemoryType()


def key_values(pairs: tuple[str, ...], what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=what)
        result[key] = value
    return result


def upload_source(client: Client, source: str) -> str:
    """Upload a file, directory or zip as a source archive; returns its sha256."""
    path = Path(source)
    if not path.exists():
        raise click.BadParameter(f"{source} does not exist", param_hint="--src/--code")
    try:
        data = path.read_bytes() if path.is_file() and path.suffix == ".zip" else zip_path(path)
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    sha: str = client.upload_archive(data)["sha256"]
    return sha


def spec_options(func: Any) -> Any:
    """``--spec``: write the resource into the spec directory instead of creating it."""
    func = click.option(
        "--specdir",
        default="specs",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Spec directory for --spec.",
    )(func)
    return click.option(
        "--spec", is_flag=True, help="Write a spec file (specs/<kind>-<name>.yaml) instead."
    )(func)


def write_spec(specdir: Path, kind: str, fields: dict[str, Any]) -> None:
    try:
        path = save(specdir, kind, fields)
    except FileExistsError as exc:
        raise click.ClickException(f"{exc.filename} already exists") from None
    click.echo(f"wrote {path}")
