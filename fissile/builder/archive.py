"""Safe handling of source archives: deterministic zips from files and directories (so the same
source always has the same sha256), and checks before anything is extracted."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAX_ARCHIVE_BYTES = 256 * 1024 * 1024
MAX_EXTRACTED_BYTES = 1024 * 1024 * 1024
MAX_FILES = 50_000
# Links followed while resolving one path, as the kernel's limit (ELOOP past 40).
MAX_LINK_HOPS = 40
MAX_LINK_TARGET = 4096  # PATH_MAX: the kernel refuses longer link targets too
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache", ".pytest_cache"}


class ArchiveError(ValueError):
    """The archive is unsafe or unreadable; the message says which entry and why."""


@dataclass(frozen=True)
class ArchiveSummary:
    files: int
    extracted_bytes: int


def zip_path(source: str | Path) -> bytes:
    """A zip of a file or a directory tree, identical bytes for identical content."""
    root = Path(source)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if root.is_file():
            _add_file(archive, root, root.name)
        elif root.is_dir():
            links: dict[tuple[str, ...], str] = {}
            for path in sorted(_walk(root)):
                relative = path.relative_to(root).as_posix()
                if path.is_symlink():
                    _add_symlink(archive, root, path, relative)
                    links[PurePosixPath(relative).parts] = os.readlink(path)
                else:
                    _add_file(archive, path, relative)
            # Said here rather than by the server after the upload.
            tree = _Tree(links)
            for parts, target in links.items():
                reason = tree.escape(parts)
                if reason is not None:
                    name = "/".join(parts)
                    raise ArchiveError(
                        f"{name}: symlink to {target} {reason.replace('archive', 'source')}"
                    )
        else:
            raise ArchiveError(f"{source} is neither a file nor a directory")
    return buffer.getvalue()


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        base = Path(directory)
        for name in files:
            if not name.endswith((".pyc", ".pyo")) and _regular_or_link(base / name):
                found.append(base / name)
        found.extend(base / d for d in dirs if (base / d).is_symlink())
    return found


def _regular_or_link(path: Path) -> bool:
    """Sockets, pipes and devices in a source tree are skipped: none has content to ship, and
    reading a pipe would block."""
    mode = path.lstat().st_mode
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def _add_file(archive: zipfile.ZipFile, path: Path, name: str) -> None:
    info = zipfile.ZipInfo(name, _EPOCH)
    mode = path.stat().st_mode
    info.external_attr = (stat.S_IFREG | (0o755 if mode & 0o111 else 0o644)) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, path.read_bytes())


def _add_symlink(archive: zipfile.ZipFile, root: Path, path: Path, name: str) -> None:
    target = os.readlink(path)
    if not _inside(PurePosixPath(name).parent, target):
        raise ArchiveError(f"{name}: symlink to {target} points outside the source")
    info = zipfile.ZipInfo(name, _EPOCH)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive.writestr(info, target)


def _inside(parent: PurePosixPath, target: str) -> bool:
    if target.startswith("/"):
        return False
    depth = 0
    for part in (*parent.parts, *PurePosixPath(target).parts):
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


class _Unsafe(Exception):
    pass


_OUTSIDE = "points outside the archive through other links in it"


class _Tree:
    """The links of an archive, resolved as the kernel would follow them once extracted
    (``..`` after a link climbs from where the link points). Each link is resolved once and
    remembered, so a thousand links through one long link cost one walk of it."""

    def __init__(self, links: dict[tuple[str, ...], str]) -> None:
        self.links = links
        self._resolved: dict[tuple[str, ...], tuple[str, ...]] = {}

    def escape(self, link: tuple[str, ...]) -> str | None:
        """Why ``link`` is unsafe, or None if it leads to a place inside the tree."""
        try:
            self._target_of(link, 0)
        except _Unsafe as exc:
            return str(exc)
        return None

    def _target_of(self, link: tuple[str, ...], depth: int) -> tuple[str, ...]:
        known = self._resolved.get(link)
        if known is not None:
            return known
        if depth >= MAX_LINK_HOPS:
            raise _Unsafe(f"is a symlink loop (more than {MAX_LINK_HOPS} links deep)")
        target = self.links[link]
        if target.startswith("/"):
            raise _Unsafe(_OUTSIDE)
        resolved = list(link[:-1])
        for part in PurePosixPath(target).parts:
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise _Unsafe(_OUTSIDE)
                resolved.pop()
                continue
            step = (*resolved, part)
            if step in self.links:
                resolved = list(self._target_of(step, depth + 1))
            else:
                resolved.append(part)
        self._resolved[link] = result = tuple(resolved)
        return result


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def check_archive(path: str | Path, max_extracted: int = MAX_EXTRACTED_BYTES) -> ArchiveSummary:
    """Refuse archives that are not zips, escape their root, or expand past the limits."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_FILES:
                raise ArchiveError(f"archive has {len(infos)} entries; the limit is {MAX_FILES}")
            total = 0
            links: dict[tuple[str, ...], str] = {}
            names: set[PurePosixPath] = set()
            # Entries that are not directories: nothing may lie below one. Below a symlink
            # that would write through the link (a chain of links, each "inside" on its own,
            # can lead out); below a file, extraction would fail half-way.
            leaves = {PurePosixPath(i.filename.replace("\\", "/")) for i in infos if not i.is_dir()}
            for info in infos:
                name = info.filename
                pure = PurePosixPath(name.replace("\\", "/"))
                for parent in pure.parents:
                    if parent in leaves:
                        raise ArchiveError(f"{name}: lies below {parent}, which is not a directory")
                if pure.is_absolute() or (pure.parts and pure.parts[0].endswith(":")):
                    raise ArchiveError(f"{name}: absolute path in archive")
                if ".." in pure.parts:
                    raise ArchiveError(f"{name}: path escapes the archive (zip slip)")
                if not info.is_dir():
                    if pure in names:
                        # Extracted in turn, a second entry would be written through the first.
                        raise ArchiveError(f"{name}: appears twice in the archive")
                    names.add(pure)
                if _is_symlink(info):
                    if info.file_size >= MAX_LINK_TARGET:
                        raise ArchiveError(
                            f"{name}: symlink target longer than {MAX_LINK_TARGET - 1} bytes"
                        )
                    target = archive.read(info).decode("utf-8", "replace")
                    if not _inside(pure.parent, target):
                        raise ArchiveError(
                            f"{name}: symlink to {target} points outside the archive"
                        )
                    links[pure.parts] = target
                total += info.file_size
                if total > max_extracted:
                    raise ArchiveError(
                        f"archive expands to more than {max_extracted // (1024 * 1024)} MiB"
                    )
            # Each link is inside on its own; composed (x -> a/../.., y -> x/etc) they may not be.
            tree = _Tree(links)
            for parts, target in links.items():
                reason = tree.escape(parts)
                if reason is not None:
                    raise ArchiveError(f"{'/'.join(parts)}: symlink to {target} {reason}")
            bad = archive.testzip()
            if bad is not None:
                raise ArchiveError(f"{bad}: corrupt entry (CRC mismatch)")
            return ArchiveSummary(len(infos), total)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"not a valid zip archive: {exc}") from None
    except (OSError, EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise ArchiveError(f"unreadable archive: {exc}") from None


def extract_archive(path: str | Path, destination: str | Path) -> None:
    """Extract an archive that ``check_archive`` accepted, recreating safe symlinks."""
    check_archive(path)
    dest = Path(destination)
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            target = dest / info.filename.replace("\\", "/")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.parent.resolve().is_relative_to(dest.resolve()):
                raise ArchiveError(f"{info.filename}: would be written outside the destination")
            if _is_symlink(info):
                os.symlink(archive.read(info).decode(), target)
                continue
            with archive.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(target, mode | 0o644)
