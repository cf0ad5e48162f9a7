"""From a spec directory to the resources it declares: every document checked against the API's
models, every error collected (none stops the others from being found)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from fissile.builder.archive import ArchiveError, zip_path
from fissile.models import SPEC_MODELS
from fissile.specs import fission
from fissile.specs.deployment import API_VERSION, LABEL, Deployment, from_document
from fissile.specs.documents import Document, SpecError, load_directory
from fissile.specs.paths import outside_project
from fissile.specs.values import values_of

#: Spec kinds, in the order apply creates them.
KINDS = {
    "Environment": "environments",
    "Package": "packages",
    "Function": "functions",
    "HTTPTrigger": "httptriggers",
    "TimeTrigger": "timetriggers",
    "MessageQueueTrigger": "mqtriggers",
    "WatchTrigger": "watchtriggers",
    "APIKey": "apikeys",
    "Secret": "secrets",
    "ConfigMap": "configmaps",
    "CanaryConfig": "canaries",
}
#: Kinds Fission has and fissile does not, refused by name rather than silently skipped.
NOT_YET = ("KubernetesWatchTrigger",)
#: A Function's ``code``/``src`` makes a package of this name, so a re-apply finds it again.
CODE_SUFFIX = "-code"


@dataclass
class Desired:
    """One resource as the spec directory declares it, in the API's terms."""

    kind: str
    name: str
    body: dict[str, Any]
    document: Document
    #: Packages: the source archive to upload when the package must be created or changed.
    archive: bytes | None = None
    #: Secrets: the digest of the declared values, as the platform computes it (filled in by
    #: whoever plans, from the API: a secret's values are never read back to compare).
    digest: str | None = None

    @property
    def where(self) -> str:
        return f"{self.document.file}:{self.document.line}"


@dataclass
class SpecSet:
    directory: Path
    deployment: Deployment | None = None
    resources: list[Desired] = field(default_factory=list)
    errors: list[SpecError] = field(default_factory=list)
    warnings: list[SpecError] = field(default_factory=list)


def code_package(function: str) -> str:
    return function[: 63 - len(CODE_SUFFIX)].rstrip("-") + CODE_SUFFIX


def load_specs(directory: Path) -> SpecSet:
    result = SpecSet(directory)
    if not directory.is_dir():
        message = f"no spec directory here: run `fissile spec init --dir {directory}`"
        result.errors.append(SpecError(directory, 0, "", message))
        return result
    documents, result.errors = load_directory(directory)
    native: list[Document] = []
    foreign: list[Document] = []
    for document in documents:
        if document.api_version == fission.API_VERSION or fission.is_bare(document):
            foreign.append(document)
        elif document.api_version == API_VERSION:
            native.append(document)
        else:
            expected = f"{API_VERSION} or {fission.API_VERSION}"
            got = document.data.get("apiVersion")
            message = f"unknown apiVersion {got!r}; expected {expected}"
            result.errors.append(document.error(("apiVersion",), message))
    if foreign:
        converted = fission.convert(foreign, directory)
        native += converted.documents
        result.errors += converted.errors
        result.warnings += converted.warnings
    for document in native:
        if document.kind == "DeploymentConfig":
            _deployment(result, document)
        elif document.kind in NOT_YET:
            message = f"kind {document.kind} is not supported yet by this fissile"
            result.errors.append(document.error(("kind",), message))
        elif document.kind in KINDS:
            result.resources += _resources(document, directory, result.errors)
        else:
            known = ", ".join([*KINDS, "DeploymentConfig"])
            message = f"unknown kind {document.data.get('kind')!r}; expected one of {known}"
            result.errors.append(document.error(("kind",), message))
    _check_duplicates(result)
    if result.deployment is not None:
        for resource in result.resources:
            resource.body["labels"] = {**resource.body["labels"], LABEL: result.deployment.id}
    return result


def _deployment(result: SpecSet, document: Document) -> None:
    found = from_document(document)
    if found is None:
        field_name = "id" if document.api_version == API_VERSION else "uid"
        result.errors.append(document.error((field_name,), "the deployment id is missing"))
    elif result.deployment is not None and result.deployment.id != found.id:
        message = f"a second deployment id ({found.id}); a spec directory has one"
        result.errors.append(document.error(("kind",), message))
    else:
        result.deployment = found


