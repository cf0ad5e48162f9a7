"""Fission's spec files (``apiVersion: fission.io/v1``) read as fissile's: each document is
converted to the fissile document it means, every field that has no fissile meaning gives a
warning, and every one that cannot work here gives an error."""

from __future__ import annotations

import glob
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fissile.builder.archive import ArchiveError, zip_path
from fissile.specs.deployment import API_VERSION as FISSILE_API_VERSION
from fissile.specs.documents import Document, FieldPath, SpecError
from fissile.specs.paths import escapes, project_root

API_VERSION = "fission.io/v1"
ARCHIVE_SCHEME = "archive://"

# Fields read for their meaning elsewhere, or that mean nothing outside Kubernetes.
_SILENT: set[FieldPath] = {
    ("apiVersion",),
    ("kind",),
    ("metadata",),
    ("status",),
    ("spec", "version"),
    ("spec", "environment", "namespace"),
    ("spec", "package", "packageref", "namespace"),
    ("spec", "package", "packageref", "resourceversion"),
    ("spec", "source", "checksum"),
    ("spec", "source", "type"),
    ("spec", "deployment", "checksum"),
    ("spec", "deployment", "type"),
    ("spec", "InvokeStrategy", "StrategyType"),
    ("spec", "functionref", "type"),
}


@dataclass
class Converted:
    documents: list[Document] = field(default_factory=list)
    errors: list[SpecError] = field(default_factory=list)
    warnings: list[SpecError] = field(default_factory=list)


class _Reader:
    """Reads a Fission document's fields and remembers which ones it used."""

    def __init__(self, document: Document, out: Converted) -> None:
        self.document = document
        self.out = out
        self.used: set[FieldPath] = set()
        self.fields: dict[str, Any] = {}
        self.origins: dict[str, FieldPath] = {}

    def get(self, *path: str) -> Any:
        self.used.add(path)
        value: Any = self.document.data
        for part in path:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    def map(self, target: str, *path: str, convert: Any = None) -> None:
        """Copy the field at ``path`` (when set) to the fissile field ``target``."""
        value = self.get(*path)
        if value is None or value == "":
            return
        self.fields[target] = convert(value) if convert is not None else value
        self.origins[target] = path

    def warn(self, path: FieldPath, message: str) -> None:
        self.out.warnings.append(self.document.error(path, message))

    def error(self, path: FieldPath, message: str) -> None:
        self.out.errors.append(self.document.error(path, message))

    def finish(self, kind: str, archive: bytes | None = None) -> None:
        for path in _leaves(self.document.data, ()):
            prefixes = [path[: i + 1] for i in range(len(path))]
            if any(p in self.used or p in _SILENT for p in prefixes):
                continue
            self.warn(path, "has no equivalent in fissile; ignored")
        self.out.documents.append(
            Document(
                self.document.file,
                {"apiVersion": FISSILE_API_VERSION, "kind": kind, **self.fields},
                self.document.node,
                self.origins,
                archive,
            )
        )


