"""Content-addressed storage of uploaded source archives: ``archives/<sha256>.zip``."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from fissile.builder.archive import MAX_ARCHIVE_BYTES, ArchiveError, ArchiveSummary, check_archive


class ArchiveTooLarge(ArchiveError):
    pass


class ArchiveStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.zip"

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, chunks: list[bytes] | bytes) -> tuple[str, int, ArchiveSummary]:
        """Store an archive (checked before it is kept); returns its sha256, size and summary."""
        data = chunks if isinstance(chunks, bytes) else b"".join(chunks)
        if len(data) > MAX_ARCHIVE_BYTES:
            limit = MAX_ARCHIVE_BYTES // (1024 * 1024)
            raise ArchiveTooLarge(f"archive is {len(data)} bytes; the limit is {limit} MiB")
        digest = hashlib.sha256(data).hexdigest()
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            summary = check_archive(tmp)
            os.replace(tmp, self.path(digest))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest, len(data), summary
