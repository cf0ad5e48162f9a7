"""fissile/builder/build.py: real builds of uploaded archives (shell commands and pip)."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import textwrap
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from intkit import pid_alive, until

import fissile.builder.build as build_module
from fissile.builder import ArchiveStore, Builder, build_key, zip_path
from fissile.builder.sandbox import BuildSandbox
from fissile.models import BuildStatus, EnvironmentSpec, PackageSpec
from fissile.sandbox import cgroups, probe
from fissile.store.sqlite import SQLiteStore

# A PEP 517 backend without build requirements, inside the library's own directory: pip builds
# the local library in an isolated environment without fetching anything (PIP_NO_INDEX=1).
BACKEND = """
import base64, hashlib, os, zipfile

def _digest(data):
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "fxlib", "__init__.py"), "rb") as handle:
        files = {"fxlib/__init__.py": handle.read()}
    files["fxlib-1.0.dist-info/METADATA"] = b"Metadata-Version: 2.1\\nName: fxlib\\nVersion: 1.0\\n"
    files["fxlib-1.0.dist-info/WHEEL"] = (
        b"Wheel-Version: 1.0\\nGenerator: fx\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    )
    lines = [f"{p},sha256={_digest(d)},{len(d)}" for p, d in files.items()]
    files["fxlib-1.0.dist-info/RECORD"] = ("\\n".join(lines + ["fxlib-1.0.dist-info/RECORD,,"])
                                          + "\\n").encode()
    name = "fxlib-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return name
"""

PYPROJECT = """
[build-system]
requires = []
build-backend = "fx_backend"
backend-path = ["."]

[project]
name = "fxlib"
version = "1.0"
"""


@functools.cache
def _capabilities() -> dict[str, bool]:
    return dict(probe().supported)


class Builds:
    """A builder on a real store; ``sandboxed`` runs its builds in the build sandbox (root)."""

    def __init__(self, root: Path, sandboxed: bool = False) -> None:
        self.root = root
        self.store = SQLiteStore(root / "data" / "fissile.db")
        self.store.create(
            "environments", "python", EnvironmentSpec(name="python").model_dump(mode="json")
        )
        self.archives = ArchiveStore(root / "data" / "archives")
        self.deploy_root = root / "data" / "deploy"
        self.cgroups: Any = None
        sandbox = None
        if sandboxed:
            self.cgroups = cgroups.detect(prefix=f"fissile-test-builds-{os.getpid()}")
            sandbox = BuildSandbox.like_instances(
                _capabilities(), root / "data", self.deploy_root, self.cgroups
            )
            assert sandbox.enabled, sandbox.warning
        self.builder = Builder(self.store, self.archives, self.deploy_root, sandbox=sandbox)

    async def close(self) -> None:
        await self.builder.stop()
        self.store.close()
        if self.cgroups is not None:
            assert cgroups.cleanup_stale(self.cgroups, remove_root=True) == [], "a build's group"

    def upload(self, source: Path | bytes) -> str:
        data = source if isinstance(source, bytes) else zip_path(source)
        return self.archives.put(data)[0]

    def create(self, name: str, source: Path | bytes, buildcmd: str | None = None) -> PackageSpec:
        spec = PackageSpec(name=name, env="python", source=self.upload(source), buildcmd=buildcmd)
        data = {**spec.model_dump(mode="json"), "status": BuildStatus().model_dump(mode="json")}
        self.store.create("packages", name, data)
        return spec

    async def build(
        self, name: str, source: Path | bytes, buildcmd: str | None = None
    ) -> BuildStatus:
        self.create(name, source, buildcmd)
        self.builder.submit(name)
        await self.builder.wait()
        return self.status(name)

    def status(self, name: str) -> BuildStatus:
        return BuildStatus.model_validate(self.store.get("packages", name).data["status"])

    def deployed(self, status: BuildStatus) -> Path:
        assert status.deploy is not None, status.log
        return self.deploy_root / status.deploy


@pytest.fixture(params=["plain", "sandboxed"])
async def builds(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Builds]:
    """Each test twice: unsandboxed, and in the build sandbox (needs root: skipped otherwise,
    never under CI=true)."""
    if request.param == "sandboxed" and os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("the build sandbox needs root")
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # builds must never reach the network
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    b = Builds(tmp_path, sandboxed=request.param == "sandboxed")
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def plain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Builds]:
    """Unsandboxed only: for tests that let the build write to a host path."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    b = Builds(tmp_path)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def sandboxed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Builds]:
    """In the build sandbox only (root)."""
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("the build sandbox needs root")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    b = Builds(tmp_path, sandboxed=True)
    try:
        yield b
    finally:
        await b.close()


def log_body(log: str) -> str:
    """The log without the sandbox's warning line (unsandboxed builds start with one)."""
    first, _, rest = log.partition("\n")
    return rest if first.startswith("WARNING: ") else log


def write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


HELLO = "def main(request):\n    return 'hello'\n"


async def test_single_file_source_is_deployed_as_is(builds: Builds, tmp_path: Path) -> None:
    file = write(tmp_path / "src", {"hello.py": HELLO}) / "hello.py"
    spec = builds.create("single", file)
    builds.builder.submit("single")
    await builds.builder.wait()
    status = builds.status("single")
    assert status.state == "succeeded", status.log
    assert status.deploy == build_key(spec, "python")
    deployed = builds.deployed(status)
    assert sorted(p.name for p in deployed.iterdir()) == ["hello.py"]
    assert (deployed / "hello.py").read_text() == HELLO
    assert "no requirements.txt and no build command: source deployed as is" in status.log
    assert status.started_at is not None and status.finished_at is not None
    assert status.started_at <= status.finished_at
    # The build's scratch space is cleaned up.
    assert list(builds.builder.work_root.iterdir()) == []


async def test_requirements_install_a_local_library(builds: Builds, tmp_path: Path) -> None:
    source = write(
        tmp_path / "src",
        {
            "handler.py": "import fxlib\ndef main(request):\n    return fxlib.VALUE\n",
            "requirements.txt": "./mylib\n",
            "mylib/pyproject.toml": PYPROJECT,
            "mylib/fx_backend.py": BACKEND,
            "mylib/fxlib/__init__.py": "VALUE = 'from the local library'\n",
        },
    )
    status = await builds.build("withdeps", source)
    assert status.state == "succeeded", status.log
    assert "$ pip install -r requirements.txt --target $DEPLOY_PKG" in status.log
    deployed = builds.deployed(status)
    assert (deployed / "handler.py").is_file()
    assert (deployed / "fxlib" / "__init__.py").read_text() == "VALUE = 'from the local library'\n"
    assert (deployed / "fxlib-1.0.dist-info" / "METADATA").is_file()


async def test_requirements_for_the_running_python_win(builds: Builds, tmp_path: Path) -> None:
    # SeBS ships requirements.txt.3.8, .3.9, ... next to a plain requirements.txt.
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    source = write(
        tmp_path / "src",
        {
            "handler.py": "import fxlib\ndef main(request):\n    return fxlib.VALUE\n",
            "requirements.txt": "./missing-lib\n",
            "requirements.txt.2.7": "./missing-lib\n",
            f"requirements.txt.{version}": "./mylib\n",
            "mylib/pyproject.toml": PYPROJECT,
            "mylib/fx_backend.py": BACKEND,
            "mylib/fxlib/__init__.py": "VALUE = 'versioned'\n",
        },
    )
    status = await builds.build("versioned", source)
    assert status.state == "succeeded", status.log
    assert f"$ pip install -r requirements.txt.{version} --target $DEPLOY_PKG" in status.log
    deployed = builds.deployed(status)
    assert (deployed / "fxlib" / "__init__.py").read_text() == "VALUE = 'versioned'\n"


async def test_only_a_versioned_requirements_file(builds: Builds, tmp_path: Path) -> None:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    files = {"main.py": HELLO, f"requirements.txt.{version}": "./missing-lib\n"}
    status = await builds.build("onlyversioned", write(tmp_path / "src", files))
    assert status.state == "failed"
    assert "missing-lib" in status.log


async def test_failing_requirements(builds: Builds, tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"main.py": HELLO, "requirements.txt": "./missing-lib\n"})
    status = await builds.build("baddeps", source)
    assert status.state == "failed"
    assert status.deploy is None
    assert "missing-lib" in status.log
    assert (
        status.log.splitlines()[-1]
        == f"build failed: {Path(sys.executable).name} exited with status 1"
    )