def _leaves(value: Any, path: FieldPath) -> Iterator[FieldPath]:
    """Paths of the set (non-empty, non-default-looking) scalars and lists under ``value``."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _leaves(child, (*path, str(key)))
    elif value not in (None, "", [], False, 0):
        yield path


def is_bare(document: Document) -> bool:
    """Fission writes its ArchiveUploadSpec (and some DeploymentConfig) without apiVersion."""
    bare = "apiVersion" not in document.data
    return bare and document.kind in ("ArchiveUploadSpec", "DeploymentConfig")


def convert(documents: list[Document], directory: Path) -> Converted:
    out = Converted()
    archives = {str(d.data.get("name")): d for d in documents if d.kind == "ArchiveUploadSpec"}
    for document in documents:
        converter = _CONVERTERS.get(document.kind)
        if document.kind == "ArchiveUploadSpec":
            continue
        if converter is None:
            # DeploymentConfig, and the kinds fissile reports as unknown or not supported yet.
            out.documents.append(document)
            continue
        reader = _Reader(document, out)
        converter(reader, archives, directory)
    return out


def _name(reader: _Reader) -> None:
    reader.map("name", "metadata", "name")
    if "name" not in reader.fields:
        reader.error(("metadata", "name"), "required")


def _environment(reader: _Reader, archives: dict[str, Document], directory: Path) -> None:
    _name(reader)
    reader.map("image", "spec", "runtime", "image")
    reader.map("poolsize", "spec", "poolsize")
    reader.finish("Environment")


def _package(reader: _Reader, archives: dict[str, Document], directory: Path) -> None:
    _name(reader)
    reader.map("env", "spec", "environment", "name")
    reader.map("buildcmd", "spec", "buildcmd")
    source = reader.get("spec", "source", "url")
    deployment = reader.get("spec", "deployment", "url")
    path: FieldPath = ("spec", "source", "url")
    if source and deployment:
        reader.warn(("spec", "deployment", "url"), "both source and deployment: source is used")
    elif deployment:
        # A deployment archive is used as a source; fissile's build of it is a plain copy
        # unless it holds a requirements.txt.
        source, path = deployment, ("spec", "deployment", "url")
    for kind in ("source", "deployment"):
        if reader.get("spec", kind, "literal"):
            reader.error(
                ("spec", kind, "literal"), "literal archives are not supported; use archive://"
            )
            return
    if not isinstance(source, str) or not source:
        reader.error(("spec", "source"), "a source or deployment archive URL is required")
        return
    if not source.startswith(ARCHIVE_SCHEME):
        reader.error(path, f"only {ARCHIVE_SCHEME}NAME URLs (an ArchiveUploadSpec) are supported")
        return
    name = source[len(ARCHIVE_SCHEME) :]
    upload = archives.get(name)
    if upload is None:
        reader.error(path, f"no ArchiveUploadSpec named {name!r} in this spec directory")
        return
    data = _archive(upload, directory, reader.out)
    if data is None:
        return
    reader.finish("Package", data)


def _function(reader: _Reader, archives: dict[str, Document], directory: Path) -> None:
    _name(reader)
    reader.map("env", "spec", "environment", "name")
    reader.map("package", "spec", "package", "packageref", "name")
    reader.map("entrypoint", "spec", "package", "functionName")
    strategy = ("spec", "InvokeStrategy", "ExecutionStrategy")
    executor = reader.get(*strategy, "ExecutorType")
    if executor == "container":
        reader.error((*strategy, "ExecutorType"), "container functions are not supported")
        return
    if executor not in (None, "", "poolmgr"):
        reader.warn(
            (*strategy, "ExecutorType"),
            f"executor {executor}: fissile runs every function on its warm pool;"
            " MinScale and MaxScale are kept",
        )
    reader.map("min_scale", *strategy, "MinScale")
    if reader.get(*strategy, "MaxScale"):
        reader.map("max_scale", *strategy, "MaxScale")
    reader.map("timeout", "spec", "functionTimeout")
    reader.map("idle_timeout", "spec", "idletimeout")
    reader.map("concurrency", "spec", "requestsPerPod")
    reader.map("memory", "spec", "resources", "limits", "memory")
    reader.map("cpu", "spec", "resources", "limits", "cpu", convert=_cpu)
    for field_name in ("secrets", "configmaps"):
        # Mounted where Fission mounts them: /secrets/<namespace>/<name>/ (/configs/...).
        reader.map(field_name, "spec", field_name, convert=_references)
    reader.finish("Function")


def _http_trigger(reader: _Reader, archives: dict[str, Document], directory: Path) -> None:
    _name(reader)
    kind = reader.get("spec", "functionref", "type")
    if kind == "function-weights":
        weights = reader.get("spec", "functionref", "functionweights")
        if not isinstance(weights, dict) or not weights:
            path = ("spec", "functionref", "functionweights")
            reader.error(path, "function-weights needs functionweights: {function: weight}")
            return
        # The route's `function` is one of the split's; the weights decide every request.
        reader.fields["function"] = max(weights, key=lambda name: weights[name])
        reader.origins["function"] = ("spec", "functionref", "functionweights")
        reader.map("function_weights", "spec", "functionref", "functionweights")
        reader.get("spec", "functionref", "name")  # unused by Fission with weights
    elif kind not in (None, "", "name"):
        message = "only functionref types 'name' and 'function-weights' are supported"
        reader.error(("spec", "functionref", "type"), message)
        return
    else:
        reader.map("function", "spec", "functionref", "name")
    url, prefix = reader.get("spec", "relativeurl"), reader.get("spec", "prefix")
    if prefix:
        reader.map("prefix", "spec", "prefix")
        if url:
            reader.warn(("spec", "relativeurl"), "ignored: the trigger has a prefix")
    else:
        reader.map("url", "spec", "relativeurl")
    # Fission's router matches `host` on the request's Host; so does fissile's.
    reader.map("host", "spec", "host")
    if not reader.get("spec", "createingress"):
        reader.get("spec", "ingressconfig")  # only read by Fission when it makes an ingress
    methods = reader.get("spec", "methods")
    if methods:
        reader.map("methods", "spec", "methods")
    else:
        reader.map("methods", "spec", "method", convert=lambda m: [m])
    reader.finish("HTTPTrigger")


def _function_ref(reader: _Reader) -> bool:
    reader.map("function", "spec", "functionref", "name")
    if reader.get("spec", "functionref", "type") not in (None, "", "name"):
        reader.error(("spec", "functionref", "type"), "only functionref type 'name' is supported")
        return False
    return True


def _time_trigger(reader: _Reader, archives: dict[str, Document], directory: Path) -> None:
    _name(reader)
    if not _function_ref(reader):
        return
    reader.map("cron", "spec", "cron")
    reader.map("method", "spec", "method")
    reader.finish("TimeTrigger")


#: Fission's messageQueueType -> fissile's mqtype, and the metadata field naming the broker.
_MQTYPES = {
    "kafka": ("kafka", "bootstrapServers"),
    "nats-jetstream": ("nats", "natsServer"),
    "nats-streaming": ("nats", "natsServer"),
    "rabbitmq": ("rabbitmq", "host"),
    "redis": ("redis", "address"),
}


def _mq_trigger(reader: _Reader, archives: dict[str, Document], directory: Path) -> None:
    _name(reader)
    if not _function_ref(reader):
        return
    kind = reader.get("spec", "messageQueueType")
    if kind not in _MQTYPES:
        known = ", ".join(sorted(_MQTYPES))
        reader.error(("spec", "messageQueueType"), f"{kind!r} is not supported; use one of {known}")
        return
    mqtype, address = _MQTYPES[kind]
    reader.fields["mqtype"] = mqtype
    reader.origins["mqtype"] = ("spec", "messageQueueType")
    reader.map("topic", "spec", "topic")
    reader.map("resptopic", "spec", "respTopic")
    reader.map("errortopic", "spec", "errorTopic")
    reader.map("maxretries", "spec", "maxRetries")
    url = reader.get("spec", "metadata", address)
    if isinstance(url, str) and url:
        if mqtype == "redis" and "://" not in url:
            url = f"redis://{url}"
        reader.fields["broker_url"] = url
        reader.origins["broker_url"] = ("spec", "metadata", address)
    reader.get("spec", "mqtkind")  # fission or keda: one consumer either way here
    reader.finish("MessageQueueTrigger")


def _canary(reader: _Reader, archives: dict[str, Document], directory: Path) -> None:
    _name(reader)
    reader.map("httptrigger", "spec", "trigger")
    reader.map("newfunction", "spec", "newfunction")
    reader.map("oldfunction", "spec", "oldfunction")
    reader.map("increment_step", "spec", "weightincrement")
    reader.map("increment_interval", "spec", "duration")
    reader.map("failure_threshold", "spec", "failurethreshold")
    reader.map("failure_type", "spec", "failureType")
    reader.finish("CanaryConfig")


_CONVERTERS = {
    "Environment": _environment,
    "Package": _package,
    "Function": _function,
    "HTTPTrigger": _http_trigger,
    "TimeTrigger": _time_trigger,
    "MessageQueueTrigger": _mq_trigger,
    "CanaryConfig": _canary,
}


def _references(value: Any) -> Any:
    """Fission's secret and config map references ({name, namespace}), namespace kept."""
    if not isinstance(value, list):
        return value  # the model's validation says what is wrong
    return [
        {"name": ref.get("name"), "namespace": ref.get("namespace") or "default"}
        if isinstance(ref, dict)
        else ref
        for ref in value
    ]


