"""What a revision says changed (fissile/controlplane/revisions.py, ``describe``)."""

from __future__ import annotations

from typing import Any

from fissile.controlplane.revisions import describe
from fissile.models import FunctionSpec


def spec(**fields: Any) -> dict[str, Any]:
    return FunctionSpec(name="f", env="python", package="p", **fields).model_dump(mode="json")


PACKAGE = {"name": "p", "source": "a" * 64, "buildcmd": None, "owner": "f"}


def test_settings_are_named_with_their_values() -> None:
    changes = describe(
        "f",
        spec(memory="128Mi", timeout=60),
        spec(memory="256Mi", timeout="500ms", min_scale=1),
        PACKAGE,
        PACKAGE,
        "d",
        "d",
    )
    assert changes == ["timeout 1m→500ms", "memory 128Mi→256Mi", "min-scale 0→1"]


def test_env_vars_are_named_not_shown() -> None:
    changes = describe(
        "f",
        spec(env_vars={"KEEP": "1", "GONE": "x", "SECRETISH": "old"}),
        spec(env_vars={"KEEP": "1", "SECRETISH": "new", "NEW": "y"}),
        PACKAGE,
        PACKAGE,
        "d",
        "d",
    )
    assert changes == ["env-var GONE removed", "env-var NEW", "env-var SECRETISH"]
    assert not any("new" in change or "old" in change for change in changes)


def test_code_build_command_and_rebuilds() -> None:
    other = {**PACKAGE, "name": "p2", "source": "b" * 64}
    assert describe("f", spec(), spec(), PACKAGE, other, "d", "e") == ["code"]
    rebuilt = {**PACKAGE, "buildcmd": "./build.sh"}
    assert describe("f", spec(), spec(), PACKAGE, rebuilt, "d", "e") == ["build command"]
    assert describe("f", spec(), spec(), PACKAGE, PACKAGE, "d", "e") == ["rebuild of package p"]
    assert describe("f", spec(), spec(), PACKAGE, PACKAGE, "d", "d") == []


def test_switching_to_a_shared_package_is_named() -> None:
    shared = {"name": "lib", "source": "a" * 64, "buildcmd": None, "owner": None}
    mine = {**PACKAGE, "owner": None}
    assert describe("f", spec(), spec(), mine, shared, "d", "d") == ["package p→lib"]


def test_labels_are_no_change() -> None:
    assert describe("f", spec(), spec(labels={"a": "b"}), PACKAGE, PACKAGE, "d", "d") == []


def test_the_same_code_in_a_new_own_package_is_named() -> None:
    again = {**PACKAGE, "name": "p-2"}
    assert describe("f", spec(), spec(), PACKAGE, again, "d", "d") == ["package p→p-2"]


def test_leaving_an_own_package_for_a_shared_one_is_named() -> None:
    shared = {"name": "lib", "source": "b" * 64, "buildcmd": None, "owner": None}
    assert describe("f", spec(), spec(), PACKAGE, shared, "d", "e") == ["code", "package p→lib"]


def test_secrets_and_config_maps_are_named() -> None:
    changes = describe(
        "f",
        spec(secrets=[{"name": "db"}], configmaps=[{"name": "old", "namespace": "team"}]),
        spec(secrets=[{"name": "db"}, {"name": "api"}], configmaps=[]),
        PACKAGE,
        PACKAGE,
        "d",
        "d",
    )
    assert changes == ["secret api added", "configmap team/old removed"]
