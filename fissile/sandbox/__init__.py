"""Isolation applied to an instance in the forked child, before any user code is imported.

This release applies process-level limits only (no core dumps); namespaces, cgroups and seccomp
plug in here, chosen by name, in the isolation work that follows.
"""

from __future__ import annotations

import resource
from typing import Any

__all__ = ["apply_sandbox"]


def apply_sandbox(config: dict[str, Any]) -> None:
    """Apply the sandbox described by ``config`` to the calling process."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    nofile = int(config.get("nofile", 4096))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = nofile if hard == resource.RLIM_INFINITY else min(nofile, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
