"""Revisions (fissile/store/revisions.py) in both stores: a real SQLite file and a real
PostgreSQL schema, the same test bodies (``any_store``, ``store_url``: integration conftest)."""

from __future__ import annotations

import pytest

from fissile.store import Store, open_store
from fissile.store.revisions import HISTORY


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


def test_revisions_are_numbered_per_function(store: Store) -> None:
    first = store.add_revision("a", "d1", {"changes": ["created"]})
    second = store.add_revision("a", "d2", {"changes": ["code"]})
    other = store.add_revision("b", None, {"changes": ["created"]})
    assert (first.number, second.number, other.number) == (1, 2, 1)
    assert [r.number for r in store.revisions("a")] == [1, 2]
    assert store.latest_revision("a") == second
    assert store.revision("a", 1) == first
    assert store.revision("a", 3) is None
    assert store.latest_revision("nobody") is None
    assert other.deploy is None


def test_revisions_survive_a_reopen(store_url: str) -> None:
    store = open_store(store_url)
    written = store.add_revision("a", "d1", {"spec": {"memory": 1}, "changes": ["created"]})
    store.close()
    again = open_store(store_url)
    try:
        assert again.revisions("a") == [written]
        assert again.add_revision("a", "d2", {}).number == 2
    finally:
        again.close()


def test_pruning_keeps_the_newest_builds(store: Store) -> None:
    for number in range(1, 6):
        store.add_revision("a", f"d{number}", {})
    store.add_revision("b", "d1", {})
    pruned = store.prune_revisions("a", keep=2)
    assert [r.number for r in pruned] == [1, 2, 3]
    assert [(r.number, r.pruned) for r in store.revisions("a")] == [
        (1, True),
        (2, True),
        (3, True),
        (4, False),
        (5, False),
    ]
    # Already pruned ones are not reported again.
    assert store.prune_revisions("a", keep=2) == []
    # d1 is still kept by b's revision.
    assert store.kept_deploys() == {"d1", "d4", "d5"}


def test_old_revisions_are_forgotten_past_the_history(store: Store) -> None:
    for _ in range(HISTORY + 5):
        store.add_revision("a", None, {})
    store.prune_revisions("a", keep=3)
    numbers = [r.number for r in store.revisions("a")]
    assert numbers == list(range(6, HISTORY + 6))
    # Numbers go on from the newest, never reused.
    assert store.add_revision("a", None, {}).number == HISTORY + 6


def test_forgetting_a_function(store: Store) -> None:
    store.add_revision("a", "d1", {})
    store.add_revision("a", "d2", {})
    store.add_revision("b", "d3", {})
    gone = store.forget_revisions("a")
    assert [r.deploy for r in gone] == ["d1", "d2"]
    assert store.revisions("a") == []
    assert store.kept_deploys() == {"d3"}
    # A function made again under the name starts from 1.
    assert store.add_revision("a", None, {}).number == 1
