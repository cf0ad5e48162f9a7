"""Schema versions: which layout of tables a database holds, and the steps between layouts.

Each store records the version of its schema in the database itself (SQLite's
``user_version``, a one-row table on PostgreSQL) and, when it opens an older one, runs the
steps up to ``VERSION`` in one transaction. A database written by a newer fissile is never
touched: the store refuses to open it, naming both versions, rather than misread it.

Version 1 is the layout fissile had before versions were recorded: a database without a
recorded version but with those tables is adopted as version 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from fissile.store.base import StoreError

#: The schema this fissile reads and writes.
VERSION = 1


class SchemaTooNew(StoreError):
    def __init__(self, where: str, found: int, known: int) -> None:
        super().__init__(
            f"the store at {where} has schema version {found}, but this fissile knows only"
            f" versions up to {known}: upgrade fissile (or open a copy made before the"
            " upgrade)"
        )
        self.found = found
        self.known = known


def steps(
    found: int,
    migrations: Mapping[int, Sequence[str]],
    *,
    where: str,
    known: int | None = None,
) -> list[tuple[int, Sequence[str]]]:
    """The migrations to run from ``found`` to ``known`` (``VERSION``): (version reached,
    statements). ``migrations[v]`` turns a version ``v - 1`` database into version ``v``.
    """
    known = VERSION if known is None else known
    if found > known:
        raise SchemaTooNew(where, found, known)
    plan = []
    for version in range(found + 1, known + 1):
        if version not in migrations:
            raise StoreError(f"no migration to schema version {version} (from {found})")
        plan.append((version, migrations[version]))
    return plan


def upgrade(
    found: int,
    migrations: Mapping[int, Sequence[str]],
    execute: Callable[[str], object],
    record: Callable[[int], object],
    *,
    where: str,
    known: int | None = None,
) -> int:
    """Run the steps from ``found`` (inside the caller's transaction); the version reached."""
    reached = found
    for version, statements in steps(found, migrations, where=where, known=known):
        for statement in statements:
            execute(statement)
        reached = version
    if reached != found:
        record(reached)
    return reached