async def test_buildcmd_with_src_and_deploy_pkg(builds: Builds, tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"main.py": HELLO, "data/info.txt": "data"})
    cmd = 'cp -r "$SRC_PKG" "$DEPLOY_PKG" && echo built-by-cmd > "$DEPLOY_PKG/marker"'
    status = await builds.build("custom", source, cmd)
    assert status.state == "succeeded", status.log
    assert log_body(status.log).startswith(f"$ {cmd}\n")
    deployed = builds.deployed(status)
    assert (deployed / "marker").read_text() == "built-by-cmd\n"
    assert (deployed / "data" / "info.txt").read_text() == "data"
    assert (deployed / "main.py").read_text() == HELLO


async def test_buildcmd_runs_in_the_source_with_the_platform_python(
    builds: Builds, tmp_path: Path
) -> None:
    source = write(tmp_path / "src", {"main.py": HELLO})
    cmd = 'mkdir "$DEPLOY_PKG" && pwd > "$DEPLOY_PKG/cwd" && command -v python > "$DEPLOY_PKG/py"'
    status = await builds.build("where", source, cmd)
    assert status.state == "succeeded", status.log
    deployed = builds.deployed(status)
    assert (deployed / "cwd").read_text().strip().endswith("/src")
    assert (deployed / "py").read_text().strip() == str(Path(sys.executable).parent / "python")


