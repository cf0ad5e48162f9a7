"""System: the spec directory applied to a throw-away ``fissile up`` (the package built from
its requirements.txt), called through its routes and the CLI as a user would."""

from __future__ import annotations

import json

import psycopg
import pytest

from fissile.testing import Platform

pytestmark = pytest.mark.slow  # a platform and a package build: ~15 s


def test_the_api_through_its_routes(fissile_platform: Platform) -> None:
    created = fissile_platform.post("/students", json={"name": "Ann", "email": "ann@example.org"})
    assert created.status_code == 201, created.text
    ann = created.json()
    course = fissile_platform.post("/courses", json={"code": "CS1", "title": "Programming"})
    assert course.status_code == 201, course.text
    enrol = fissile_platform.post(
        f"/courses/{course.json()['id']}/students", json={"student_id": ann["id"]}
    )
    assert enrol.status_code == 201, enrol.text
    assert fissile_platform.get(f"/students/{ann['id']}/courses").json() == [course.json()]
    assert fissile_platform.get(f"/students/{ann['id']}").json() == ann

    bad = fissile_platform.post("/students", json={"name": "Bob"})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "'email' must be a non-empty string"
    gone = fissile_platform.request("DELETE", "/courses/999")
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "not_found")


def test_the_cli_and_a_direct_call(fissile_platform: Platform) -> None:
    out = fissile_platform.cli("fn", "test", "--name", "school", "--subpath", "/courses").out
    assert isinstance(json.loads(out), list)
    direct = fissile_platform.call("school", path="/students")
    assert direct.status_code == 200
    assert isinstance(direct.json(), list)


def test_on_postgresql_the_data_outlives_the_instances(
    fissile_platform: Platform, postgres_url: str
) -> None:
    # Last in this module: it moves the function to PostgreSQL (a roll: new instances), the
    # database's URL kept in a secret rather than in the function's settings.
    fissile_platform.cli(
        "secret", "create", "--name", "school-db", "--from-literal", f"url={postgres_url}"
    )
    fissile_platform.cli(
        "fn", "update", "--name", "school", "--secret-env", "DATABASE_URL=school-db/url"
    )
    shown = fissile_platform.cli("fn", "get", "--name", "school", "-o", "json").out
    assert postgres_url not in shown
    created = fissile_platform.post("/courses", json={"code": "PG1", "title": "Postgres"})
    assert created.status_code == 201, created.text
    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute("SELECT code, title FROM courses").fetchall()
    assert rows == [("PG1", "Postgres")]
    # Another roll (a new instance again): the course is still there.
    before = _pids(fissile_platform)
    assert before
    fissile_platform.cli("fn", "update", "--name", "school", "--memory", "300Mi")
    assert fissile_platform.get("/courses").json() == [created.json()]
    assert not before & _pids(fissile_platform)


def _pids(platform: Platform) -> set[int]:
    out = platform.cli("fn", "get", "--name", "school", "-o", "json").out
    return set(json.loads(out)["status"]["pids"])
