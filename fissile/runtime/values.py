"""Reading a function's secrets and config maps, the same way under every sandbox.

Under a strict sandbox they are files at ``/secrets/<namespace>/<name>/<key>`` and
``/configs/<namespace>/<name>/<key>`` (Fission's paths); on hosts without mount namespaces the
same tree is elsewhere, and ``FISSILE_SECRETS_DIR`` / ``FISSILE_CONFIGS_DIR`` say where. These
helpers read from whichever applies, so code written for one works in the other.
"""

from __future__ import annotations

import os
import re

SECRETS_ENV = "FISSILE_SECRETS_DIR"
CONFIGS_ENV = "FISSILE_CONFIGS_DIR"
_PART = re.compile(r"[-._A-Za-z0-9]+")


def secrets_dir() -> str:
    """Where this instance's secrets are: ``/secrets`` unless the platform says otherwise."""
    return os.environ.get(SECRETS_ENV) or "/secrets"


def configs_dir() -> str:
    """Where this instance's config maps are: ``/configs`` unless the platform says otherwise."""
    return os.environ.get(CONFIGS_ENV) or "/configs"


def secret(name: str, key: str, namespace: str = "default") -> str:
    """The value of ``key`` in the secret ``name`` (one the function was given with
    ``--secret``); raises ``KeyError`` naming it when there is none."""
    return _read(secrets_dir(), "secret", name, key, namespace)


def config(name: str, key: str, namespace: str = "default") -> str:
    """The value of ``key`` in the config map ``name`` (given with ``--configmap``)."""
    return _read(configs_dir(), "config map", name, key, namespace)


def _read(base: str, what: str, name: str, key: str, namespace: str) -> str:
    for part in (namespace, name, key):
        # No path of its own: '..' or '/' in a part would leave the function's tree.
        if not _PART.fullmatch(part) or part in (".", ".."):
            raise ValueError(f"invalid {what} reference part {part!r}")
    try:
        with open(os.path.join(base, namespace, name, key), encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise KeyError(
            f"{what} {name!r} (namespace {namespace}) has no key {key!r}, or is not given to"
            " this function"
        ) from None
