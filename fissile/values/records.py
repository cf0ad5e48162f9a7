"""How secrets and config maps are kept in the store, and what a read of one shows.

A secret's record holds its values only as one sealed token (``sealing``), beside the keys,
their sizes and a digest; a read shows all but the token. A config map is configuration, not a
secret: its record and its reads hold its values as they are (as Kubernetes' do).
"""

from __future__ import annotations

from typing import Any

from fissile.models import ConfigMapSpec, SecretSpec, ValuesSpec
from fissile.values.sealing import Sealer

SEALED = "sealed"
KINDS = ("secrets", "configmaps")


def keys_of(values: dict[str, str]) -> list[dict[str, Any]]:
    return [{"key": key, "size": len(value.encode())} for key, value in sorted(values.items())]


def to_record(spec: ValuesSpec, sealer: Sealer) -> dict[str, Any]:
    """The record stored for a secret or config map."""
    record: dict[str, Any] = {
        "name": spec.name,
        "labels": spec.labels,
        "keys": keys_of(spec.data),
        "digest": sealer.digest(spec.data),
    }
    if isinstance(spec, SecretSpec):
        record[SEALED] = sealer.seal(spec.data)
    else:
        record["data"] = dict(spec.data)
    return record


def view(document: dict[str, Any]) -> dict[str, Any]:
    """A stored secret or config map as the API shows it: never a secret's values."""
    document.pop(SEALED, None)
    return document


def values_of(kind: str, data: dict[str, Any], sealer: Sealer) -> dict[str, str]:
    """The values of a stored record: opened for a secret."""
    if kind == "secrets":
        return sealer.open(data[SEALED])
    values: dict[str, str] = data.get("data") or {}
    return values


def spec_model(kind: str) -> type[ValuesSpec]:
    return SecretSpec if kind == "secrets" else ConfigMapSpec
