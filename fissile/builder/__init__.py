"""Safe archive handling, content-addressed storage and package builds."""

from fissile.builder.archive import ArchiveError, check_archive, extract_archive, zip_path
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
