"""fissile/store/space.py: what counts as a full disk, the error that names the data dir, the
space reserve, and the writers that must survive a full disk (the store, function logs)."""

from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path

import pytest

from fissile.observability import LogBook
from fissile.store import StorageFull
from fissile.store.space import SpaceReserve, is_full, writing
from fissile.store.sqlite import SQLiteStore


def sqlite_full() -> sqlite3.OperationalError:
    """A real SQLITE_FULL: a database capped at its current size asked to grow."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (v TEXT)")
    db.execute("PRAGMA max_page_count = 2")
    try:
        db.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
    except sqlite3.OperationalError as exc:
        return exc
    raise AssertionError("sqlite did not report a full database")


def test_full_disk_errors_are_recognised_and_others_are_not() -> None:
    assert is_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_full(sqlite_full())
    assert not is_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_full(sqlite3.OperationalError("no such table: t"))
    assert not is_full(ValueError("full"))


def test_writing_names_the_data_dir_and_passes_other_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageFull, match=f"data dir {tmp_path}") as caught, writing(tmp_path):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.where == str(tmp_path)
    with pytest.raises(PermissionError), writing(tmp_path):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_the_store_raises_storage_full_and_stays_usable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "fissile.db")
    store.create("functions", "small", {"v": 1})
    store._db.execute("PRAGMA max_page_count = 1")  # "the disk" has no page to spare
    with pytest.raises(StorageFull, match=str(tmp_path)):
        store.create("functions", "big", {"v": "x" * 100_000})
    assert store.find("functions", "big") is None
    assert store.get("functions", "small").data == {"v": 1}
    store._db.execute("PRAGMA max_page_count = 1000000")
    store.create("functions", "big", {"v": "x" * 100_000})
    store.close()


def test_the_reserve_is_kept_released_and_kept_again(tmp_path: Path) -> None:
    reserve = SpaceReserve(tmp_path / "reserve", size=64 * 1024)
    assert reserve.keep() and reserve.held
    assert (tmp_path / "reserve").stat().st_blocks * 512 >= 64 * 1024  # real blocks
    assert reserve.release() and not reserve.held
    assert not reserve.release()  # nothing left to give
    assert reserve.keep() and reserve.held


def test_a_store_keeps_a_reserve_beside_its_database(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "fissile.db").close()
    assert (tmp_path / "fissile.db.reserve").stat().st_size > 0


def test_function_logs_drop_lines_on_a_full_disk_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = LogBook(tmp_path)
    # /dev/full answers every write with ENOSPC.
    logs.function_log("fn").symlink_to("/dev/full")
    with caplog.at_level(logging.WARNING, "fissile.logs"):
        for n in range(3):
            logs.platform("fn", f"line {n}")
    assert [r.message for r in caplog.records if "dropped" in r.message] == [
        f"function log lines are being dropped: {logs.function_log('fn')}:"
        " [Errno 28] No space left on device"
    ]
    logs.function_log("fn").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, "fissile.logs"):
        logs.platform("fn", "fits again")
    assert "3 function log lines were dropped" in caplog.text
    assert logs.function_log("fn").read_text().endswith("fissile INFO [-] fits again\n")
    logs.close()


def test_a_reserve_that_does_not_fit_is_not_tried_on_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = []

    def no_room(fd: int, offset: int, size: int) -> None:
        attempts.append(size)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.posix_fallocate", no_room)
    reserve = SpaceReserve(tmp_path / "reserve", size=4096)
    assert not reserve.keep() and not reserve.keep()
    assert attempts == [4096]  # the second write did not try again so soon
    assert list(tmp_path.iterdir()) == []  # nothing half-made left behind
