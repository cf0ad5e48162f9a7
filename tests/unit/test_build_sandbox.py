"""fissile/builder/sandbox.py and the build's bounded output: what a build keeps of the
environment, which layers it gets, stale scratch dirs, and output that cannot grow the
supervisor, a build's PID 1 orphaned before it could ask to die along. Nothing here makes
namespaces (tests/system/test_tenant_isolation_builds.py does)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fissile.builder._sandboxed import SETUP_FAILED, _exit_if_orphaned
from fissile.builder.build import BoundedOutput
from fissile.builder.sandbox import (
    BUILD_UID,
    BuildSandbox,
    build_environment,
    build_layers,
    remove_stale_work,
)
from fissile.cli import cli
from fissile.sandbox import FEATURES


def test_build_environment_keeps_only_pip_settings_and_the_basics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FISSILE_TOKEN", "secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setenv("PIP_INDEX_URL", "https://index.example/simple")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    env = build_environment("/build/src", "/build/deploy", "/tmp")
    assert set(env) == {"PATH", "HOME", "SRC_PKG", "DEPLOY_PKG", "LANG"} | {
        key for key in env if key.startswith("PIP_")
    }
    assert env["PIP_INDEX_URL"] == "https://index.example/simple"
    assert env["LANG"] == "de_DE.UTF-8"
    assert env["HOME"] == "/tmp"
    assert env["SRC_PKG"] == "/build/src" and env["DEPLOY_PKG"] == "/build/deploy"
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert "secret" not in env.values()


def test_stale_build_dirs_are_removed_and_links_left_alone(tmp_path: Path) -> None:
    work = tmp_path / "builds"
    (work / "build-abc" / "src").mkdir(parents=True)
    (work / "build-abc" / "src" / "x.py").write_text("x")
    (work / "other").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (work / "build-link").symlink_to(outside)
    assert remove_stale_work(work) == ["build-abc"]
    assert sorted(p.name for p in work.iterdir()) == ["build-link", "other"]
    assert (outside / "keep").read_text() == "keep"


def test_builds_get_the_instance_layers_but_the_network_namespace() -> None:
    full = {name: True for name in FEATURES}
    layers = build_layers(full)
    assert layers["network_namespace"] is False
    assert all(on for name, on in layers.items() if name != "network_namespace")
    # A layer added for instances is not claimed for builds until they apply it too.
    assert build_layers({**full, "some_new_layer": True})["some_new_layer"] is False


def test_builds_without_namespaces_or_uid_drop_are_unsandboxed(tmp_path: Path) -> None:
    degraded = {name: name not in ("mount_namespace", "unprivileged_uid") for name in FEATURES}
    assert build_layers(degraded) == {name: name == "process" for name in FEATURES}
    sandbox = BuildSandbox.like_instances(degraded, tmp_path, tmp_path / "deploy", None)
    assert not sandbox.enabled
    assert sandbox.warning.startswith("WARNING: this build is not sandboxed")
    assert "mount_namespace, unprivileged_uid" in sandbox.warning
    # Unsandboxed builds see their directories at host paths.
    layout = sandbox.layout(tmp_path / "build-1")
    assert layout.src_pkg == str(tmp_path / "build-1" / "src")
    assert layout.deploy_pkg == str(layout.deploy)


def test_sandboxed_builds_see_fixed_paths_and_the_data_dir_masked(tmp_path: Path) -> None:
    full = {name: True for name in FEATURES}
    data = Path(sys.prefix) / "fissile-test-data"  # below a bound directory: must be masked
    sandbox = BuildSandbox.like_instances(full, data, data / "deploy", None)
    assert sandbox.enabled and sandbox.uid == BUILD_UID
    assert "no cgroups" in sandbox.warning
    assert str(data) in sandbox.plan["masks"]
    layout = sandbox.layout(tmp_path / "build-1")
    assert (layout.src_pkg, layout.deploy_pkg, layout.home) == (
        "/build/src",
        "/build/deploy",
        "/tmp",
    )
    config = sandbox.helper_config(layout, ["sh", "-c", "true"], "/build/src", [])
    assert config["uid"] == BUILD_UID
    assert config["root"]["src"] == str(tmp_path / "build-1" / "src")


async def test_bounded_output_keeps_only_the_tail() -> None:
    stream = asyncio.StreamReader()
    total = 0
    for i in range(200):
        chunk = (f"{i:08d}" * 8192).encode()  # 64 KiB each, 12.5 MiB in all
        stream.feed_data(chunk)
        total += len(chunk)
    stream.feed_eof()
    output = BoundedOutput(64 * 1024)
    await output.read_from(stream)
    assert sum(len(c) for c in output._chunks) <= 2 * 64 * 1024
    text = output.text()
    assert len(text) == 64 * 1024
    assert text.endswith("00000199")
    assert output.dropped == total - 64 * 1024


def test_build_timeout_must_be_at_least_a_second() -> None:
    result = CliRunner().invoke(cli, ["up", "--build-timeout", "500ms"], prog_name="fissile")
    assert result.exit_code == 2, result.output
    assert "--build-timeout" in result.output and "must be at least 1s" in result.output


def test_build_init_exits_when_its_parent_died_before_it_could_ask_to_die_along() -> None:
    # PID 1 of a build's namespace asks for a signal at its parent's death only after the
    # fork; a parent killed in between must not leave it running the command unwatched.
    alive, held = os.pipe()
    try:
        _exit_if_orphaned(alive)  # the writer is open: the parent lives, nothing happens
    finally:
        os.close(held)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        _exit_if_orphaned(alive)
        os._exit(0)
    os.close(alive)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == SETUP_FAILED
