"""``fissile up --store URL``: the README's basics on a PostgreSQL store (a fresh schema), and
a restart that finds everything again there rather than in the data dir; a SQLite store
elsewhere; stores it must refuse."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

from pgkit import fresh_schema
from syskit import FISSILE, Platform, Spawn, free_port, wait_for, write


def _names(platform: Platform) -> list[str]:
    return sorted(f["name"] for f in platform.json_of("fn", "list"))


def test_up_on_postgresql_survives_a_restart(spawn: Spawn, tmp_path: Path) -> None:
    with fresh_schema() as url:
        data = tmp_path / "data"
        first = spawn(data, "--store", url)
        write(tmp_path / "hello.py", 'def main():\n    return "Hello, world!"\n')
        write(tmp_path / "hello2.py", 'def main():\n    return "Hello again"\n')
        first.ok(
            "fn", "create", "--name", "hello", "--env", "python",
            "--code", str(tmp_path / "hello.py"),
        )  # fmt: skip
        first.ok("route", "create", "--function", "hello", "--url", "/hello")
        response = first.get("/hello")
        assert (response.status_code, response.text) == (200, "Hello, world!")
        first.ok("fn", "update", "--name", "hello", "--code", str(tmp_path / "hello2.py"))
        wait_for(lambda: first.get("/hello").text == "Hello again", 30, "the update served")
        first.ok("fn", "create", "--name", "doomed", "--code", str(tmp_path / "hello.py"))
        assert _names(first) == ["doomed", "hello"]
        first.ok("fn", "delete", "--name", "doomed")
        assert _names(first) == ["hello"]
        first.stop_cleanly()
        # The state went to PostgreSQL: no SQLite store was made in the data dir.
        assert not (data / "fissile.db").exists()

        second = spawn(data, "--store", url)
        assert _names(second) == ["hello"]
        response = second.get("/hello")
        assert (response.status_code, response.text) == (200, "Hello again")
        revisions = second.json_of("fn", "revisions", "--name", "hello")
        assert len(revisions) == 2, revisions
        second.stop_cleanly()


def test_a_bad_store_is_a_clear_error(spawn: Spawn, tmp_path: Path) -> None:
    import subprocess

    from syskit import FISSILE

    result = subprocess.run(
        [str(FISSILE), "up", "--data-dir", str(tmp_path / "d"), "--store", "mysql://x/y"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "must be sqlite:///path or postgresql://..." in result.stderr


def test_store_sqlite_url_elsewhere(spawn: Spawn, tmp_path: Path) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "state" / "fissile.db"
    platform = spawn(data, "--store", f"sqlite://{elsewhere}")
    write(tmp_path / "hello.py", 'def main():\n    return "Hello, world!"\n')
    platform.ok("fn", "create", "--name", "hello", "--code", str(tmp_path / "hello.py"))
    platform.stop_cleanly()
    assert elsewhere.is_file()
    assert not (data / "fissile.db").exists()


def test_a_newer_schema_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "fissile.db") as db:
        db.execute("PRAGMA user_version = 99")
    result = subprocess.run(
        [
            str(FISSILE), "up", "--data-dir", str(data),
            "--port", str(free_port()), "--api-port", str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result
    assert "has schema version 99, but this fissile knows only versions up to 1" in result.stderr
    assert "Traceback" not in result.stderr