async def test_buildcmd_executable_script_from_the_archive(builds: Builds, tmp_path: Path) -> None:
    source = write(
        tmp_path / "src",
        {
            "main.py": HELLO,
            "build.sh": '#!/bin/sh\nmkdir -p "$DEPLOY_PKG"\necho ok > "$DEPLOY_PKG/x"\n',
        },
    )
    (source / "build.sh").chmod(0o755)
    status = await builds.build("script", source, "./build.sh")
    assert status.state == "succeeded", status.log
    assert (builds.deployed(status) / "x").read_text() == "ok\n"


async def test_failing_buildcmd_keeps_its_output(builds: Builds, tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"main.py": HELLO})
    status = await builds.build("failing", source, "echo about to fail; exit 3")
    assert status.state == "failed"
    assert status.deploy is None
    assert log_body(status.log) == (
        "$ echo about to fail; exit 3\nabout to fail\nbuild failed: sh exited with status 3\n"
    )
    assert list(builds.deploy_root.iterdir()) == []
    # An unsandboxed build says so first; a sandboxed one has nothing to warn about.
    warned = status.log.startswith("WARNING: this build is not sandboxed (")
    assert warned is not builds.builder.sandbox.enabled, status.log


async def test_buildcmd_must_create_deploy_pkg(builds: Builds, tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"main.py": HELLO})
    status = await builds.build("nodeploy", source, "echo did nothing")
    assert status.state == "failed"
    assert "build failed: the build command did not create $DEPLOY_PKG" in status.log


async def test_same_source_is_built_once(builds: Builds, tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"main.py": HELLO})
    cmd = 'cp -r "$SRC_PKG" "$DEPLOY_PKG" && date +%s%N > "$DEPLOY_PKG/stamp"'
    first = await builds.build("first", source, cmd)
    stamp = (builds.deployed(first) / "stamp").read_text()
    second = await builds.build("second", source, cmd)
    assert second.state == "succeeded"
    assert second.deploy == first.deploy
    assert "reused" in second.log
    assert second.log.startswith(f"same source and build command as build {first.deploy[:12]}")
    assert (builds.deployed(second) / "stamp").read_text() == stamp


async def test_another_build_command_is_another_build(builds: Builds, tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"main.py": HELLO})
    first = await builds.build("a", source)
    second = await builds.build("b", source, 'cp -r "$SRC_PKG" "$DEPLOY_PKG"')
    assert first.deploy != second.deploy
    assert "reused" not in second.log


