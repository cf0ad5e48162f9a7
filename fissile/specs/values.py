"""The values of a spec's ``Secret`` and ``ConfigMap`` documents, read where they are kept.

A secret's values do not belong in a spec directory under version control, so a ``Secret``
names where each value comes from: ``fromFile`` (a file inside the project, to keep out of
git), ``fromEnv`` (a variable of the shell running ``spec apply``), or ``envFiles`` (files of
``KEY=VALUE`` lines). A plain string value is refused unless the document says
``allowInlineValues: true``. A ``ConfigMap`` is configuration: plain strings are its normal
form, and ``fromFile`` / ``envFiles`` work too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fissile.specs.documents import Document, SpecError
from fissile.specs.paths import outside_project
from fissile.values.sources import SourceError, check_key, parse_env_file, read_text

INLINE = "allowInlineValues"


def values_of(
    document: Document, fields: dict[str, Any], directory: Path, errors: list[SpecError]
) -> bool:
    """Replace the document's value sources in ``fields`` by the values (``data``); False
    (with the errors recorded) when one cannot be read."""
    sealed = document.kind == "Secret"
    inline = fields.pop(INLINE, False)
    if inline not in (True, False):
        errors.append(document.error((INLINE,), "must be true or false"))
        return False
    before = len(errors)
    values: dict[str, str] = {}
    env_files = fields.pop("envFiles", None) or []
    if not isinstance(env_files, list):
        errors.append(document.error(("envFiles",), "must be a list of paths"))
        return False
    for index, name in enumerate(env_files):
        path = _path(document, ("envFiles", index), directory, name, errors)
        if path is not None:
            try:
                values.update(parse_env_file(path, "envFiles"))
            except SourceError as exc:
                errors.append(document.error(("envFiles", index), str(exc)))
    data = fields.get("data") or {}
    if not isinstance(data, dict):
        errors.append(document.error(("data",), "must map keys to values"))
        return False
    for key, source in data.items():
        where = ("data", str(key))
        try:
            check_key(str(key), "data")
        except SourceError as exc:
            errors.append(document.error(where, str(exc)))
            continue
        value = _value(document, where, directory, source, sealed and not inline, errors)
        if value is not None:
            values[str(key)] = value
    fields["data"] = values
    return len(errors) == before


def _value(
    document: Document,
    where: tuple[str, str],
    directory: Path,
    source: Any,
    no_literals: bool,
    errors: list[SpecError],
) -> str | None:
    if isinstance(source, str):
        if no_literals:
            errors.append(
                document.error(
                    where,
                    "a secret's value written in the spec (it would end up in version control);"
                    f" use fromFile or fromEnv, or set {INLINE}: true",
                )
            )
            return None
        return source
    known = {"fromFile", "fromEnv"}
    if not isinstance(source, dict) or len(source) != 1 or not known & set(source):
        errors.append(document.error(where, "give one of fromFile: PATH or fromEnv: VARIABLE"))
        return None
    if "fromEnv" in source:
        variable = str(source["fromEnv"])
        if variable not in os.environ:
            errors.append(document.error((*where, "fromEnv"), f"${variable} is not set"))
            return None
        return os.environ[variable]
    path = _path(document, (*where, "fromFile"), directory, source["fromFile"], errors)
    if path is None:
        return None
    try:
        return read_text(path, "fromFile")
    except SourceError as exc:
        errors.append(document.error((*where, "fromFile"), str(exc)))
        return None


def _path(
    document: Document,
    where: tuple[str | int, ...],
    directory: Path,
    value: Any,
    errors: list[SpecError],
) -> Path | None:
    if not isinstance(value, str) or not value:
        errors.append(document.error(where, "a path relative to the spec directory is required"))
        return None
    problem = outside_project(directory, value)
    if problem is not None:
        errors.append(document.error(where, problem))
        return None
    return directory / value
