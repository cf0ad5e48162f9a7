"""Integration: the function on a real PostgreSQL (a schema of each test's own; skipped when
the machine has none, failed under CI=true), in the test's process and in a real instance
(``invoke_local``); and the database down, forced by a mock and for real."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
import pytest
import school
from school_db import Database

from fissile.testing import call, invoke_local, local_instance, make_context, make_request

SCHOOL = Path(__file__).resolve().parent.parent / "school"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def on_postgres(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    db = Database(postgres_url)
    monkeypatch.setattr(school, "database", db)
    yield db
    db.close()


def test_crud_and_enrolment_on_postgresql(on_postgres: Database) -> None:
    context = make_context("school")

    def send(method: str, path: str, **options: Any) -> Any:
        result = call(school.main, make_request(method, path, **options), context)
        assert result.status < 400, result.text
        return result.json() if result.body else None

    assert on_postgres.kind == "postgresql"
    ann = send("POST", "/students", json={"name": "Ann", "email": "ann@example.org"})
    course = send("POST", "/courses", json={"code": "DB1", "title": "Databases"})
    assert isinstance(ann, dict) and isinstance(course, dict)
    send("POST", f"/courses/{course['id']}/students", json={"student_id": ann["id"]})
    assert send("GET", f"/students/{ann['id']}/courses") == [course]
    taken = call(
        school.main,
        make_request("POST", "/students", json={"name": "Other", "email": "ann@example.org"}),
        context,
    )
    assert taken.status == 409
    assert "duplicate key" in taken.json()["error"]["message"]
    # After the conflict's rollback the connection still serves.
    assert send("GET", "/students") == [ann]


def test_a_real_instance_on_postgresql(postgres_url: str) -> None:
    env = {"DATABASE_URL": postgres_url}
    with local_instance(SCHOOL, entrypoint="school.main", env=env, function="school") as instance:
        created = instance.post("/students", json={"name": "Bob", "email": "bob@example.org"})
        assert created.status == 201, created.text
        assert instance.get("/students").json() == [created.json()]
    # A new instance (a recycle) finds the same data: it lives in PostgreSQL.
    again = invoke_local(
        SCHOOL, make_request("GET", "/students/1"), entrypoint="school.main", env=env
    )
    assert again.json()["email"] == "bob@example.org"


def test_database_down_is_a_503_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(school, "database", Database("postgresql://school@127.0.0.1:1/school"))
    refused = psycopg.OperationalError('connection to server at "127.0.0.1" failed: refused')
    context = make_context("school")
    with mock.patch("psycopg.connect", side_effect=refused):
        result = call(school.main, make_request("GET", "/students"), context)
    assert result.status == 503
    assert result.json() == {
        "error": {
            "code": "database_unavailable",
            "message": 'cannot reach PostgreSQL: connection to server at "127.0.0.1" failed:'
            " refused",
        }
    }
    assert context.messages == [f"database unavailable: {result.json()['error']['message']}"]


def test_a_connection_lost_mid_way_is_a_503_then_reconnects(on_postgres: Database) -> None:
    context = make_context("school")
    assert call(school.main, make_request("GET", "/students"), context).status == 200
    on_postgres._connection.close()  # as a restarted server would leave it
    lost = call(school.main, make_request("GET", "/students"), context)
    assert lost.status == 503
    assert lost.json()["error"]["message"].startswith("lost the database:")
    assert call(school.main, make_request("GET", "/students"), context).status == 200


def test_nothing_listening_is_a_503_from_a_real_instance() -> None:
    url = f"postgresql://school@127.0.0.1:{closed_port()}/school"
    result = invoke_local(
        SCHOOL,
        make_request("GET", "/students"),
        entrypoint="school.main",
        env={"DATABASE_URL": url},
    )
    assert result.status == 503
    error = result.json()["error"]
    assert error["code"] == "database_unavailable"
    assert error["message"].startswith("cannot reach PostgreSQL:")
