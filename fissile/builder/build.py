"""Turning a package's source archive into an immutable deploy directory.

Default build: a ``requirements.txt`` is installed with ``pip install --target`` next to the
source; otherwise ``buildcmd`` runs in the source directory with Fission's ``SRC_PKG`` and
``DEPLOY_PKG`` set; with neither, the source is the deploy directory. Results are stored by a
content address of (source, build command, environment), so the same source is built once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fissile.builder.archive import ArchiveError, extract_archive
from fissile.builder.storage import ArchiveStore
from fissile.executor._prctl import die_with_parent
from fissile.models import BuildState, BuildStatus, PackageSpec
from fissile.store import NotFound, Store

logger = logging.getLogger("fissile.builder")

BUILD_TIMEOUT = 600.0
MAX_LOG = 64 * 1024


class BuildError(Exception):
    pass


def build_key(package: PackageSpec, image: str, rebuild: int = 0) -> str:
    """The content address of a build: same source, command and runtime -> same result.

    ``rebuild`` counts explicit rebuilds, which must not reuse an earlier result (a
    requirements.txt without pins can resolve differently today)."""
    runtime = f"{image}:{sys.version_info.major}.{sys.version_info.minor}"
    material = "\0".join([package.source, package.buildcmd or "", runtime, str(rebuild or "")])
    return hashlib.sha256(material.encode()).hexdigest()


class Builder:
    def __init__(self, store: Store, archives: ArchiveStore, deploy_root: Path) -> None:
        self.store = store
        self.archives = archives
        self.deploy_root = deploy_root
        self.work_root = deploy_root.parent / "builds"
        deploy_root.mkdir(parents=True, exist_ok=True)
        self.work_root.mkdir(parents=True, exist_ok=True)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    def resume(self) -> None:
        """Restart builds a previous run left unfinished."""
        for record in self.store.list("packages"):
            state = record.data.get("status", {}).get("state")
            if state in (BuildState.pending, BuildState.building):
                self.submit(record.name)

    def submit(self, name: str) -> None:
        """Build ``name`` now, or again right after the build already running for it."""
        if name in self._running:
            self._again.add(name)
            return
        self._running[name] = asyncio.get_running_loop().create_task(self._run(name))

    async def _run(self, name: str) -> None:
        try:
            while True:
                try:
                    await self._build(name)
                except NotFound:
                    pass
                except Exception:
                    logger.exception("building package %s failed unexpectedly", name)
                if name not in self._again:
                    return
                self._again.discard(name)
        finally:
            self._running.pop(name, None)

    async def wait(self) -> None:
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def stop(self) -> None:
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _build(self, name: str) -> None:
        record = self.store.get("packages", name)
        spec = PackageSpec.model_validate({k: v for k, v in record.data.items() if k != "status"})
        env = self.store.find("environments", spec.env)
        image = env.data.get("image", "python") if env is not None else "python"
        previous = BuildStatus.model_validate(record.data.get("status", {}))
        rebuild = previous.rebuild
        # ``deploy`` keeps naming the last good build while a new one runs or if it fails, so
        # the functions on this package keep serving their current code until the new one is in.
        serving = previous.deploy
        key = build_key(spec, image, rebuild)
        started = datetime.now(UTC)
        self._set_status(
            name,
            spec,
            BuildStatus(
                state=BuildState.building, deploy=serving, started_at=started, rebuild=rebuild
            ),
        )
        target = self.deploy_root / key
        if target.is_dir():
            status = BuildStatus(
                state=BuildState.succeeded,
                deploy=key,
                log=f"same source and build command as build {key[:12]}: reused\n",
                started_at=started,
                finished_at=datetime.now(UTC),
                rebuild=rebuild,
            )
            self._set_status(name, spec, status)
            return
        log: list[str] = []
        try:
            await self._make(spec, target, log)
        except Exception as exc:
            if not isinstance(exc, BuildError):
                logger.exception("building package %s failed unexpectedly", name)
                exc = BuildError(f"{type(exc).__name__}: {exc}")
            log.append(f"build failed: {exc}\n")
            status = BuildStatus(
                state=BuildState.failed,
                deploy=serving,
                log=_trim("".join(log)),
                started_at=started,
                finished_at=datetime.now(UTC),
                rebuild=rebuild,
            )
        else:
            log.append(f"build succeeded: deploy {key[:12]}\n")
            status = BuildStatus(
                state=BuildState.succeeded,
                deploy=key,
                log=_trim("".join(log)),
                started_at=started,
                finished_at=datetime.now(UTC),
                rebuild=rebuild,
            )
        self._set_status(name, spec, status)

    def _set_status(self, name: str, built: PackageSpec, status: BuildStatus) -> None:
        current = self.store.get("packages", name)
        if (current.data.get("source"), current.data.get("buildcmd")) != (
            built.source,
            built.buildcmd,
        ):
            return  # the package changed meanwhile; the build queued for it will report
        data: dict[str, Any] = {**current.data, "status": status.model_dump(mode="json")}
        self.store.update("packages", name, data)

    async def _make(self, spec: PackageSpec, target: Path, log: list[str]) -> None:
        archive = self.archives.path(spec.source)
        if not archive.is_file():
            raise BuildError(f"source archive {spec.source[:12]} is missing from storage")
        work = Path(tempfile.mkdtemp(prefix="build-", dir=self.work_root))
        try:
            src = work / "src"
            deploy = work / "deploy"
            try:
                await asyncio.to_thread(extract_archive, archive, src)
            except ArchiveError as exc:
                raise BuildError(str(exc)) from None
            if spec.buildcmd:
                log.append(f"$ {spec.buildcmd}\n")
                env = {**os.environ, "SRC_PKG": str(src), "DEPLOY_PKG": str(deploy)}
                env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
                await _run(["/bin/sh", "-c", spec.buildcmd], src, env, log)
                if not deploy.is_dir():
                    raise BuildError("the build command did not create $DEPLOY_PKG")
            elif (src / "requirements.txt").is_file():
                deploy.mkdir()
                command = [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--no-input",
                    "--disable-pip-version-check",
                    "--no-warn-script-location",
                    "--target",
                    str(deploy),
                    "-r",
                    "requirements.txt",
                ]
                log.append("$ pip install -r requirements.txt --target $DEPLOY_PKG\n")
                await _run(command, src, dict(os.environ), log)
                # The source goes in after the dependencies: copied first, a local requirement
                # kept in a directory of its package's name (./mylib) would make pip skip it.
                await asyncio.to_thread(_overlay, src, deploy)
            else:
                os.replace(src, deploy)
                log.append("no requirements.txt and no build command: source deployed as is\n")
            try:
                await asyncio.to_thread(_readable_by_all, deploy)
                os.replace(deploy, target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)


async def _run(command: list[str], cwd: Path, env: dict[str, str], log: list[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,  # a killed supervisor takes its builds along
    )
    assert process.stdout is not None
    try:
        output = await asyncio.wait_for(process.stdout.read(), BUILD_TIMEOUT)
        code = await asyncio.wait_for(process.wait(), BUILD_TIMEOUT)
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        raise BuildError(f"timed out after {BUILD_TIMEOUT:g}s") from None
    except asyncio.CancelledError:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    log.append(output.decode("utf-8", "replace"))
    if code != 0:
        raise BuildError(f"{Path(command[0]).name} exited with status {code}")


def _readable_by_all(root: Path) -> None:
    """Functions run as unprivileged uids: their package must be readable (and its
    directories searchable) by everyone; nothing in it needs to be writable."""
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, 0o755 if mode & 0o111 else 0o644)


def _overlay(src: Path, deploy: Path) -> None:
    """Copy the source into the deploy dir, leaving what the dependencies installed in place
    (a source entry that collides with an installed one is the local requirement's own tree)."""
    for entry in src.iterdir():
        target = deploy / entry.name
        if target.exists() or target.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True)
        else:
            shutil.copy2(entry, target, follow_symlinks=False)


def _trim(text: str) -> str:
    if len(text) <= MAX_LOG:
        return text
    return "[... earlier output trimmed ...]\n" + text[-MAX_LOG:]
