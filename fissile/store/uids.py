"""The uid each function's instances run as: one per function, allocated in the store.

A record of kind ``uids`` per allocated uid, named by the uid, holding the function's name: the
store's unique key on (kind, name) is what keeps two functions from ever sharing a uid, on one
node or (with a shared store) on many, so allocation is a store operation, not a counter in
memory. The first uid tried is derived from the name (stable and spread out); a taken one moves
the search on to the next. A uid is freed when its function is deleted, and only then reused.
"""

from __future__ import annotations

import zlib

from fissile.store.base import AlreadyExists, NotFound, Store, StoreError

KIND = "uids"
FIRST_UID = 100_000
UID_COUNT = 65_000  # 100000-164999


def assigned(store: Store) -> dict[str, int]:
    """Every allocated uid, by function name."""
    return {record.data["function"]: int(record.name) for record in store.list(KIND)}


def uid_of(store: Store, function: str) -> int | None:
    return assigned(store).get(function)


def allocate(store: Store, function: str) -> int:
    """The function's uid: the one it has, or a free one, recorded now."""
    current = uid_of(store, function)
    if current is not None:
        return current
    start = zlib.crc32(function.encode()) % UID_COUNT
    for step in range(UID_COUNT):
        uid = FIRST_UID + (start + step) % UID_COUNT
        try:
            store.create(KIND, str(uid), {"function": function})
        except AlreadyExists:
            continue
        return uid
    raise StoreError(f"no free uid left for function {function!r} ({UID_COUNT} in use)")


def release(store: Store, function: str) -> None:
    """Free the function's uid (its function was deleted)."""
    for record in store.list(KIND):
        if record.data.get("function") == function:
            try:
                store.delete(KIND, record.name)
            except NotFound:
                pass
