"""Which top-level modules a package's own source imports, read by the supervisor (root) from a
deploy directory a tenant shaped: every read is bounded.

- Nothing is followed: directories are walked by descriptor and files opened with
  ``O_NOFOLLOW``, so a link (``evil.py -> /dev/zero``, or a chain of them) is never read.
- Only regular files are read (never a FIFO, which would block, or a device, endless).
- At most ``MAX_FILE_SIZE`` bytes a file (a bigger file is skipped), ``MAX_FILES`` files and
  ``MAX_PACKAGE_BYTES`` bytes a package: past those the scan fails with ``ScanError``, and the
  package is served without a package zygote.

Imports are found with ``tokenize``, not ``ast``: a 1 MiB file of ``a,a,a,...`` takes ~700 MB
to parse into an AST and CPython keeps much of it; the tokenizer holds one line at a time.
"""

from __future__ import annotations

import io
import os
import stat
import token
import tokenize

MAX_FILES = 500
MAX_FILE_SIZE = 1024 * 1024
MAX_PACKAGE_BYTES = 4 * 1024 * 1024
MAX_TOP_LEVEL_SIZE = 64 * 1024  # a *.dist-info/top_level.txt
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class ScanError(Exception):
    """The package is past a bound of the scan: it gets no package zygote."""


class _Budget:
    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0

    def charge(self, size: int) -> None:
        self.files += 1
        self.bytes += size
        if self.files > MAX_FILES:
            raise ScanError(f"more than {MAX_FILES} source files")
        if self.bytes > MAX_PACKAGE_BYTES:
            raise ScanError(f"more than {MAX_PACKAGE_BYTES // 2**20} MiB of source")


def read_regular(name: str, dir_fd: int, limit: int) -> bytes | None:
    """The content of regular file ``name`` in ``dir_fd``, or None if it is anything else
    (a link, a FIFO, a device, a directory), unreadable, or longer than ``limit``."""
    try:
        # Stat first: opening some devices acts on them, and no link is followed either way.
        if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return None
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        info = os.fstat(fd)  # what was opened, should it have changed since the stat
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        return None if len(data) > limit else data
    except OSError:
        return None
    finally:
        os.close(fd)


def scan_package(deploy_dir: str) -> tuple[frozenset[str], frozenset[str]]:
    """(top-level modules the package's own source imports, top-level modules it provides).

    Reads the ``.py`` files of the package but not those of libraries installed into it (listed
    by their ``*.dist-info``); nothing runs.
    """
    provided: set[str] = set()
    installed: set[str] = set()
    try:
        root_fd = os.open(deploy_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return frozenset(), frozenset()
    try:
        with os.scandir(root_fd) as entries:
            listing = list(entries)
        for entry in listing:
            name = entry.name
            if name.endswith((".dist-info", ".egg-info")):
                installed.update(_top_level(name, root_fd))
            # A stat through a link reads nothing, and a linked module (mylib -> vendor/mylib)
            # is the package's own: left out, the zygote would import the environment's.
            elif entry.is_dir() and name.isidentifier():
                provided.add(name)
            elif entry.is_file():
                module = name.split(".", 1)[0]
                if name.endswith((".py", ".so", ".pyc", ".pyd")) and module.isidentifier():
                    provided.add(module)
    finally:
        os.close(root_fd)
    imports: set[str] = set()
    budget = _Budget()
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(deploy_dir, follow_symlinks=False):
        relative = os.path.relpath(dirpath, deploy_dir)
        top = relative.split(os.sep, 1)[0]
        if relative != "." and (top in installed or not top.isidentifier()):
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for filename in filenames:
            if not filename.endswith(".py"):
                continue
            source = read_regular(filename, dir_fd, MAX_FILE_SIZE)
            if source is None:
                continue
            budget.charge(len(source))
            imports |= imports_of(source)
    return frozenset(imports), frozenset(provided | installed)


def _top_level(dist_info: str, root_fd: int) -> list[str]:
    try:
        fd = os.open(
            dist_info, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd
        )
    except OSError:
        return []
    try:
        text = read_regular("top_level.txt", fd, MAX_TOP_LEVEL_SIZE)
    finally:
        os.close(fd)
    return text.decode("utf-8", "replace").split() if text else []


_STATEMENT_ENDS = {token.NEWLINE, token.INDENT, token.DEDENT, token.ENCODING}


def imports_of(source: bytes) -> set[str]:
    """Top-level names of the absolute imports in ``source`` (``import a.b as c, d``: a, d;
    ``from e.f import g``: e; ``from . import h``: none), wherever they are."""
    names: set[str] = set()
    statement_start = True
    keyword = ""  # "import" or "from" while inside such a statement
    expecting_name = False
    try:
        for kind, text, *_ in tokenize.tokenize(io.BytesIO(source).readline):
            if kind in _STATEMENT_ENDS or (kind == token.OP and text == ";"):
                statement_start, keyword = True, ""
                continue
            if kind in (token.NL, token.COMMENT):
                continue
            if statement_start:
                statement_start = False
                if kind == token.NAME and text in ("import", "from"):
                    keyword, expecting_name = text, True
                continue
            if keyword == "import":
                if expecting_name and kind == token.NAME:
                    names.add(text)
                    expecting_name = False
                elif kind == token.OP and text == ",":
                    expecting_name = True
            elif keyword == "from":
                if kind == token.NAME:  # not an OP: a relative import (from . / from .x)
                    names.add(text)
                keyword = ""
    except (tokenize.TokenError, SyntaxError):
        pass  # a file that does not tokenize cannot be imported either: what was seen stands
    return names
