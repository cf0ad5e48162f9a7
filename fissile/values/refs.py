"""What a function uses of secrets and config maps: the ones it mounts, and those its
environment variables name as ``${secret:NAME/KEY}`` or ``${configmap:NAME/KEY}``."""

from __future__ import annotations

import re
from collections.abc import Callable

from fissile.models import FunctionSpec

#: ``${secret:students/url}``: the whole reference is replaced by the key's value.
ENV_REFERENCE = re.compile(
    r"\$\{(?P<kind>secret|configmap):(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)/"
    r"(?P<key>[-._A-Za-z0-9]+)\}"
)
_KINDS = {"secret": "secrets", "configmap": "configmaps"}


def env_references(spec: FunctionSpec) -> list[tuple[str, str, str, str]]:
    """(variable, kind, name, key) of every reference in the function's env vars."""
    found = []
    for variable, value in spec.env_vars.items():
        for match in ENV_REFERENCE.finditer(value):
            found.append((variable, _KINDS[match["kind"]], match["name"], match["key"]))
    return found


def used(spec: FunctionSpec) -> set[tuple[str, str]]:
    """(kind, name) of every secret and config map the function uses."""
    names = {("secrets", ref.name) for ref in spec.secrets}
    names |= {("configmaps", ref.name) for ref in spec.configmaps}
    names |= {(kind, name) for _, kind, name, _ in env_references(spec)}
    return names


def expand(value: str, lookup: Callable[[str, str, str], str]) -> str:
    """``value`` with each reference replaced by ``lookup(kind, name, key)``."""
    return ENV_REFERENCE.sub(lambda m: lookup(_KINDS[m["kind"]], m["name"], m["key"]), value)
