"""Spec directories: loading with file and line, validation of every document at once, and the
plan of what apply would do (against a live state given as plain data)."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fissile.builder.archive import zip_path
from fissile.client import ClientError
from fissile.specs import deployment
from fissile.specs.apply import execute
from fissile.specs.deployment import LABEL
from fissile.specs.documents import load_file
from fissile.specs.plan import make_plan
from fissile.specs.validate import load_specs

DEPLOYMENT = "d-1"
BUILTIN = {"name": "python", "image": "python", "poolsize": 3, "preload": [], "labels": {}}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    directory = tmp_path / "specs"
    deployment.init(directory, "demo", DEPLOYMENT)
    write(tmp_path / "hello.py", "def main(request):\n    return 'hi'\n")
    write(tmp_path / "lib" / "util.py", "X = 1\n")
    write(
        directory / "app.yaml",
        """
        apiVersion: fissile.dev/v1
        kind: Function
        name: hello
        code: ../hello.py
        timeout: 30s
        ---
        apiVersion: fissile.dev/v1
        kind: Package
        name: lib
        source: ../lib
        ---
        apiVersion: fissile.dev/v1
        kind: Function
        name: uses-lib
        package: lib
        entrypoint: util.main
        ---
        apiVersion: fissile.dev/v1
        kind: HTTPTrigger
        name: hello-route
        function: hello
        url: /hello
        methods: [GET, POST]
        """,
    )
    return directory


# -- loading -------------------------------------------------------------------------------


def test_documents_keep_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.yaml",
        """
        # a comment
        kind: A
        nested:
          list:
            - one
            - two: 2
        ---
        kind: B
        """,
    )
    documents, errors = load_file(path)
    assert errors == []
    assert [d.kind for d in documents] == ["A", "B"]
    assert [d.line for d in documents] == [2, 8]
    assert documents[0].line_of(("nested", "list", 1, "two")) == 6
    # A missing field points at the deepest part that exists.
    assert documents[0].line_of(("nested", "absent")) == 3


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "kind: A\nname: [unclosed\nother: 1\n")
    _, errors = load_file(path)
    assert len(errors) == 1
    assert errors[0].file == path
    assert errors[0].line == 3
    assert "invalid YAML" in errors[0].message


def test_valid_directory_declares_resources_with_hashes_and_labels(specs: Path) -> None:
    loaded = load_specs(specs)
    assert loaded.errors == []
    assert loaded.deployment is not None and loaded.deployment.id == DEPLOYMENT
    found = {(r.kind, r.name): r for r in loaded.resources}
    assert set(found) == {
        ("packages", "hello-code"),
        ("functions", "hello"),
        ("packages", "lib"),
        ("functions", "uses-lib"),
        ("httptriggers", "hello-route"),
    }
    code = found["packages", "hello-code"]
    assert code.archive == zip_path(specs.parent / "hello.py")
    assert code.body["source"] == hashlib.sha256(code.archive).hexdigest()
    assert code.body["owner"] == "hello"
    assert found["functions", "hello"].body["package"] == "hello-code"
    assert found["functions", "hello"].body["timeout"] == 30.0
    assert found["functions", "hello"].body["env"] == "python"
    for resource in loaded.resources:
        assert resource.body["labels"] == {LABEL: DEPLOYMENT}


def test_every_error_at_once_with_file_line_and_field(specs: Path) -> None:
    bad = write(
        specs / "bad.yaml",
        """
        apiVersion: fissile.dev/v1
        kind: Function
        name: broken
        code: ../hello.py
        timeout: soon
        min_scale: 5
        max_scale: 2
        ---
        apiVersion: fissile.dev/v1
        kind: HTTPTrigger
        name: Bad_Name
        function: hello
        url: no-slash
        methods: [GET, FETCH]
        ---
        apiVersion: fissile.dev/v1
        kind: Package
        name: missing-src
        source: ../nowhere
        ---
        apiVersion: fissile.dev/v1
        kind: KubernetesWatchTrigger
        name: tick
        cron: "@every 1m"
        ---
        apiVersion: fissile.dev/v1
        kind: Frobnicator
        name: x
        ---
        apiVersion: example.com/v9
        kind: Function
        """,
    )
    errors = load_specs(specs).errors
    located = {(e.file.name, e.line, e.path) for e in errors}
    assert ("bad.yaml", 5, "timeout") in located
    assert ("bad.yaml", 11, "name") in located
    assert ("bad.yaml", 13, "url") in located
    assert ("bad.yaml", 14, "methods") in located
    assert ("bad.yaml", 19, "source") in located
    assert ("bad.yaml", 22, "kind") in located
    assert ("bad.yaml", 27, "kind") in located
    assert ("bad.yaml", 30, "apiVersion") in located
    messages = {str(e) for e in errors}
    assert (
        f"{bad}:22: kind: kind KubernetesWatchTrigger is not supported yet by this fissile"
        in messages
    )
    assert any("unknown kind 'Frobnicator'" in m for m in messages)
    assert any("does not exist" in m and ":19: source:" in m for m in messages)


def test_scale_bounds_error_points_at_the_document(specs: Path) -> None:
    write(
        specs / "scale.yaml",
        """
        apiVersion: fissile.dev/v1
        kind: Function
        name: scaled
        package: lib
        min_scale: 5
        max_scale: 2
        """,
    )
    errors = load_specs(specs).errors
    assert len(errors) == 1
    assert errors[0].line == 1
    assert "min_scale (5) cannot exceed max_scale (2)" in errors[0].message


def test_duplicates_and_code_plus_package_are_errors(specs: Path) -> None:
    write(
        specs / "dup.yaml",
        """
        apiVersion: fissile.dev/v1
        kind: Package
        name: lib
        source: ../lib
        ---
        apiVersion: fissile.dev/v1
        kind: Function
        name: both
        package: lib
        code: ../hello.py
        """,
    )
    messages = [str(e) for e in load_specs(specs).errors]
    assert any("dup.yaml:3: name: package 'lib' is also declared at" in m for m in messages)
    assert any("dup.yaml:10: code: give exactly one of package, code" in m for m in messages)


def test_missing_directory_and_missing_deployment(tmp_path: Path) -> None:
    missing = str(load_specs(tmp_path / "nope").errors[0])
    assert (
        missing == f"{tmp_path / 'nope'}: no spec directory here: run `fissile spec init --dir"
        f" {tmp_path / 'nope'}`"
    )
    write(tmp_path / "specs" / "a.yaml", "apiVersion: fissile.dev/v1\nkind: Environment\nname: e\n")
    loaded = load_specs(tmp_path / "specs")
    assert loaded.errors == [] and loaded.deployment is None
    assert loaded.resources[0].body["labels"] == {}


def test_init_refuses_to_replace_the_deployment(tmp_path: Path) -> None:
    deployment.init(tmp_path / "specs")
    with pytest.raises(FileExistsError):
        deployment.init(tmp_path / "specs")


# -- planning ------------------------------------------------------------------------------


def live_of(specs: Path, **overrides: Any) -> dict[str, list[dict[str, Any]]]:
    """The live state right after applying ``specs``: what the API would list."""
    live: dict[str, list[dict[str, Any]]] = {"environments": [BUILTIN]}
    for resource in load_specs(specs).resources:
        live.setdefault(resource.kind, []).append({**resource.body, "generation": 1})
    return live


def test_plan_of_empty_platform_creates_in_dependency_order(specs: Path) -> None:
    live = {"environments": [BUILTIN]}
    plan = make_plan(load_specs(specs).resources, live, DEPLOYMENT, delete=False)
    assert plan.errors == []
    assert [str(s) for s in plan.steps] == [
        "create package 'hello-code'",
        "create package 'lib'",
        "create function 'hello'",
        "create function 'uses-lib'",
        "create HTTP trigger 'hello-route'",
    ]


def test_plan_after_apply_is_all_unchanged(specs: Path) -> None:
    plan = make_plan(load_specs(specs).resources, live_of(specs), DEPLOYMENT, delete=True)
    assert plan.changes == []
    assert plan.summary() == "0 to create, 0 to update, 0 to delete, 5 unchanged"


def test_plan_updates_only_what_changed(specs: Path) -> None:
    live = live_of(specs)
    (specs.parent / "hello.py").write_text("def main(request):\n    return 'changed'\n")
    plan = make_plan(load_specs(specs).resources, live, DEPLOYMENT, delete=False)
    assert [str(s) for s in plan.changes] == ["update package 'hello-code' (source)"]


def test_plan_deletes_only_its_own_with_delete(specs: Path) -> None:
    live = live_of(specs)
    foreign = {"name": "theirs", "function": "hello", "url": "/t", "methods": ["GET"]}
    other = {**foreign, "name": "other-dep", "url": "/o", "labels": {LABEL: "someone-else"}}
    live["httptriggers"] += [foreign, other]
    text = (specs / "app.yaml").read_text()
    (specs / "app.yaml").write_text(
        text[: text.index("---\napiVersion: fissile.dev/v1\nkind: HTTP")]
    )
    resources = load_specs(specs).resources

    kept = make_plan(resources, live, DEPLOYMENT, delete=False)
    assert kept.changes == []
    assert [str(s) for s in kept.orphans] == ["delete HTTP trigger 'hello-route'"]

    deleting = make_plan(resources, live, DEPLOYMENT, delete=True)
    assert [str(s) for s in deleting.changes] == ["delete HTTP trigger 'hello-route'"]

    everything = make_plan([], live, DEPLOYMENT, delete=True)
    assert [str(s) for s in everything.changes] == [
        "delete HTTP trigger 'hello-route'",
        "delete function 'hello'",
        "delete function 'uses-lib'",
        "delete package 'hello-code'",
        "delete package 'lib'",
    ]


def test_plan_refuses_to_take_over_a_different_resource(specs: Path) -> None:
    live = {
        "environments": [BUILTIN],
        "packages": [{"name": "lib", "env": "python", "source": "0" * 64}],
    }
    plan = make_plan(load_specs(specs).resources, live, DEPLOYMENT, delete=False)
    assert len(plan.errors) == 1
    assert "package 'lib' already exists and belongs to no spec directory" in plan.errors[0]
    assert "app.yaml:7" in plan.errors[0]


def test_plan_uses_an_identical_unmanaged_resource_as_it_is(tmp_path: Path) -> None:
    deployment.init(tmp_path / "specs", "x", DEPLOYMENT)
    write(
        tmp_path / "specs" / "env.yaml",
        "apiVersion: fissile.dev/v1\nkind: Environment\nname: python\n",
    )
    live = {"environments": [BUILTIN]}
    plan = make_plan(load_specs(tmp_path / "specs").resources, live, DEPLOYMENT, delete=True)
    assert plan.errors == [] and plan.changes == []
    assert make_plan([], live, DEPLOYMENT, delete=True).steps == []


def test_plan_reports_dangling_references(specs: Path) -> None:
    write(
        specs / "more.yaml",
        """
        apiVersion: fissile.dev/v1
        kind: HTTPTrigger
        name: nowhere
        function: ghost
        url: /ghost
        """,
    )
    live = {"environments": [BUILTIN]}
    plan = make_plan(load_specs(specs).resources, live, DEPLOYMENT, delete=False)
    assert plan.errors == [
        f"{specs / 'more.yaml'}:1: HTTP trigger 'nowhere': function:"
        " no function 'ghost' is declared or exists"
    ]


# -- applying ------------------------------------------------------------------------------


class FakeApi:
    def __init__(self, fail_on: str = "", failed_build: str = "") -> None:
        self.calls: list[str] = []
        self.fail_on = fail_on
        self.failed_build = failed_build

    def _call(self, what: str) -> dict[str, Any]:
        if what == self.fail_on:
            raise ClientError("refused", 409)
        self.calls.append(what)
        return {}

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(f"create {kind} {body['name']}")

    def update(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(f"update {kind} {name}")

    def delete(self, kind: str, name: str) -> dict[str, Any]:
        return self._call(f"delete {kind} {name}")

    def upload_archive(self, data: bytes) -> dict[str, Any]:
        return self._call("upload")

    def wait_for_build(self, name: str, timeout: float = 0) -> dict[str, Any]:
        self.calls.append(f"wait {name}")
        if name == self.failed_build:
            return {"status": {"state": "failed", "log": "pip: no such package"}}
        return {"status": {"state": "succeeded"}}

    def wait_for_rollout(self, package: dict[str, Any], timeout: float = 0) -> dict[str, str]:
        return {}


def test_apply_stops_at_the_first_failure_and_says_what_was_done(specs: Path) -> None:
    live = {"environments": [BUILTIN]}
    plan = make_plan(load_specs(specs).resources, live, DEPLOYMENT, delete=False)
    api = FakeApi(fail_on="create functions uses-lib")
    outcome = execute(api, plan, wait=True, echo=lambda _: None)
    assert not outcome.ok
    assert str(outcome.failed) == "create function 'uses-lib'"
    assert outcome.error == "refused"
    assert [str(s) for s in outcome.done] == [
        "create package 'hello-code'",
        "create package 'lib'",
        "create function 'hello'",
    ]
    assert [str(s) for s in outcome.not_done] == ["create HTTP trigger 'hello-route'"]
    # Builds were waited for before any function was touched.
    assert api.calls.index("wait lib") < api.calls.index("create functions hello")


def test_a_failed_build_with_wait_changes_no_function(specs: Path) -> None:
    live = {"environments": [BUILTIN]}
    plan = make_plan(load_specs(specs).resources, live, DEPLOYMENT, delete=False)
    api = FakeApi(failed_build="lib")
    outcome = execute(api, plan, wait=True, echo=lambda _: None)
    assert str(outcome.failed) == "create package 'lib'"
    assert "pip: no such package" in outcome.error
    assert [str(s) for s in outcome.done] == ["create package 'hello-code'", "create package 'lib'"]
    assert str(outcome.not_done[0]) == "create function 'hello'"
    assert not [call for call in api.calls if call.startswith("create functions")]


def test_sources_outside_the_project_are_refused(specs: Path, tmp_path: Path) -> None:
    """Sources stay inside the spec directory's parent: not by ``..``, an absolute path, or a
    link; a secret beside the project is never read into an archive."""
    project = tmp_path
    write(project.parent / "secret.txt", "do not upload\n")
    (project / "sneaky").symlink_to(project.parent / "secret.txt")
    escape = "../" * (len(project.parts) + 2) + "etc/passwd"
    write(
        specs / "escape.yaml",
        f"""
        apiVersion: fissile.dev/v1
        kind: Package
        name: passwd
        source: {escape}
        ---
        apiVersion: fissile.dev/v1
        kind: Function
        name: beside
        code: ../../secret.txt
        ---
        apiVersion: fissile.dev/v1
        kind: Function
        name: absolute
        src: /etc
        ---
        apiVersion: fissile.dev/v1
        kind: Function
        name: linked
        code: ../sneaky
        """,
    )
    loaded = load_specs(specs)
    located = {(e.line, e.path): e.message for e in loaded.errors}
    root = project.resolve()
    assert located == {
        (4, "source"): f"{escape} is outside the project {root} (the spec directory's parent)",
        (9, "code"): f"../../secret.txt is outside the project {root} (the spec directory's"
        " parent)",
        (14, "src"): f"/etc is outside the project {root} (the spec directory's parent)",
        (19, "code"): f"../sneaky leads to {(project.parent / 'secret.txt').resolve()} through"
        " a link, outside the project " + str(root),
    }
    assert {r.name for r in loaded.resources} >= {"hello", "lib"}  # the rest still loads


def test_command_environments_in_specs(tmp_path: Path) -> None:
    write(
        tmp_path / "specs" / "node.yaml",
        "apiVersion: fissile.dev/v1\nkind: Environment\nname: node\nimage: command\n"
        "command: node server.js\n",
    )
    loaded = load_specs(tmp_path / "specs")
    assert loaded.errors == []
    assert loaded.resources[0].body["command"] == "node server.js"
    write(
        tmp_path / "specs" / "node.yaml",
        "apiVersion: fissile.dev/v1\nkind: Environment\nname: node\nimage: command\n",
    )
    [error] = load_specs(tmp_path / "specs").errors
    assert "image command needs a command" in str(error)
