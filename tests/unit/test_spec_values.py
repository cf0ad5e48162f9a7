"""Secret and ConfigMap documents in spec directories: values from files and env vars, inline
secrets only by opt-in, every error at its field; the plan compares a secret by digest."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fissile.specs.deployment import LABEL
from fissile.specs.plan import make_plan
from fissile.specs.validate import load_specs
from fissile.values.sources import SourceError, from_file, parse_env_file

DEPLOYMENT = """
apiVersion: fissile.dev/v1
kind: DeploymentConfig
name: demo
id: d-1
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def specs_with(tmp_path: Path, text: str) -> Path:
    specs = tmp_path / "specs"
    write(specs / "deploy.yaml", DEPLOYMENT)
    write(specs / "values.yaml", text)
    return specs


def test_values_come_from_files_env_vars_and_env_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "private" / "url", "postgres://x")
    write(tmp_path / "private" / "more.env", "# comment\n\nA=1\nB=two=2\n")
    monkeypatch.setenv("DB_PASSWORD", "pw")
    specs = specs_with(
        tmp_path,
        """
        apiVersion: fissile.dev/v1
        kind: Secret
        name: db
        envFiles: [../private/more.env]
        data:
          url: {fromFile: ../private/url}
          password: {fromEnv: DB_PASSWORD}
        ---
        apiVersion: fissile.dev/v1
        kind: ConfigMap
        name: cfg
        data:
          page: "25"
          url: {fromFile: ../private/url}
        """,
    )
    loaded = load_specs(specs)
    assert loaded.errors == []
    found = {(r.kind, r.name): r.body for r in loaded.resources}
    assert found["secrets", "db"]["data"] == {
        "A": "1",
        "B": "two=2",
        "url": "postgres://x",
        "password": "pw",
    }
    assert found["configmaps", "cfg"]["data"] == {"page": "25", "url": "postgres://x"}
    assert found["secrets", "db"]["labels"] == {LABEL: "d-1"}


def test_inline_secret_values_need_the_opt_in(tmp_path: Path) -> None:
    text = """
        apiVersion: fissile.dev/v1
        kind: Secret
        name: db
        data:
          token: plain
        """
    errors = [str(e) for e in load_specs(specs_with(tmp_path, text)).errors]
    assert len(errors) == 1
    assert "values.yaml:5: data.token:" in errors[0] and "allowInlineValues" in errors[0]
    allowed = load_specs(specs_with(tmp_path, text + "allowInlineValues: true\n"))
    assert allowed.errors == []
    assert allowed.resources[0].body["data"] == {"token": "plain"}


def test_every_bad_source_is_an_error_at_its_field(tmp_path: Path) -> None:
    specs = specs_with(
        tmp_path,
        """
        apiVersion: fissile.dev/v1
        kind: Secret
        name: db
        data:
          missing: {fromFile: ../nope}
          outside: {fromFile: ../../../etc/hostname}
          unset: {fromEnv: FISSILE_TEST_SURELY_UNSET}
          both: {fromFile: a, fromEnv: B}
          bad/key: {fromEnv: HOME}
        """,
    )
    errors = sorted(str(e).split(": ", 1)[1] for e in load_specs(specs).errors)
    assert len(errors) == 5, errors
    joined = "\n".join(errors)
    assert "data.missing.fromFile: fromFile: cannot read" in joined
    assert "data.outside.fromFile: ../../../etc/hostname is outside the project" in joined
    assert "data.unset.fromEnv: $FISSILE_TEST_SURELY_UNSET is not set" in joined
    assert "data.both: give one of fromFile: PATH or fromEnv: VARIABLE" in joined
    assert "is not a valid key" in joined


def test_the_plan_compares_a_secret_by_digest(tmp_path: Path) -> None:
    write(tmp_path / "url", "postgres://x")
    specs = specs_with(
        tmp_path,
        """
        apiVersion: fissile.dev/v1
        kind: Secret
        name: db
        data:
          url: {fromFile: ../url}
        """,
    )
    resources = load_specs(specs).resources
    resources[0].digest = "d-new"
    live = {
        "secrets": [
            {"name": "db", "keys": [{"key": "url", "size": 12}], "digest": "d-new",
             "labels": {LABEL: "d-1"}},
        ]
    }  # fmt: skip
    assert make_plan(resources, live, "d-1", delete=False).changes == []
    live["secrets"][0]["digest"] = "d-old"
    changes = make_plan(resources, live, "d-1", delete=False).changes
    assert [str(s) for s in changes] == ["update secret 'db' (data)"]


def test_sources_of_the_command_line(tmp_path: Path) -> None:
    assert from_file("url=a/b.txt") == ("url", Path("a/b.txt"))
    assert from_file("a/b.txt") == ("b.txt", Path("a/b.txt"))
    with pytest.raises(SourceError, match="not a valid key"):
        from_file("a b=x")
    env = write(tmp_path / "x.env", "A=1\nnot a pair\n")
    with pytest.raises(SourceError, match=r"x\.env:2: not KEY=VALUE"):
        parse_env_file(env)
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(SourceError, match="not UTF-8"):
        parse_env_file(binary)
