"""A spec directory's deployment id: written once by ``spec init``, put as a label on every
resource ``spec apply`` creates, so ``--delete`` and ``destroy`` only ever touch their own."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from fissile.specs.documents import Document

API_VERSION = "fissile.dev/v1"
LABEL = "fissile.dev/deployment"
FILENAME = "fissile-deployment.yaml"


@dataclass(frozen=True)
class Deployment:
    name: str
    id: str


def init(directory: Path, name: str | None = None, deployment_id: str | None = None) -> Path:
    """Create the spec directory and its deployment file; refuses to replace an existing one,
    since a new id would orphan everything applied under the old one."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILENAME
    if path.exists():
        raise FileExistsError(f"{path} already exists; its deployment id is kept")
    name = name or directory.resolve().parent.name or "fissile"
    document = {
        "apiVersion": API_VERSION,
        "kind": "DeploymentConfig",
        "name": name,
        "id": deployment_id or str(uuid.uuid4()),
    }
    path.write_text(
        "# Written by `fissile spec init`. The id marks what `fissile spec apply` created from\n"
        "# this directory; keep it under version control and do not change it.\n"
        + yaml.safe_dump(document, sort_keys=False)
    )
    return path


def from_document(document: Document) -> Deployment | None:
    """The deployment a DeploymentConfig document names (fissile's ``id`` or Fission's
    ``uid``), or None when it has neither."""
    data = document.data
    ident = data.get("id") if document.api_version == API_VERSION else data.get("uid")
    if document.api_version != API_VERSION and not ident:
        ident = data.get("id")
    if not isinstance(ident, str) or not ident.strip():
        return None
    return Deployment(str(data.get("name") or ""), ident.strip())