async def test_rebuild_counter_changes_the_address(builds: Builds, tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"main.py": HELLO})
    first = await builds.build("pkg", source)
    record = builds.store.get("packages", "pkg")
    fresh = BuildStatus(rebuild=1).model_dump(mode="json")
    builds.store.update("packages", "pkg", {**record.data, "status": fresh})
    builds.builder.submit("pkg")
    await builds.builder.wait()
    again = builds.status("pkg")
    assert again.state == "succeeded"
    assert again.rebuild == 1
    assert again.deploy != first.deploy
    assert "reused" not in again.log


async def test_missing_source_archive(builds: Builds, tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"main.py": HELLO})
    spec = builds.create("orphan", source)
    builds.archives.path(spec.source).unlink()
    builds.builder.submit("orphan")
    await builds.builder.wait()
    status = builds.status("orphan")
    assert status.state == "failed"
    assert f"source archive {spec.source[:12]} is missing from storage" in status.log


async def test_a_missing_source_is_fetched_before_the_build(plain: Builds, tmp_path: Path) -> None:
    """In a cluster the builder fetches a source it lacks from another node first
    (``Builder.fetch_source``); one it cannot fetch fails the build, saying why."""
    source = write(tmp_path / "src", {"main.py": HELLO})
    spec = plain.create("elsewhere", source)
    held = plain.archives.path(spec.source).read_bytes()
    plain.archives.path(spec.source).unlink()
    asked: list[str] = []

    async def fetch(digest: str) -> None:
        asked.append(digest)
        if len(asked) == 1:
            raise OSError("no live node holds it")
        plain.archives.put(held)

    plain.builder.fetch_source = fetch
    plain.builder.submit("elsewhere")
    await plain.builder.wait()
    failed = plain.status("elsewhere")
    assert failed.state == "failed", failed.log
    assert "is not on this node and could not be fetched: no live node holds it" in failed.log

    plain.store.update(
        "packages",
        "elsewhere",
        {**plain.store.get("packages", "elsewhere").data, "status": {"rebuild": 1}},
    )
    plain.builder.submit("elsewhere")
    await plain.builder.wait()
    built = plain.status("elsewhere")
    assert built.state == "succeeded", built.log
    assert f"source archive {spec.source[:12]} fetched from another node" in built.log
    assert (plain.deployed(built) / "main.py").is_file()
    assert asked == [spec.source, spec.source]


async def test_long_logs_are_trimmed(builds: Builds, tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"main.py": HELLO})
    cmd = "python -c \"print('x' * 200000)\"; exit 1"
    status = await builds.build("noisy", source, cmd)
    assert status.state == "failed"
    assert status.log.startswith("[... earlier output trimmed ...]\n")
    assert len(status.log) <= build_module.MAX_LOG + 100
    assert status.log.endswith("build failed: sh exited with status 1\n")


async def test_build_timeout_kills_the_command(
    plain: Builds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = plain
    monkeypatch.setattr(build_module, "BUILD_TIMEOUT", 0.5)
    pidfile = tmp_path / "pid"
    source = write(tmp_path / "src", {"main.py": HELLO})
    status = await builds.build("stuck", source, f"sleep 30 & echo $! > {pidfile}; wait")
    assert status.state == "failed"
    assert "build failed: timed out after 0.5s" in status.log
    # The whole process group went, including the command's own children.
    await until(lambda: not pid_alive(int(pidfile.read_text())))


async def test_stop_cancels_a_running_build(plain: Builds, tmp_path: Path) -> None:
    builds = plain
    pidfile = tmp_path / "pid"
    source = write(tmp_path / "src", {"main.py": HELLO})
    builds.create("long", source, f"echo $$ > {pidfile}; sleep 30")
    builds.builder.submit("long")
    await until(lambda: pidfile.exists() and pidfile.read_text().strip())
    pid = int(pidfile.read_text())
    await builds.builder.stop()
    await until(lambda: not pid_alive(pid))
    assert builds.status("long").state == "building"  # resumed by the next start


async def test_resume_builds_unfinished_packages(builds: Builds, tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"main.py": HELLO})
    builds.create("pending", source)
    builds.create("done", source)
    record = builds.store.get("packages", "done")
    finished = BuildStatus(state="failed", log="earlier failure").model_dump(mode="json")
    builds.store.update("packages", "done", {**record.data, "status": finished})
    builds.builder.resume()
    await builds.builder.wait()
    assert builds.status("pending").state == "succeeded"
    assert builds.status("done").log == "earlier failure"


