"""Unit: the function object called in the test's process with fissile.testing's fakes, on a
SQLite file of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import school
from school_db import Database

from fissile.testing import Result, call, make_context, make_request


@pytest.fixture(autouse=True)
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'school.sqlite3'}")
    monkeypatch.setattr(school, "database", db)
    yield db
    db.close()


def send(method: str, path: str, **options: Any) -> Result:
    return call(school.main, make_request(method, path, **options), make_context("school"))


def test_create_read_update_delete_a_student() -> None:
    created = send("POST", "/students", json={"name": "Ann Lee", "email": "ann@example.org"})
    assert created.status == 201
    ann = created.json()
    assert ann == {"id": 1, "name": "Ann Lee", "email": "ann@example.org"}

    assert send("GET", "/students/1").json() == ann
    assert send("GET", "/students").json() == [ann]

    changed = send("PUT", "/students/1", json={"name": "Ann Li", "email": "ann@example.org"})
    assert changed.json()["name"] == "Ann Li"

    deleted = send("DELETE", "/students/1")
    assert (deleted.status, deleted.body) == (204, b"")
    missing = send("GET", "/students/1")
    assert missing.status == 404
    assert missing.json() == {"error": {"code": "not_found", "message": "no student with id 1"}}


def test_enrolment_both_ways() -> None:
    ann = send("POST", "/students", json={"name": "Ann", "email": "ann@example.org"}).json()
    bob = send("POST", "/students", json={"name": "Bob", "email": "bob@example.org"}).json()
    course = send("POST", "/courses", json={"code": "CS101", "title": "Programming"}).json()

    for student in (ann, bob):
        enrolled = send(
            "POST", f"/courses/{course['id']}/students", json={"student_id": student["id"]}
        )
        assert enrolled.status == 201, enrolled.text

    assert [s["name"] for s in send("GET", f"/courses/{course['id']}/students").json()] == [
        "Ann",
        "Bob",
    ]
    assert send("GET", f"/students/{ann['id']}/courses").json() == [course]

    again = send("POST", f"/courses/{course['id']}/students", json={"student_id": ann["id"]})
    assert again.status == 409
    assert again.json()["error"]["message"] == "student 1 is already enrolled in course 1"

    assert send("DELETE", f"/courses/{course['id']}/students/{ann['id']}").status == 204
    assert send("GET", f"/students/{ann['id']}/courses").json() == []
    # Deleting a course ends its enrolments.
    assert send("DELETE", f"/courses/{course['id']}").status == 204
    assert send("GET", f"/students/{bob['id']}/courses").json() == []


def test_a_direct_call_path_means_the_same_as_a_route() -> None:
    send("POST", "/students", json={"name": "Ann", "email": "ann@example.org"})
    direct = send("GET", "/function/school/students/1")
    assert direct.json()["name"] == "Ann"


@pytest.mark.parametrize(
    ("method", "path", "options", "status", "message"),
    [
        ("POST", "/students", {"body": "{not json"}, 400, "the body is not JSON"),
        ("POST", "/students", {"json": ["Ann"]}, 400, "expected a JSON object"),
        ("POST", "/students", {"json": {"name": "Ann"}}, 400, "'email' must be a non-empty"),
        (
            "POST",
            "/students",
            {"json": {"name": "Ann", "email": "nope"}},
            400,
            "'email' is not an email address: nope",
        ),
        (
            "POST",
            "/courses",
            {"json": {"code": "X", "title": "Y", "room": 4}},
            400,
            "unknown fields ['room']",
        ),
        ("POST", "/courses/1/students", {"json": {"student_id": "1"}}, 400, "<integer>"),
        ("GET", "/teachers", {}, 404, "no such resource: /teachers"),
        ("GET", "/students/ann", {}, 404, "'ann' is not an id"),
        ("GET", "/students/1/teachers", {}, 404, "no such resource"),
        ("PATCH", "/students/1", {}, 405, "PATCH is not allowed here (allowed: GET, PUT, DELETE)"),
        ("POST", "/courses/9/students", {"json": {"student_id": 1}}, 404, "no course with id 9"),
        ("DELETE", "/courses/9/students/1", {}, 404, "not enrolled"),
    ],
)
def test_bad_requests_get_precise_errors(
    method: str, path: str, options: dict[str, Any], status: int, message: str
) -> None:
    result = send(method, path, **options)
    assert result.status == status, result.text
    assert message in result.json()["error"]["message"]


def test_method_not_allowed_says_which_are() -> None:
    assert send("DELETE", "/students").header("allow") == "GET, POST"


def test_duplicate_email_is_a_conflict() -> None:
    body = {"name": "Ann", "email": "ann@example.org"}
    assert send("POST", "/students", json=body).status == 201
    taken = send("POST", "/students", json=body)
    assert taken.status == 409
    assert taken.json()["error"]["code"] == "conflict"
