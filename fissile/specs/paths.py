"""Where a spec directory may take sources from: its project, the directory it sits in.

Sources are written relative to the spec directory (``code: ../hello.py`` beside ``specs/``),
and Fission resolves archive globs from the spec directory's parent; a spec directory may come
from someone else, so nothing it names may lie outside that parent, lexically or through
symbolic links (``../../../../etc/passwd``, an absolute path, a link to ``/etc``).
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root(directory: Path) -> Path:
    """The tree a spec directory's sources must stay inside."""
    return directory.resolve().parent


def outside_project(directory: Path, source: str | Path) -> str | None:
    """Why ``source`` (a path as the spec names it, relative to ``directory``) may not be
    used, or None when it lies inside the project."""
    return escapes(project_root(directory), directory.resolve() / source, source)


def escapes(root: Path, path: Path, shown: str | Path) -> str | None:
    """Why ``path`` (absolute, as written) is not inside ``root``, lexically or once links
    are followed; ``shown`` is how the spec wrote it."""
    if not _within(Path(os.path.normpath(path)), root):
        return f"{shown} is outside the project {root} (the spec directory's parent)"
    resolved = path.resolve()
    if not _within(resolved, root):
        return f"{shown} leads to {resolved} through a link, outside the project {root}"
    return None


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