async def test_deleted_package_is_not_an_error(builds: Builds, tmp_path: Path) -> None:
    builds.builder.submit("never-existed")
    await builds.builder.wait()
    assert builds.store.find("packages", "never-existed") is None


async def test_an_unsafe_archive_fails_the_build(builds: Builds, tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"main.py": HELLO})
    spec = builds.create("unsafe", source)
    # Replace the stored (checked) archive with one that escapes its root.
    with zipfile.ZipFile(builds.archives.path(spec.source), "w") as archive:
        archive.writestr("../escape.py", "x")
    builds.builder.submit("unsafe")
    await builds.builder.wait()
    status = builds.status("unsafe")
    assert status.state == "failed"
    assert "zip slip" in status.log


async def test_unexpected_build_errors_fail_the_package(
    builds: Builds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("fissile.builder.build.extract_archive", broken)
    data = tmp_path / "plain.zip"
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("main.py", "def main(): return 1\n")
    status = await builds.build("unexpected", data.read_bytes())
    assert status.state == "failed"
    assert "RuntimeError: disk on fire" in status.log


def test_build_key_depends_on_source_command_image_and_rebuild() -> None:
    spec = PackageSpec(name="p", env="python", source="a" * 64)
    key = build_key(spec, "python")
    assert len(key) == 64 and key == build_key(spec, "python")
    assert build_key(spec.model_copy(update={"name": "other"}), "python") == key
    different: list[Any] = [
        build_key(spec.model_copy(update={"source": "b" * 64}), "python"),
        build_key(spec.model_copy(update={"buildcmd": "make"}), "python"),
        build_key(spec, "other-image"),
        build_key(spec, "python", rebuild=1),
    ]
    assert len({key, *different}) == 5


async def test_a_change_during_a_build_is_built_next(builds: Builds, tmp_path: Path) -> None:
    source = write(tmp_path / "src", {"main.py": HELLO})
    slow = 'sleep 0.3; cp -r "$SRC_PKG" "$DEPLOY_PKG"; echo first > "$DEPLOY_PKG/which"'
    fast = 'cp -r "$SRC_PKG" "$DEPLOY_PKG"; echo second > "$DEPLOY_PKG/which"'
    spec = builds.create("moving", source, slow)
    published: list[str | None] = []
    builds.store.subscribe(
        lambda change: published.append(change.record.data["status"].get("deploy"))
    )
    builds.builder.submit("moving")
    await until(lambda: builds.status("moving").state == "building")
    record = builds.store.get("packages", "moving")
    builds.store.update("packages", "moving", {**record.data, "buildcmd": fast})
    builds.builder.submit("moving")
    await builds.builder.wait()
    status = builds.status("moving")
    assert status.state == "succeeded", status.log
    assert status.deploy == build_key(spec.model_copy(update={"buildcmd": fast}), "python")
    assert (builds.deployed(status) / "which").read_text() == "second\n"
    # The first build's result, for a command no longer wanted, was never published.
    assert build_key(spec, "python") not in published
    assert status.deploy in published


def _build_groups(builds: Builds) -> dict[str, list[int]]:
    return {name: builds.cgroups.open(name).pids() for name in builds.cgroups.names()}


async def test_sandboxed_build_timeout_kills_its_cgroup(sandboxed: Builds, tmp_path: Path) -> None:
    # Long enough for the build to start on a loaded machine (its processes are looked at).
    sandboxed.builder._timeout = 5.0
    source = write(tmp_path / "src", {"main.py": HELLO})
    builds = sandboxed
    builds.create("stuck", source, "setsid sleep 600 & sleep 600")
    builds.builder.submit("stuck")
    # The helper, the namespace's init, the shell and its two sleeps.
    groups = await until(
        lambda: [p for p in _build_groups(builds).values() if len(p) >= 5], timeout=30.0
    )
    await builds.builder.wait()
    status = builds.status("stuck")
    assert status.state == "failed"
    assert "build failed: timed out after 5s: the build and every process it started" in (
        status.log
    )
    assert _build_groups(builds) == {}  # killed and removed
    assert all(not pid_alive(pid) for pid in groups[0])


async def test_stopping_kills_a_sandboxed_build(sandboxed: Builds, tmp_path: Path) -> None:
    builds = sandboxed
    source = write(tmp_path / "src", {"main.py": HELLO})
    builds.create("long", source, "sleep 600 & sleep 600")
    builds.builder.submit("long")
    groups = await until(
        lambda: [p for p in _build_groups(builds).values() if len(p) >= 5], timeout=30.0
    )
    await builds.builder.stop()
    assert _build_groups(builds) == {}
    assert all(not pid_alive(pid) for pid in groups[0])
    assert list(builds.builder.work_root.iterdir()) == []


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.2])
async def test_stopping_at_any_moment_leaves_no_build_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delay: float
) -> None:
    """A stop landing while the build's group is made or its helper spawned still removes both
    (the fixture's close asserts no group is left)."""
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("the build sandbox needs root")
    builds = Builds(tmp_path, sandboxed=True)
    source = write(tmp_path / "src", {"main.py": HELLO})
    builds.create("early", source, "setsid sleep 600 & sleep 600")
    builds.builder.submit("early")
    await asyncio.sleep(delay)
    await builds.close()
    assert list(builds.builder.work_root.iterdir()) == []


