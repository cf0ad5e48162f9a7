"""``fissile store migrate`` (fissile/store/transfer.py): a SQLite file into PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pgkit import fresh_schema

from fissile.cli import cli
from fissile.store.postgres import PostgresStore
from fissile.store.sqlite import SQLiteStore


@pytest.fixture
def target() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "fissile.db"
    store = SQLiteStore(path)
    store.create("environments", "python", {"image": "py"})
    store.create("functions", "hello", {"v": 1})
    store.update("functions", "hello", {"v": 2})
    store.update("functions", "hello", {"v": 3, "nested": {"list": [1, None]}})
    store.create("functions", "other", {})
    store.create("packages", "hello", {"source": "x"})
    for number in range(1, 4):
        store.add_revision("hello", f"d{number}", {"changes": [number]})
    store.prune_revisions("hello", 1)
    store.close()
    return path


def migrate(source: Path, target: str, *more: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["store", "migrate", "--from", f"sqlite://{source}", "--to", target, *more]
    )
    return result.exit_code, result.output


def test_everything_moves_as_it_was(source: Path, target: str) -> None:
    code, output = migrate(source, target)
    assert code == 0, output
    assert output.splitlines() == [
        "environments: 1",
        "functions: 2",
        "packages: 1",
        "revisions: 3",
        "moved 4 resources and 3 revisions",
    ]
    old, new = SQLiteStore(source), PostgresStore(target)
    try:
        for kind in ("environments", "functions", "packages"):
            assert new.list(kind) == old.list(kind)
        assert new.get("functions", "hello").generation == 3
        assert new.revisions("hello") == old.revisions("hello")
        assert [r.pruned for r in new.revisions("hello")] == [True, True, False]
        assert new.kept_deploys() == {"d3"}
        # The cluster carries on from there.
        assert new.add_revision("hello", "d4", {}).number == 4
        assert new.update("functions", "hello", {}, generation=3).generation == 4
    finally:
        old.close()
        new.close()


def test_a_non_empty_target_is_refused_unless_forced(source: Path, target: str) -> None:
    store = PostgresStore(target)
    store.create("functions", "already", {})
    store.close()
    code, output = migrate(source, target)
    assert code == 1
    assert "the target store holds 1 rows already; --force replaces them" in output
    code, output = migrate(source, target, "--force")
    assert code == 0, output
    store = PostgresStore(target)
    try:
        assert store.find("functions", "already") is None
        assert [r.name for r in store.list("functions")] == ["hello", "other"]
    finally:
        store.close()


def test_bad_arguments(tmp_path: Path, target: str) -> None:
    code, output = migrate(tmp_path / "none.db", target)
    assert code == 1 and f"no SQLite store at {tmp_path / 'none.db'}" in output
    result = CliRunner().invoke(
        cli, ["store", "migrate", "--from", "postgresql://x/y", "--to", target]
    )
    assert result.exit_code == 2 and "must be sqlite:///path" in result.output
