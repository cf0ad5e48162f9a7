"""Writing one resource as a spec file: what ``--spec`` on a ``create`` command does instead of
creating it (Fission's habit), so a spec directory can be started from familiar commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from fissile.specs.deployment import API_VERSION


def relative_source(directory: Path, source: str) -> str:
    """A source path as a spec file in ``directory`` must name it."""
    return Path(os.path.relpath(Path(source).resolve(), directory.resolve())).as_posix()


def save(directory: Path, kind: str, fields: dict[str, Any]) -> Path:
    """Write ``specs/<kind>-<name>.yaml``; an existing file is never replaced."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{kind.lower()}-{fields['name']}.yaml"
    document = {"apiVersion": API_VERSION, "kind": kind}
    document.update({k: v for k, v in fields.items() if v is not None})
    with path.open("x") as handle:
        yaml.safe_dump(document, handle, sort_keys=False, default_flow_style=False)
    return path
