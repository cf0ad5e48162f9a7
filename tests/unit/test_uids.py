"""fissile/store/uids.py: one uid per function, unique by the store's key, kept, freed."""

from __future__ import annotations

import zlib

from fissile.store.sqlite import SQLiteStore
from fissile.store.uids import FIRST_UID, UID_COUNT, allocate, assigned, release, uid_of


def colliding_names() -> tuple[str, str]:
    seen: dict[int, str] = {}
    for i in range(100_000):
        name = f"fn-{i}"
        bucket = zlib.crc32(name.encode()) % UID_COUNT
        if bucket in seen:
            return seen[bucket], name
        seen[bucket] = name
    raise AssertionError("no collision")


def test_names_that_collide_get_distinct_uids() -> None:
    store = SQLiteStore(":memory:")
    first, second = colliding_names()
    a, b = allocate(store, first), allocate(store, second)
    assert a != b
    assert FIRST_UID <= a < FIRST_UID + UID_COUNT and FIRST_UID <= b < FIRST_UID + UID_COUNT
    assert b == FIRST_UID + (a - FIRST_UID + 1) % UID_COUNT  # the next one along
    assert assigned(store) == {first: a, second: b}


def test_a_uid_is_kept_and_survives_reopening(tmp_path: object) -> None:
    path = f"{tmp_path}/fissile.db"
    store = SQLiteStore(path)
    uid = allocate(store, "f")
    assert allocate(store, "f") == uid
    store.close()
    assert uid_of(SQLiteStore(path), "f") == uid


def test_a_uid_is_reused_only_after_its_function_is_deleted() -> None:
    store = SQLiteStore(":memory:")
    first, second = colliding_names()
    a = allocate(store, first)
    release(store, first)
    assert uid_of(store, first) is None
    assert allocate(store, second) == a  # free again: the second name's first choice
    assert allocate(store, first) != a
