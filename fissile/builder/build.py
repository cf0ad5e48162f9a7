"""Turning a package's source archive into an immutable deploy directory.

Default build: a ``requirements.txt`` (or ``requirements.txt.3.11`` for the running Python,
which wins, as SeBS's benchmarks ship them) is installed with ``pip install --target`` next to the
source; otherwise ``buildcmd`` runs in the source directory with Fission's ``SRC_PKG`` and
``DEPLOY_PKG`` set; with neither, the source is the deploy directory. Results are stored by a
content address of (source, build command, environment), so the same source is built once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fissile._units import format_memory
from fissile.builder._sandboxed import SETUP_FAILED
from fissile.builder.archive import ArchiveError, extract_archive
from fissile.builder.sandbox import (
    BUILD_CPU,
    BUILD_MEMORY,
    BUILD_PIDS,
    BuildSandbox,
    Layout,
    build_environment,
    remove_stale_work,
)
from fissile.builder.storage import ArchiveStore
from fissile.executor._prctl import die_with_parent
from fissile.models import BuildState, BuildStatus, PackageSpec
from fissile.observability.metrics import Histogram
from fissile.observability.tally import Tally
from fissile.store import Change, NotFound, StaleWrite, Store

logger = logging.getLogger("fissile.builder")

BUILD_TIMEOUT = 600.0
MAX_LOG = 64 * 1024


def requirements_file(src: Path) -> str | None:
    """The requirements file a package's default build installs: one for the running Python
    (``requirements.txt.3.11``) when it has one, else ``requirements.txt``."""
    versioned = f"requirements.txt.{sys.version_info.major}.{sys.version_info.minor}"
    for name in (versioned, "requirements.txt"):
        if (src / name).is_file():
            return name
    return None


# Build durations' buckets (seconds): from a reused or copied package to a long pip install.
BUILD_BUCKETS: tuple[float, ...] = (
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
)


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
    def __init__(
        self,
        store: Store,
        archives: ArchiveStore,
        deploy_root: Path,
        sandbox: BuildSandbox | None = None,
        timeout: float | None = None,
    ) -> None:
        self.store = store
        self.archives = archives
        self.deploy_root = deploy_root
        self.work_root = deploy_root.parent / "builds"
        self.sandbox = sandbox or BuildSandbox.unsandboxed("the platform runs it unsandboxed")
        self._timeout = timeout
        deploy_root.mkdir(parents=True, exist_ok=True)
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.work_root.chmod(0o700)
        # Builds of a killed supervisor died with it (or with their cgroup, which the executor
        # kills at start); their scratch dirs are left to remove.
        for name in remove_stale_work(self.work_root):
            logger.warning("removed %s, left by a build of a previous run", name)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._current: dict[str, asyncio.Task[None]] = {}  # the build each _run awaits
        self._again: set[str] = set()
        # Read by the metrics exposition: (environment, outcome) -> builds, and how long the
        # builds that ran (not those reused) took, by environment.
        self.outcomes = Tally()
        self.durations: dict[str, Histogram] = {}
        # Cluster mode: fetches a source archive this node lacks from a peer
        # (cluster/sources.py); a single node builds only what was uploaded to it.
        self.fetch_source: Callable[[str], Awaitable[None]] | None = None
        # Cluster mode: this node's name, written into the status of the builds it runs. A
        # package's build belongs to the node its status names (the one whose API last asked
        # for it): another node's builder leaves it alone unless that node is gone (``adopt``).
        self.node: str | None = None

    def resume(self) -> None:
        """Restart builds a previous run left unfinished."""
        for record in self.store.list("packages"):
            state = record.data.get("status", {}).get("state")
            if state in (BuildState.pending, BuildState.building):
                self.submit(record.name)

    def submit(self, name: str) -> None:
        """Build ``name`` now. A build already running for it is superseded (its result would
        not be published): it is cancelled, its processes killed, and the new one starts."""
        if name in self._running:
            self._again.add(name)
            current = self._current.get(name)
            if current is not None:
                current.cancel()
            return
        self._running[name] = asyncio.get_running_loop().create_task(self._run(name))

    def adopt(self, alive: Callable[[str], bool], others: bool = True) -> list[str]:
        """Cluster mode: build the packages whose build is unfinished and belongs to no live
        node (its node stopped or died mid-build, or it is this node's, left by its previous
        run; only the latter unless ``others``); the names it took. Taking one is a write
        conditional on the package's generation, so of nodes adopting at once, one builds
        it."""
        taken: list[str] = []
        unfinished = (BuildState.pending.value, BuildState.building.value)
        for record in self.store.list("packages"):
            # Looked at every second on every node: the common case costs a dict lookup.
            if record.data.get("status", {}).get("state") not in unfinished:
                continue
            if record.name in self._running:
                continue
            status = BuildStatus.model_validate(record.data["status"])
            if status.node != self.node and (
                not others or (status.node is not None and alive(status.node))
            ):
                continue
            mine = status.model_copy(update={"state": BuildState.pending, "node": self.node})
            data = {**record.data, "status": mine.model_dump(mode="json")}
            try:
                self.store.update("packages", record.name, data, generation=record.generation)
            except (StaleWrite, NotFound):
                continue  # changed meanwhile (another node took it): its owner builds it
            logger.warning(
                "building package %s: its build was left by node %s",
                record.name,
                status.node or "(none)",
            )
            self.submit(record.name)
            taken.append(record.name)
        return taken

    def changed(self, change: Change) -> None:
        """Cluster mode (a store subscriber): a build running here for a package whose status
        now names another node (its API took the build over, for a change or a rebuild) or
        that was deleted is cancelled: the other node builds it."""
        if self.node is None or change.record.kind != "packages":
            return
        name = change.record.name
        if name not in self._current:
            return
        if change.action != "deleted":
            owner = change.record.data.get("status", {}).get("node")
            if owner is None or owner == self.node:
                return
        self.cancel(name)

    def cancel(self, name: str) -> None:
        """Stop building ``name`` (a deleted package): its build is cancelled and killed."""
        self._again.discard(name)
        current = self._current.get(name)
        if current is not None:
            current.cancel()

    async def _run(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._again.discard(name)
                build = self._current[name] = loop.create_task(self._build(name))
                try:
                    await build
                except NotFound:
                    pass
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if not build.cancelled() or (task is not None and task.cancelling()):
                        raise  # the builder stops
                except Exception:
                    logger.exception("building package %s failed unexpectedly", name)
                finally:
                    self._current.pop(name, None)
                if name not in self._again:
                    return
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
                state=BuildState.building,
                deploy=serving,
                started_at=started,
                rebuild=rebuild,
                node=self.node,
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
                node=self.node,
            )
            self._set_status(name, spec, status)
            self.outcomes.add(spec.env, "reused")
            return
        log: list[str] = []
        began = time.monotonic()
        try:
            await self._make(spec, target, log)
        except asyncio.CancelledError:
            self._counted(spec.env, "cancelled", began)
            raise
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
                node=self.node,
            )
            self._counted(spec.env, "failed", began)
        else:
            self._counted(spec.env, "succeeded", began)
            log.append(f"build succeeded: deploy {key[:12]}\n")
            status = BuildStatus(
                state=BuildState.succeeded,
                deploy=key,
                log=_trim("".join(log)),
                started_at=started,
                finished_at=datetime.now(UTC),
                rebuild=rebuild,
                node=self.node,
            )
        self._set_status(name, spec, status)

    def _counted(self, env: str, outcome: str, began: float) -> None:
        self.outcomes.add(env, outcome)
        durations = self.durations.get(env)
        if durations is None:
            durations = self.durations[env] = Histogram(BUILD_BUCKETS)
        durations.observe(time.monotonic() - began)

    def _set_status(self, name: str, built: PackageSpec, status: BuildStatus) -> None:
        current = self.store.get("packages", name)
        if (current.data.get("source"), current.data.get("buildcmd")) != (
            built.source,
            built.buildcmd,
        ):
            return  # the package changed meanwhile; the build queued for it will report
        owner = current.data.get("status", {}).get("node")
        if owner is not None and owner != self.node:
            return  # another node took the build over (cluster mode): it reports
        data: dict[str, Any] = {**current.data, "status": status.model_dump(mode="json")}
        self.store.update("packages", name, data)

    @property
    def timeout(self) -> float:
        return BUILD_TIMEOUT if self._timeout is None else self._timeout

    async def _make(self, spec: PackageSpec, target: Path, log: list[str]) -> None:
        archive = self.archives.path(spec.source)
        if not archive.is_file() and self.fetch_source is not None:
            try:
                await self.fetch_source(spec.source)
            except Exception as exc:
                raise BuildError(
                    f"source archive {spec.source[:12]} is not on this node and could not be"
                    f" fetched: {exc}"
                ) from None
            log.append(f"source archive {spec.source[:12]} fetched from another node\n")
        if not archive.is_file():
            raise BuildError(f"source archive {spec.source[:12]} is missing from storage")
        work = Path(tempfile.mkdtemp(prefix="build-", dir=self.work_root))
        try:
            layout = self.sandbox.layout(work)
            src = layout.src
            deploy = layout.deploy
            try:
                await _finish_in_thread(extract_archive, archive, src)
            except ArchiveError as exc:
                raise BuildError(str(exc)) from None
            requirements = requirements_file(src)
            runs = spec.buildcmd or requirements is not None
            if runs:
                await _finish_in_thread(self.sandbox.prepare, layout)
                if self.sandbox.warning:
                    log.append(f"{self.sandbox.warning}\n")
            if spec.buildcmd:
                log.append(f"$ {spec.buildcmd}\n")
                await self._execute(["/bin/sh", "-c", spec.buildcmd], layout, log)
                if not _is_directory(deploy):
                    raise BuildError("the build command did not create $DEPLOY_PKG")
            elif runs:
                deploy.mkdir()
                if self.sandbox.uid is not None:
                    os.chown(deploy, self.sandbox.uid, self.sandbox.uid)
                command = [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--no-input",
                    "--disable-pip-version-check",
                    "--no-warn-script-location",
                    "--target",
                    layout.deploy_pkg,
                    "-r",
                    str(requirements),
                ]
                log.append(f"$ pip install -r {requirements} --target $DEPLOY_PKG\n")
                await self._execute(command, layout, log)
                if not _is_directory(deploy):
                    raise BuildError("$DEPLOY_PKG is no longer a directory")
                # The source goes in after the dependencies: copied first, a local requirement
                # kept in a directory of its package's name (./mylib) would make pip skip it.
                await _finish_in_thread(_overlay, src, deploy)
            else:
                deploy = src
                log.append("no requirements.txt and no build command: source deployed as is\n")
            try:
                await _finish_in_thread(_readable_by_all, deploy)
                os.replace(deploy, target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _execute(self, command: list[str], layout: Layout, log: list[str]) -> None:
        """Run ``command`` in the build's sandbox (or, unsandboxed, in its own session) with
        the build's environment; every process it starts is killed when it ends, times out or
        is cancelled."""
        sandbox = self.sandbox
        cwd = layout.src_pkg
        group = None
        argv = command
        if sandbox.enabled:
            procs: list[str] = []
            if sandbox.cgroups is not None:
                # On the loop, not in a thread: a few small cgroupfs writes (as the executor
                # does for instances), and a cancellation cannot lose the group.
                group = _build_cgroup(sandbox.cgroups, layout.work.name)
                procs = [str(Path(p) / "cgroup.procs") for p in group.paths]
            config = sandbox.helper_config(layout, command, cwd, procs)
            argv = [sys.executable, "-m", "fissile.builder._sandboxed", json.dumps(config)]
            cwd = "/"
        env = build_environment(layout.src_pkg, layout.deploy_pkg, layout.home)
        output = BoundedOutput(MAX_LOG)
        process: asyncio.subprocess.Process | None = None
        reader: asyncio.Task[None] | None = None
        timed_out = False
        spawn = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # a killed supervisor takes its builds along
            )
        )
        try:
            try:
                process = await asyncio.shield(spawn)
            except asyncio.CancelledError:
                # Cancelled while the process starts: it may already run (and fork), so it is
                # waited for and killed below like any other, never left unknown.
                await asyncio.wait([spawn])
                if not spawn.cancelled() and spawn.exception() is None:
                    process = spawn.result()
                raise
            assert process.stdout is not None
            reader = asyncio.get_running_loop().create_task(output.read_from(process.stdout))
            try:
                code = await asyncio.wait_for(process.wait(), self.timeout)
            except TimeoutError:
                timed_out = True
                code = -1
        finally:
            # Asked before the group goes: whether the kernel's OOM killer ended the build.
            out_of_memory = group is not None and _oom_killed(group)
            # Whatever the command left running goes now: its cgroup (or, unsandboxed, its
            # session) is killed, so the output pipe closes and nothing outlives the build.
            await _kill_build(process, group)
            if reader is not None:
                try:
                    await asyncio.wait_for(reader, 5.0)
                except TimeoutError:
                    reader.cancel()
        log.append(output.text())
        if timed_out:
            raise BuildError(
                f"timed out after {self.timeout:g}s: the build and every process it started"
                " were killed (fissile up --build-timeout sets the limit)"
            )
        if code != 0 and out_of_memory:
            raise BuildError(
                f"the build ran out of memory (its limit is {format_memory(BUILD_MEMORY)})"
            )
        if sandbox.enabled and code == SETUP_FAILED:
            raise BuildError("the build sandbox could not be set up (the reason is above)")
        if code != 0:
            raise BuildError(f"{Path(command[0]).name} exited with status {code}")


class BoundedOutput:
    """A build's output as it streams in, keeping only its last ``limit`` bytes: a build that
    prints gigabytes costs the supervisor no more memory than one that prints the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._chunks: list[bytes] = []
        self._size = 0

    @property
    def dropped(self) -> int:
        """How many bytes of the start of the output were not kept."""
        return max(0, self.total - self.limit)

    async def read_from(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.total += len(chunk)
            self._chunks.append(chunk)
            self._size += len(chunk)
            if self._size > 2 * self.limit:  # compacted now and then, not on every chunk
                self._chunks = [b"".join(self._chunks)[-self.limit :]]
                self._size = self.limit

    def text(self) -> str:
        return b"".join(self._chunks)[-self.limit :].decode("utf-8", "replace")


async def _finish_in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """``asyncio.to_thread``, except that a cancellation waits for the thread to finish: the
    work dir must not be removed while a thread still writes into it."""
    task = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def _oom_killed(group: Any) -> bool:
    try:
        return bool(group.oom_killed())
    except OSError:
        return False


def _build_cgroup(cgroups: Any, name: str) -> Any:
    from fissile.sandbox.cgroups import Limits

    group = cgroups.create(name)
    group.set_limits(Limits(memory=BUILD_MEMORY, cpu=BUILD_CPU, pids=BUILD_PIDS))
    return group


async def _kill_build(process: asyncio.subprocess.Process | None, group: Any) -> None:
    if group is not None:
        try:
            await asyncio.to_thread(group.kill_all, 5.0)
            await asyncio.to_thread(group.remove, 5.0)
        except OSError as exc:
            logger.warning("build cgroup %s not removed: %s", group.name, exc)
    if process is None:
        return
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await process.wait()
    elif group is None:
        # Unsandboxed, what the command started in the background is still in its session.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _is_directory(path: Path) -> bool:
    """A real directory: the build may have made ``DEPLOY_PKG`` a link to anywhere."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _readable_by_all(root: Path) -> None:
    """Functions run as unprivileged uids: their package must be readable (and its
    directories searchable) by everyone; nothing in it needs to be writable. As root, all of
    it becomes root's: the build's uid keeps no hold on what it built. Links are not followed."""
    chown = os.geteuid() == 0
    for directory, dirs, files in os.walk(root):
        if chown:
            os.chown(directory, 0, 0, follow_symlinks=False)
        os.chmod(directory, 0o755)
        for name in files + dirs:
            path = os.path.join(directory, name)
            link = os.path.islink(path)
            if chown and (link or name in files):
                os.chown(path, 0, 0, follow_symlinks=False)
            if not link and name in files:
                mode = os.lstat(path).st_mode
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
