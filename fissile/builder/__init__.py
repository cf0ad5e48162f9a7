"""Safe archive handling, content-addressed storage and package builds.

The build machinery (the store, the models) is imported on first use, so that the CLI, which
only needs ``zip_path``, starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fissile.builder.archive import ArchiveError, check_archive, extract_archive, zip_path

if TYPE_CHECKING:
    from fissile.builder.build import Builder, build_key
    from fissile.builder.storage import ArchiveStore, ArchiveTooLarge

__all__ = [
    "ArchiveError",
    "ArchiveStore",
    "ArchiveTooLarge",
    "Builder",
    "build_key",
    "check_archive",
    "extract_archive",
    "zip_path",
]

_LAZY = {
    "Builder": "fissile.builder.build",
    "build_key": "fissile.builder.build",
    "ArchiveStore": "fissile.builder.storage",
    "ArchiveTooLarge": "fissile.builder.storage",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fissile.builder' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
