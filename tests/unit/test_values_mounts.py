"""The files a function's instances get: Fission's tree under a directory of its own,
read-only, env var references resolved, a new directory per change, and precise errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fissile.models import ConfigMapSpec, FunctionSpec, SecretSpec
from fissile.runtime import values as runtime_values
from fissile.store.sqlite import SQLiteStore
from fissile.values import records, refs
from fissile.values.mounts import ValueMounts, ValuesUnavailable
from fissile.values.sealing import Sealer, key_path


@pytest.fixture
def mounts(tmp_path: Path) -> ValueMounts:
    store = SQLiteStore(tmp_path / "fissile.db")
    sealer = Sealer(key_path(tmp_path))
    secret = SecretSpec(name="db", data={"url": "postgres://x", "password": "pw"})
    config = ConfigMapSpec(name="cfg", data={"page": "25"})
    store.create("secrets", "db", records.to_record(secret, sealer))
    store.create("configmaps", "cfg", records.to_record(config, sealer))
    root = tmp_path / "values"
    root.mkdir()
    return ValueMounts(store, root, sealer)


def function(**fields: object) -> FunctionSpec:
    return FunctionSpec.model_validate({"name": "app", "env": "python", "package": "p", **fields})


def test_refs_accept_names_namespaces_and_env_references() -> None:
    spec = function(
        secrets=["db", "prod/api"],
        configmaps=[{"name": "cfg"}],
        env_vars={"URL": "x${secret:db/url}y", "PAGE": "${configmap:cfg/page}", "N": "1"},
    )
    assert [(r.namespace, r.name) for r in spec.secrets] == [("default", "db"), ("prod", "api")]
    assert refs.used(spec) == {("secrets", "db"), ("secrets", "api"), ("configmaps", "cfg")}
    assert refs.expand("x${secret:db/url}y", lambda k, n, key: f"<{k}:{n}:{key}>") == (
        "x<secrets:db:url>y"
    )


def test_the_tree_is_fissions_and_read_only(mounts: ValueMounts) -> None:
    spec = function(secrets=["db"], configmaps=["cfg"], env_vars={"URL": "${secret:db/url}"})
    prepared = mounts.prepare(spec, uid=None, mounted=False)
    assert prepared.directory is not None
    top = Path(prepared.directory)
    assert (top / "secrets/default/db/url").read_text() == "postgres://x"
    assert (top / "secrets/default/db/password").read_text() == "pw"
    assert (top / "configs/default/cfg/page").read_text() == "25"
    assert stat.S_IMODE((top / "secrets/default/db/url").stat().st_mode) == 0o400
    assert stat.S_IMODE((top / "secrets/default/db").stat().st_mode) == 0o500
    assert prepared.env_vars["URL"] == "postgres://x"
    # Without a mount namespace the instance is told where its tree is; the helpers follow.
    assert prepared.env_vars["FISSILE_SECRETS_DIR"] == str(top / "secrets")
    os.environ["FISSILE_SECRETS_DIR"] = prepared.env_vars["FISSILE_SECRETS_DIR"]
    os.environ["FISSILE_CONFIGS_DIR"] = prepared.env_vars["FISSILE_CONFIGS_DIR"]
    try:
        assert runtime_values.secret("db", "url") == "postgres://x"
        assert runtime_values.config("cfg", "page") == "25"
        with pytest.raises(KeyError, match="no key 'nope'"):
            runtime_values.secret("db", "nope")
        with pytest.raises(ValueError, match="invalid"):
            runtime_values.secret("..", "url")
    finally:
        del os.environ["FISSILE_SECRETS_DIR"], os.environ["FISSILE_CONFIGS_DIR"]


def test_a_secret_named_twice_or_in_two_namespaces(mounts: ValueMounts) -> None:
    prepared = mounts.prepare(function(secrets=["db", "db", "prod/db"]), None, False)
    assert prepared.directory is not None
    top = Path(prepared.directory) / "secrets"
    assert sorted(p.parent.name for p in top.glob("*/db")) == ["default", "prod"]
    assert (top / "prod/db/url").read_text() == "postgres://x"


def test_under_a_strict_sandbox_the_paths_are_fissions(mounts: ValueMounts) -> None:
    prepared = mounts.prepare(function(secrets=["db"]), uid=None, mounted=True)
    assert prepared.env_vars["FISSILE_SECRETS_DIR"] == "/secrets"
    assert prepared.env_vars["FISSILE_CONFIGS_DIR"] == "/configs"


def test_prepared_once_until_forgotten_and_old_trees_go(mounts: ValueMounts) -> None:
    spec = function(secrets=["db"])
    first = mounts.prepare(spec, None, False)
    assert mounts.prepare(spec, None, False) is first
    mounts.forget("app")
    second = mounts.prepare(spec, None, False)
    mounts.forget("app")
    third = mounts.prepare(spec, None, False)
    assert len({first.directory, second.directory, third.directory}) == 3
    # The one before the newest stays for draining instances; older ones are removed.
    assert first.directory is not None and not Path(first.directory).exists()
    assert second.directory is not None and Path(second.directory).exists()
    mounts.remove("app")
    assert list(mounts.root.iterdir()) == []


def test_a_function_without_values_gets_no_directory(mounts: ValueMounts) -> None:
    prepared = mounts.prepare(function(env_vars={"A": "1"}), None, False)
    assert prepared.directory is None and prepared.env_vars == {"A": "1"}


def test_missing_secret_or_key_is_a_precise_error(mounts: ValueMounts) -> None:
    with pytest.raises(ValuesUnavailable, match="secret 'gone' of function 'app' does not exist"):
        mounts.prepare(function(secrets=["gone"]), None, False)
    with pytest.raises(ValuesUnavailable, match="secret 'db' has no key 'nope'"):
        mounts.prepare(function(env_vars={"X": "${secret:db/nope}"}), None, False)
    assert not [p for p in mounts.root.iterdir()]  # nothing half-written left


def test_a_dead_platforms_values_are_removed_at_start(tmp_path: Path) -> None:
    from fissile.values.mounts import values_root

    # pid_max is at most 2**22: this pid belongs to no process.
    dead = tmp_path / "fissile-values-999999999-abc"
    (dead / "f.1" / "secrets").mkdir(parents=True)
    (dead / "f.1" / "secrets" / "k").write_text("opened")
    (dead / "f.1").chmod(0o500)
    alive = tmp_path / f"fissile-values-{os.getppid()}-def"
    alive.mkdir()
    root = values_root(tmp_path)
    assert root.parent == tmp_path and root.name.startswith(f"fissile-values-{os.getpid()}-")
    assert stat.S_IMODE(root.stat().st_mode) == 0o711
    assert not dead.exists() and alive.exists()
