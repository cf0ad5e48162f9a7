"""System: the spec directory applied to a throw-away ``fissile up`` (the package built from
its requirements.txt), called through its routes and the CLI as a user would."""

from __future__ import annotations

import json

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