def _cpu(value: Any) -> Any:
    """Kubernetes CPU quantities: ``500m`` is half a core."""
    if isinstance(value, str) and value.endswith("m") and value[:-1].isdigit():
        return int(value[:-1]) / 1000
    return value


# -- archives ------------------------------------------------------------------------------


def _archive(upload: Document, directory: Path, out: Converted) -> bytes | None:
    """The zip an ArchiveUploadSpec describes. Its globs are relative to ``rootdir``, which is
    the spec directory's parent unless set (Fission's rule). Each match is put at the archive's
    top level under its own name, a directory with its tree; a single zip is used as it is."""
    data = upload.data
    root_value = data.get("rootdir")
    project = root = project_root(directory)
    if isinstance(root_value, str) and root_value:
        root = project / root_value
        problem = escapes(project, root, root_value)
        if problem is not None:
            out.errors.append(upload.error(("rootdir",), problem))
            return None
    includes = data.get("include") or []
    excludes = set()
    for pattern in data.get("exclude") or []:
        excludes.update(glob.glob(str(pattern), root_dir=root, recursive=True))
    matches: list[str] = []
    for index, pattern in enumerate(includes):
        found = sorted(glob.glob(str(pattern), root_dir=root, recursive=True))
        if not found:
            out.errors.append(upload.error(("include", index), f"{pattern!r} matches no file"))
            return None
        for match in found:
            problem = escapes(project, root / match, match)
            if problem is not None:
                out.errors.append(upload.error(("include", index), problem))
                return None
        matches += [m for m in found if m not in excludes and m not in matches]
    if not matches:
        out.errors.append(upload.error(("include",), "the archive would be empty"))
        return None
    try:
        if len(matches) == 1 and matches[0].endswith(".zip") and (root / matches[0]).is_file():
            return (root / matches[0]).read_bytes()
        with tempfile.TemporaryDirectory(prefix="fissile-archive-") as staging:
            for match in matches:
                source, target = root / match, Path(staging) / Path(match).name
                if target.exists():
                    message = f"two matches are named {target.name!r}"
                    out.errors.append(upload.error(("include",), message))
                    return None
                if source.is_dir():
                    shutil.copytree(source, target, symlinks=True)
                else:
                    shutil.copy2(source, target)
            return zip_path(staging)
    except (ArchiveError, OSError) as exc:
        out.errors.append(upload.error(("include",), str(exc)))
        return None