def _resources(document: Document, directory: Path, errors: list[SpecError]) -> list[Desired]:
    kind = KINDS[document.kind]
    fields = {k: v for k, v in document.data.items() if k not in ("apiVersion", "kind")}
    labels = fields.get("labels")
    if isinstance(labels, dict) and LABEL in labels:
        errors.append(document.error(("labels", LABEL), "is set by `fissile spec apply`"))
        return []
    if kind in ("packages", "functions"):
        # As on the command line: the built-in environment unless another is named.
        fields.setdefault("env", "python")
    if kind in ("secrets", "configmaps") and not values_of(document, fields, directory, errors):
        return []
    made: list[Desired] = []
    archive: bytes | None = None
    if kind == "packages":
        archive = _package_source(document, fields, directory, errors)
        if archive is None:
            return []
    elif kind == "functions":
        extra = _function_code(document, fields, directory, errors)
        if extra is False:
            return []
        if extra is not None:
            made.append(extra)
    body = _validated(document, kind, fields, errors)
    if body is None:
        return []
    return [*made, Desired(kind, body["name"], body, document, archive)]


def _validated(
    document: Document, kind: str, fields: dict[str, Any], errors: list[SpecError]
) -> dict[str, Any] | None:
    try:
        spec = SPEC_MODELS[kind].model_validate(fields)
    except ValidationError as exc:
        for problem in exc.errors():
            location = tuple(part for part in problem["loc"] if isinstance(part, str | int))
            errors.append(document.error(location, problem["msg"]))
        return None
    body: dict[str, Any] = spec.model_dump(mode="json")
    return body


def _archive_of(path: Path) -> bytes:
    if path.is_file() and path.suffix == ".zip":
        return path.read_bytes()
    return zip_path(path)


def _package_source(
    document: Document, fields: dict[str, Any], directory: Path, errors: list[SpecError]
) -> bytes | None:
    """Replace the package's ``source`` path with the sha256 of its archive."""
    archive = document.archive
    if archive is None:
        source = fields.get("source")
        if not isinstance(source, str) or not source:
            errors.append(
                document.error(("source",), "a path (file, directory or zip) is required")
            )
            return None
        archive = _read_source(document, ("source",), directory, source, errors)
        if archive is None:
            return None
    fields["source"] = hashlib.sha256(archive).hexdigest()
    return archive


def _read_source(
    document: Document,
    path: tuple[str, ...],
    directory: Path,
    value: str,
    errors: list[SpecError],
) -> bytes | None:
    problem = outside_project(directory, value)
    if problem is not None:
        errors.append(document.error(path, problem))
        return None
    source = directory / value
    if not source.exists():
        errors.append(document.error(path, f"{source} does not exist"))
        return None
    try:
        return _archive_of(source)
    except (ArchiveError, OSError) as exc:
        errors.append(document.error(path, str(exc)))
        return None


def _function_code(
    document: Document, fields: dict[str, Any], directory: Path, errors: list[SpecError]
) -> Desired | Literal[False] | None:
    """A Function with ``code`` or ``src`` gets a package of its own, declared beside it.
    Returns that package, None when the function names a package, False on an error."""
    given = [k for k in ("package", "code", "src") if fields.get(k) is not None]
    if len(given) != 1:
        message = "give exactly one of package, code (a file) or src (a directory or zip)"
        errors.append(document.error((given[1] if len(given) > 1 else "package",), message))
        return False
    if given[0] == "package":
        return None
    key = given[0]
    value = fields.pop(key)
    name = fields.get("name")
    if not isinstance(value, str) or not isinstance(name, str):
        errors.append(document.error((key if not isinstance(value, str) else "name",), "required"))
        return False
    source = directory / value
    if key == "code" and source.is_dir():
        errors.append(document.error((key,), f"{source} is a directory; use src"))
        return False
    archive = _read_source(document, (key,), directory, value, errors)
    if archive is None:
        return False
    package = code_package(name)
    fields["package"] = package
    body = {
        "name": package,
        "env": fields.get("env", "python"),
        "source": hashlib.sha256(archive).hexdigest(),
        "owner": name,
        "labels": fields.get("labels") or {},
    }
    checked = _validated(document, "packages", body, errors)
    if checked is None:
        return False
    return Desired("packages", package, checked, document, archive)


def _check_duplicates(result: SpecSet) -> None:
    seen: dict[tuple[str, str], Desired] = {}
    for resource in result.resources:
        key = (resource.kind, resource.name)
        first = seen.setdefault(key, resource)
        if first is not resource:
            message = f"{resource.kind[:-1]} {resource.name!r} is also declared at {first.where}"
            result.errors.append(resource.document.error(("name",), message))
