"""Loading spec files: every YAML document of a spec directory, with the file and line it came
from, so that an error can point at the exact field that caused it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The C loader is an order of magnitude faster; the pure-Python one behaves the same.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class SpecError:
    """One problem in a spec directory, located by file, line and field path."""

    file: Path
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        # Line 0: about the directory or the whole set, not one place in a file.
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


@dataclass
class Document:
    """One YAML document (a mapping) and the node tree it was built from."""

    file: Path
    data: dict[str, Any]
    node: yaml.Node | None = None
    #: Field names of a converted document, pointing back at the original's paths.
    origins: dict[str, FieldPath] = field(default_factory=dict)
    #: A converted Package's source archive, already made (Fission's ArchiveUploadSpec).
    archive: bytes | None = None

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1 if self.node is not None else 1

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    @property
    def api_version(self) -> str:
        return str(self.data.get("apiVersion", ""))

    def line_of(self, path: FieldPath) -> int:
        """The line of the deepest node along ``path`` that exists (the document's own line
        when none does)."""
        if path and path[0] in self.origins:
            path = self.origins[str(path[0])] + tuple(path[1:])
        node = self.node
        line = self.line
        for part in path:
            found = _child(node, part)
            if found is None:
                break
            # A mapping entry is shown at its key: a block value starts on the next line.
            marker, node = found
            line = marker.start_mark.line + 1
        return line

    def error(self, path: FieldPath, message: str) -> SpecError:
        shown = path
        if path and path[0] in self.origins:
            shown = self.origins[str(path[0])] + tuple(path[1:])
        return SpecError(self.file, self.line_of(path), format_path(shown), message)


def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """The entry ``part`` of a mapping or sequence node: (the node marking it, its value)."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return key, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        items: list[yaml.Node] = node.value
        return (items[part], items[part]) if 0 <= part < len(items) else None
    return None


def format_path(path: Sequence[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def spec_files(directory: Path) -> list[Path]:
    """The directory's YAML files, in name order so every run reads them alike."""
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_file(path: Path) -> tuple[list[Document], list[SpecError]]:
    documents: list[Document] = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return [], [SpecError(path, 1, "", f"cannot read: {exc}")]
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            line = node.start_mark.line + 1
            if data is None:
                continue
            if not isinstance(data, dict):
                message = "a spec document must be a mapping with apiVersion and kind"
                return documents, [SpecError(path, line, "", message)]
            documents.append(Document(path, data, node))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        return documents, [SpecError(path, line, "", f"invalid YAML: {problem}")]
    finally:
        loader.dispose()
    return documents, []


def load_directory(directory: Path) -> tuple[list[Document], list[SpecError]]:
    """Every document of every spec file, and every file that could not be parsed."""
    documents: list[Document] = []
    errors: list[SpecError] = []
    for path in spec_files(directory):
        found, problems = load_file(path)
        documents += found
        errors += problems
    return documents, errors
