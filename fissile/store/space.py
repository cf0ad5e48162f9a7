"""A full disk under the data dir: one error for every write path, and a reserve of space that
lets deletes go through (they are how an operator frees space).

SQLite reports a full disk as ``SQLITE_FULL`` ("database or disk is full"), files as
``ENOSPC`` (or ``EDQUOT`` over a quota); both become :class:`StorageFull`, which the control
API and the async front door answer with ``507 Insufficient Storage``.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fissile.store.base import StoreError

logger = logging.getLogger("fissile.store")

# After failing to take the reserve back (still nearly full), writes go on without trying
# again for this long: a failing allocation per write would cost each a system call or more.
RESERVE_RETRY = 5.0
# Enough for a few deletes in SQLite's write-ahead log (a page or three each), small enough to
# matter nowhere else.
RESERVE_BYTES = 1024 * 1024

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class StorageFull(StoreError):
    """A write failed because the filesystem holding the data dir has no space left."""

    def __init__(self, where: Path | str) -> None:
        super().__init__(
            f"no space left on the disk of the data dir {where}; free space there"
            " (deleting resources helps) and try again"
        )
        self.where = str(where)


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full (as opposed to any other I/O fault)."""
    if isinstance(exc, StorageFull):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        # Extended result codes keep the primary code in their low byte.
        return code is not None and code & 0xFF == sqlite3.SQLITE_FULL
    return False


@contextmanager
def writing(where: Path | str) -> Iterator[None]:
    """Turn a full-disk fault inside the block into :class:`StorageFull` naming ``where``."""
    try:
        yield
    except StorageFull:
        raise
    except (OSError, sqlite3.Error) as exc:
        if is_full(exc):
            raise StorageFull(where) from exc
        raise


class SpaceReserve:
    """A file of allocated blocks kept beside a database and given up when a delete finds the
    disk full, so that the delete (which frees space) can still be written."""

    def __init__(self, path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size = size
        # Known rather than looked up: a store asks after every write (a stat cost ~13 us on
        # a loaded host, as much as the write itself).
        self.held = False
        self._retry_at = 0.0

    def keep(self) -> bool:
        """Make sure the reserve exists; False (and nothing left behind) when there is no
        room for it yet."""
        if self.path.is_file() and self.path.stat().st_size >= self.size:
            self.held = True
            return True
        if time.monotonic() < self._retry_at:
            return False
        partial = self.path.with_name(self.path.name + ".part")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                _allocate(fd, self.size)
            finally:
                os.close(fd)
            os.replace(partial, self.path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            self._retry_at = time.monotonic() + RESERVE_RETRY
            if not is_full(exc):
                logger.warning("cannot keep a space reserve at %s: %s", self.path, exc)
            return False
        self.held = True
        return True

    def release(self) -> bool:
        """Give the reserve's space back to the filesystem; False when there was none."""
        self.held = False
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        logger.warning("the disk is full: released the space reserve %s for a delete", self.path)
        return True


def _allocate(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    # Filesystems without fallocate: write the blocks.
    block = b"\0" * 65536
    written = 0
    while written < size:
        written += os.write(fd, block[: size - written])
    os.fsync(fd)
