"""fissile/testing/pytest_plugin.py and _platform.py, as a project built on fissile uses them: a
project directory with its code, specs and tests, and ``pytest`` run on it in a subprocess, so
the plugin is found through its ``pytest11`` entry point. Slow: it starts three platforms."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from syskit import write

pytestmark = pytest.mark.slow

STUDENTS = """
def main(request):
    print("asked for", request.path, flush=True)
    if request.path == "/students":
        return ["ann", "bob"]
    if request.path.startswith("/students/"):
        return {"id": request.params.get("id")}
    return "no such page", 404
"""

SPECS = """
apiVersion: fissile.dev/v1
kind: DeploymentConfig
name: school
id: 00000000-school-tests
---
apiVersion: fissile.dev/v1
kind: Function
name: students
code: ../students.py
---
apiVersion: fissile.dev/v1
kind: HTTPTrigger
name: students
function: students
url: /students
---
apiVersion: fissile.dev/v1
kind: HTTPTrigger
name: student
function: students
url: /students/{id}
"""

OTHER_SPECS = """
apiVersion: fissile.dev/v1
kind: DeploymentConfig
name: other
id: 00000000-other-tests
---
apiVersion: fissile.dev/v1
kind: Function
name: teachers
code: ../teachers.py
"""

CONFTEST = """
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fissile_specdir():
    return Path(__file__).parent.parent / "specs"
"""

TESTS = """
import json

import pytest


def test_through_the_routes(fissile_platform):
    assert fissile_platform.get("/students").json() == ["ann", "bob"]
    assert fissile_platform.get("/students/7").json() == {"id": "7"}


def test_a_direct_call_and_the_log(fissile_platform):
    answer = fissile_platform.call("students", path="/elsewhere")
    assert answer.status_code == 404
    fissile_platform.wait_for(
        lambda: "asked for /function/students/elsewhere" in fissile_platform.logs("students"),
        30,
        "the function's print in its log",
    )


def test_the_cli(fissile_platform):
    names = [f["name"] for f in json.loads(fissile_platform.cli("fn", "list", "-o", "json").out)]
    assert names == ["students"]
    tested = fissile_platform.cli("fn", "test", "--name", "students", "--subpath", "/students/3")
    assert json.loads(tested.out) == {"id": "3"}


@pytest.mark.fissile_specs("../other_specs")
def test_a_platform_of_its_own(fissile_platform_fn, fissile_platform):
    assert fissile_platform_fn.router_url != fissile_platform.router_url
    assert fissile_platform_fn.call("teachers").text == "teaching"
    assert fissile_platform.call("teachers").status_code == 404
"""

# A second directory of tests naming other specs: its fissile_platform is another platform.
STAFF_CONFTEST = CONFTEST.replace('"specs"', '"other_specs"').replace(
    ".parent.parent", ".parent.parent.parent"
)
STAFF_TESTS = """
def test_another_spec_directory_gets_its_own_shared_platform(fissile_platform):
    assert fissile_platform.call("teachers").text == "teaching"
    assert fissile_platform.call("students").status_code == 404
"""


def test_a_project_tests_itself_with_the_fissile_platform_fixtures(tmp_path: Path) -> None:
    project = tmp_path / "school"
    write(project / "students.py", STUDENTS)
    write(project / "teachers.py", "def main(request):\n    return 'teaching'\n")
    write(project / "specs" / "school.yaml", SPECS)
    write(project / "other_specs" / "other.yaml", OTHER_SPECS)
    write(project / "tests" / "conftest.py", CONFTEST)
    write(project / "tests" / "test_school.py", TESTS)
    write(project / "tests" / "staff" / "conftest.py", STAFF_CONFTEST)
    write(project / "tests" / "staff" / "test_staff.py", STAFF_TESTS)
    write(project / "pytest.ini", "[pytest]\naddopts = -p no:cacheprovider\n")
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "tests"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    report = f"{completed.stdout}\n{completed.stderr}"
    assert completed.returncode == 0, report
    assert "5 passed" in completed.stdout, report
