"""``fissile store schema``: the version a store records against this fissile's, read-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
from click.testing import CliRunner
from pgkit import fresh_schema

from fissile.cli import cli
from fissile.store import schema
from fissile.store.postgres import PostgresStore
from fissile.store.sqlite import SQLiteStore


def show(url: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["store", "schema", "--store", url])
    return result.exit_code, result.output


def test_sqlite_current_older_and_newer(tmp_path: Path) -> None:
    path = tmp_path / "fissile.db"
    SQLiteStore(path).close()
    code, output = show(f"sqlite://{path}")
    assert code == 0, output
    assert output.splitlines() == [
        f"store schema version: {schema.VERSION}",
        f"this fissile's: {schema.VERSION}",
        "up to date",
    ]

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    code, output = show(f"sqlite://{empty}")
    assert code == 0, output
    assert "store schema version: none recorded" in output
    assert f"starting this fissile migrates the store to version {schema.VERSION}" in output

    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {schema.VERSION + 1}")
    db.close()
    code, output = show(f"sqlite://{path}")
    assert code == 1
    assert f"store schema version: {schema.VERSION + 1}" in output
    assert "newer than this fissile" in output
    # read-only: the newer version is still what the file says
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION + 1
    db.close()


def test_sqlite_missing_file_and_bad_url(tmp_path: Path) -> None:
    code, output = show(f"sqlite://{tmp_path}/nothing.db")
    assert code == 1 and "no store at" in output
    assert not (tmp_path / "nothing.db").exists()
    code, output = show("mysql://x")
    assert code == 2 and "must be sqlite:///path or postgresql://" in output


def test_postgresql_before_and_after_the_first_start() -> None:
    with fresh_schema() as url:
        code, output = show(url)
        assert code == 0, output
        assert "store schema version: none recorded" in output
        with psycopg.connect(url) as conn:  # still nothing created by the look
            assert conn.execute("SELECT to_regclass('fissile_schema')").fetchone() == (None,)
        PostgresStore(url).close()
        code, output = show(url)
        assert code == 0, output
        assert output.splitlines()[-1] == "up to date"


def test_postgresql_unreachable() -> None:
    code, output = show("postgresql://nobody@127.0.0.1:1/none")
    assert code == 1 and "cannot read the store at" in output