async def test_a_sandbox_that_cannot_be_made_fails_the_build_clearly(
    sandboxed: Builds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = BuildSandbox.helper_config

    def broken(self: BuildSandbox, *args: Any) -> dict[str, Any]:
        config = original(self, *args)
        config["root"]["staging"] = str(tmp_path / "missing")  # its root cannot be mounted
        return config

    monkeypatch.setattr(BuildSandbox, "helper_config", broken)
    source = write(tmp_path / "src", {"main.py": HELLO})
    status = await sandboxed.build("broken", source, 'mkdir "$DEPLOY_PKG"')
    assert status.state == "failed"
    assert "cannot set up the build sandbox" in status.log
    assert status.log.endswith(
        "build failed: the build sandbox could not be set up (the reason is above)\n"
    )


async def test_fission_style_build_script_writes_into_src_pkg(
    builds: Builds, tmp_path: Path
) -> None:
    """Fission's build.sh installs into $SRC_PKG, then copies it: sandboxed, the source is an
    overlay the build may write to (subdirectories of the archive too)."""
    source = write(tmp_path / "src", {"main.py": HELLO, "data/info.txt": "data"})
    cmd = (
        'echo added > "$SRC_PKG/added.txt" && echo more > "$SRC_PKG/data/more.txt"'
        ' && cp -r "$SRC_PKG" "$DEPLOY_PKG"'
    )
    status = await builds.build("fission-style", source, cmd)
    assert status.state == "succeeded", status.log
    deployed = builds.deployed(status)
    assert (deployed / "added.txt").read_text() == "added\n"
    assert (deployed / "data" / "more.txt").read_text() == "more\n"
    assert (deployed / "data" / "info.txt").read_text() == "data"


def _marked(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in argv and pid_alive(int(entry)):
                found.append(int(entry))
    return found


async def test_a_change_supersedes_a_hanging_build(builds: Builds, tmp_path: Path) -> None:
    """The running build is cancelled (its processes killed) rather than waited for: a build
    that hangs does not hold back the fix for its whole timeout."""
    marker = f"superseded-{os.getpid()}-{id(builds)}"
    source = write(tmp_path / "src", {"main.py": HELLO})
    hang = f"python -c 'import time; time.sleep(600)' {marker}"
    spec = builds.create("hanging", source, hang)
    builds.builder.submit("hanging")
    await until(lambda: _marked(marker), timeout=30.0)
    fast = 'cp -r "$SRC_PKG" "$DEPLOY_PKG"'
    record = builds.store.get("packages", "hanging")
    builds.store.update("packages", "hanging", {**record.data, "buildcmd": fast})
    builds.builder.submit("hanging")
    await asyncio.wait_for(builds.builder.wait(), 30.0)
    status = builds.status("hanging")
    assert status.state == "succeeded", status.log
    assert status.deploy == build_key(spec.model_copy(update={"buildcmd": fast}), "python")
    # The superseded build may have been cancelled while its process was starting: it was
    # killed all the same (it once was not: an orphan of its shell survived).
    await until(lambda: not _marked(marker), timeout=10.0)
    assert list(builds.builder.work_root.iterdir()) == []


async def test_a_build_over_its_memory_limit_says_so(
    sandboxed: Builds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_module, "BUILD_MEMORY", 64 * 1024 * 1024)
    source = write(tmp_path / "src", {"main.py": HELLO})
    hog = "python -c 'hog = [bytearray(8 << 20) for _ in range(64)]'"
    status = await sandboxed.build("hog", source, f'{hog}; mkdir "$DEPLOY_PKG"; {hog}')
    assert status.state == "failed"
    assert status.log.endswith("build failed: the build ran out of memory (its limit is 64Mi)\n")


async def test_deleting_a_package_cancels_its_build(builds: Builds, tmp_path: Path) -> None:
    marker = f"deleted-{os.getpid()}-{builds.builder.sandbox.enabled}"
    source = write(tmp_path / "src", {"main.py": HELLO})
    builds.create("doomed", source, f"python -c 'import time; time.sleep(600)' {marker}")
    builds.builder.submit("doomed")
    await until(lambda: _marked(marker), timeout=30.0)
    builds.store.delete("packages", "doomed")
    builds.builder.cancel("doomed")  # what the control API does on a package's deletion
    await asyncio.wait_for(builds.builder.wait(), 30.0)
    await until(lambda: not _marked(marker), timeout=10.0)
    assert list(builds.builder.work_root.iterdir()) == []


def _left_by(builds: Builds, name: str, node: str, tmp_path: Path) -> None:
    """Package ``name``, whose build node ``node`` started (and may never finish)."""
    builds.create(name, write(tmp_path / name, {"main.py": HELLO}))
    data = builds.store.get("packages", name).data
    status = BuildStatus(state="building", node=node).model_dump(mode="json")
    builds.store.update("packages", name, {**data, "status": status})


async def test_a_build_left_by_a_gone_node_is_taken_over_once(
    plain: Builds, tmp_path: Path
) -> None:
    """Cluster mode: a build whose node stopped or died is built by the first node to take
    it (a write conditional on the package's generation); one a live node runs is left to it."""
    _left_by(plain, "left", "gone", tmp_path)
    _left_by(plain, "running", "c", tmp_path)
    other = Builder(plain.store, plain.archives, tmp_path / "b-deploy")
    plain.builder.node, other.node = "a", "b"
    alive = {"a", "b", "c"}.__contains__
    stale = plain.store.list("packages")  # what a node whose copy lags still sees
    _left_by(plain, "own", "a", tmp_path)  # by this node's previous run

    # Drained, a node resumes only its own builds.
    assert plain.builder.adopt(alive, others=False) == ["own"]
    assert plain.builder.adopt(alive) == ["left"]
    # Another node reading the same records a moment later: its write finds them changed.
    other.store = SimpleNamespace(list=lambda kind: stale, update=plain.store.update)  # type: ignore[assignment]
    assert other.adopt(alive) == []
    other.store = plain.store
    assert other.adopt(alive) == []  # now named "a", which is alive and builds it
    await plain.builder.wait()
    built = plain.status("left")
    assert built.state == "succeeded" and built.node == "a", built
    assert plain.status("own").state == "succeeded"
    assert plain.status("running").state == "building"
    assert plain.builder.adopt(alive) == []
    await other.stop()


async def test_a_build_another_node_took_over_is_cancelled_here(
    plain: Builds, tmp_path: Path
) -> None:
    """Cluster mode: a package changed through another node's API (its status names that
    node) stops the build running here for it, whose result would be stale anyway."""
    plain.builder.node = "a"
    plain.store.subscribe(plain.builder.changed)
    plain.create("slow", write(tmp_path / "slow", {"main.py": HELLO}), "sleep 600")
    plain.builder.submit("slow")
    await until(lambda: plain.status("slow").state == "building")
    assert plain.status("slow").node == "a"
    data = plain.store.get("packages", "slow").data
    taken = BuildStatus(rebuild=1, node="b").model_dump(mode="json")
    plain.store.update("packages", "slow", {**data, "status": taken})
    await asyncio.wait_for(plain.builder.wait(), 10)
    assert plain.status("slow") == BuildStatus(rebuild=1, node="b")  # left to node b
