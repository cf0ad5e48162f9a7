"""Where the values of a secret or config map come from on the user's side: literals, files
and env files (``KEY=VALUE`` lines, as ``kubectl create secret --from-env-file`` reads them).
Shared by the CLI and spec files; nothing here talks to the platform."""

from __future__ import annotations

import re
from pathlib import Path

KEY = re.compile(r"[-._A-Za-z0-9]+")


class SourceError(Exception):
    pass


def check_key(key: str, where: str) -> str:
    if not KEY.fullmatch(key) or key in (".", ".."):
        raise SourceError(
            f"{where}: {key!r} is not a valid key (letters, digits, '-', '_' and '.')"
        )
    return key


def read_text(path: Path, where: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        message = f"{where}: {path} is not UTF-8 text (binary values are not supported)"
        raise SourceError(message) from None


def from_file(spec: str, where: str = "--from-file") -> tuple[str, Path]:
    """``KEY=path`` or ``path`` (the key is then the file's name)."""
    key, sep, path = spec.partition("=")
    if not sep:
        key, path = Path(spec).name, spec
    return check_key(key, where), Path(path)


def parse_env_file(path: Path, where: str = "--from-env-file") -> dict[str, str]:
    """``KEY=VALUE`` lines; blank lines and ``#`` comments skipped; values taken as written."""
    values: dict[str, str] = {}
    for number, line in enumerate(read_text(path, where).splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            raise SourceError(f"{where}: {path}:{number}: not KEY=VALUE")
        values[check_key(key.strip(), f"{where}: {path}:{number}")] = value
    return values
