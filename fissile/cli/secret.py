"""``fissile secret`` and ``fissile configmap``: named sets of key/value pairs that functions
read as files (``/secrets/...``, ``/configs/...``) or env vars. A secret's values go in and
never come back out: reads show keys and sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fissile.cli._output import Column, done, emit, output_option
from fissile.cli._params import spec_options, write_spec
from fissile.client import Client, ClientError
from fissile.specs.write import relative_source
from fissile.values.sources import (
    SourceError,
    check_key,
    from_file,
    parse_env_file,
    read_text,
)

LIST_COLUMNS: list[Column] = [
    ("NAME", lambda r: r["name"]),
    ("KEYS", lambda r: [k["key"] for k in r.get("keys", [])]),
    ("UPDATED", lambda r: r.get("updated_at")),
]
KEY_COLUMNS: list[Column] = [
    ("KEY", lambda k: k["key"]),
    ("SIZE", lambda k: f"{k['size']} bytes"),
]


def _source_options(func: Any) -> Any:
    options = [
        click.option("--from-literal", "literals", multiple=True, help="KEY=VALUE (repeat)."),
        click.option(
            "--from-file",
            "files",
            multiple=True,
            help="KEY=PATH, or PATH (the key is the file's name) (repeat).",
        ),
        click.option(
            "--from-env-file",
            "env_files",
            multiple=True,
            type=click.Path(dir_okay=False, path_type=Path),
            help="A file of KEY=VALUE lines (repeat).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _values(
    literals: tuple[str, ...], files: tuple[str, ...], env_files: tuple[Path, ...]
) -> dict[str, str]:
    values: dict[str, str] = {}

    def put(key: str, value: str, where: str) -> None:
        if key in values:
            raise SourceError(f"{where}: key {key!r} is given twice")
        values[key] = value

    for env_file in env_files:
        for key, value in parse_env_file(env_file).items():
            put(key, value, "--from-env-file")
    for literal in literals:
        key, sep, value = literal.partition("=")
        if not sep:
            raise SourceError(f"--from-literal: {literal!r} is not KEY=VALUE")
        put(check_key(key, "--from-literal"), value, "--from-literal")
    for spec in files:
        key, path = from_file(spec)
        put(key, read_text(path, "--from-file"), "--from-file")
    return values


def _spec_data(
    sealed: bool,
    literals: tuple[str, ...],
    files: tuple[str, ...],
    env_files: tuple[Path, ...],
    specdir: Path,
) -> dict[str, Any]:
    """A spec document's fields for these sources: files stay files (a secret's value is never
    written into a spec), a config map's literals are written as they are."""
    fields: dict[str, Any] = {}
    data: dict[str, Any] = {}
    if literals and sealed:
        raise SourceError(
            "--spec would write a --from-literal value into the spec file; put the value in a"
            " file (--from-file, --from-env-file) kept out of version control"
        )
    for literal in literals:
        key, sep, value = literal.partition("=")
        if not sep:
            raise SourceError(f"--from-literal: {literal!r} is not KEY=VALUE")
        data[check_key(key, "--from-literal")] = value
    for spec in files:
        key, path = from_file(spec)
        read_text(path, "--from-file")  # it must exist now, as it must at apply
        data[key] = {"fromFile": relative_source(specdir, str(path))}
    if env_files:
        for env_file in env_files:
            parse_env_file(env_file)
        fields["envFiles"] = [relative_source(specdir, str(p)) for p in env_files]
    if data:
        fields["data"] = data
    return fields


def _group(kind: str, singular: str, spec_kind: str, mount: str) -> click.Group:
    sealed = kind == "secrets"

    @click.group(name=singular.replace(" ", ""))
    def group() -> None:
        pass

    group.help = (
        f"{spec_kind}s: key/value pairs functions read as files ({mount}/<namespace>/<name>/"
        "<key>)" + (" or env vars; their values are never shown." if sealed else ".")
    )

    @group.command(help=f"Create a {singular}.")
    @click.option("--name", required=True)
    @_source_options
    @output_option
    @spec_options
    def create(
        name: str,
        literals: tuple[str, ...],
        files: tuple[str, ...],
        env_files: tuple[Path, ...],
        output: str,
        spec: bool,
        specdir: Path,
    ) -> None:
        try:
            if spec:
                fields = _spec_data(sealed, literals, files, env_files, specdir)
                write_spec(specdir, spec_kind, {"name": name, **fields})
                return
            values = _values(literals, files, env_files)
        except SourceError as exc:
            raise ClientError(str(exc)) from None
        with Client() as client:
            created = client.create(kind, {"name": name, "data": values})
        if output == "table":
            done(f"{singular} '{name}' created ({len(created.get('keys', []))} keys)")
        else:
            emit(created, output, LIST_COLUMNS)

    @group.command(help=f"Replace a {singular}'s values; the functions using it roll.")
    @click.option("--name", required=True)
    @_source_options
    def update(
        name: str,
        literals: tuple[str, ...],
        files: tuple[str, ...],
        env_files: tuple[Path, ...],
    ) -> None:
        try:
            values = _values(literals, files, env_files)
        except SourceError as exc:
            raise ClientError(str(exc)) from None
        with Client() as client:
            current = client.get(kind, name)
            body = {"name": name, "data": values, "labels": current.get("labels") or {}}
            client.update(kind, name, body)
        done(f"{singular} '{name}' updated")

    @group.command("list", help=f"List {singular}s.")
    @output_option
    def list_(output: str) -> None:
        with Client() as client:
            emit(client.list(kind), output, LIST_COLUMNS)

    @group.command(
        help=f"Show a {singular}'s keys and sizes"
        + ("." if sealed else " (-o yaml/json: its values too).")
    )
    @click.option("--name", required=True)
    @output_option
    def get(name: str, output: str) -> None:
        with Client() as client:
            found = client.get(kind, name)
        if output != "table":
            emit(found, output, LIST_COLUMNS)
            return
        click.echo(f"Name:     {found['name']}")
        click.echo(f"Updated:  {found.get('updated_at') or '-'}")
        click.echo()
        emit(found.get("keys", []), output, KEY_COLUMNS)

    @group.command(help=f"Delete a {singular} (refused while a function uses it).")
    @click.option("--name", required=True)
    def delete(name: str) -> None:
        with Client() as client:
            client.delete(kind, name)
        done(f"{singular} '{name}' deleted")

    return group


secret = _group("secrets", "secret", "Secret", "/secrets")
configmap = _group("configmaps", "config map", "ConfigMap", "/configs")
