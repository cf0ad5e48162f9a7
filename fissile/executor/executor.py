"""The executor: keeps environments' zygotes and warm pools, functions' instances, and follows
every change in the store."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from fissile._units import format_memory
from fissile.events import EventBus
from fissile.executor.connection import DEFAULT_MAX_RESPONSE_BODY
from fissile.executor.errors import BuildFailed, ExecutorError, FunctionNotFound
from fissile.executor.importcache import ImportCache
from fissile.executor.instance import Instance, State
from fissile.executor.loading import preflight
from fissile.executor.pools import EnvironmentPool, FunctionPool
from fissile.executor.zygote import Zygote
from fissile.models import (
    BuildState,
    EnvironmentSpec,
    FunctionSpec,
    FunctionStatus,
    Package,
)
from fissile.observability.logs import LogBook
from fissile.observability.metrics import Metrics
from fissile.sandbox import Sandbox
from fissile.store import Change, Store, uids
from fissile.values import refs
from fissile.values.mounts import ValueMounts, values_root
from fissile.values.sealing import Sealer

logger = logging.getLogger("fissile.executor")

REAP_INTERVAL = 0.5
DEFAULT_MEMORY = 256 * 1024 * 1024  # an unspecialized instance's cgroup, until it has a function
DEFAULT_PIDS = 256


_MAX_ANCESTRY = 16


def _parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rpartition(b")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _prune_dead_platforms(ours: Any) -> None:
    """Remove the cgroup trees of platforms (``fissile-<digest>-<pid>``) whose supervisor is
    gone: killed outright, they could not clean up."""
    import re

    from fissile.sandbox import cgroups

    seen: set[str] = set()
    for base in ours.paths:
        for sibling in Path(base).parent.iterdir():
            match = re.fullmatch(r"fissile-[0-9a-f]{12}-(\d+)", sibling.name)
            if match is None or sibling.name in seen or sibling.name == Path(base).name:
                continue
            seen.add(sibling.name)
            try:
                os.kill(int(match.group(1)), 0)
                continue  # that platform is alive
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            stale = cgroups.detect(prefix=sibling.name)
            if stale is not None:
                cgroups.cleanup_stale(stale, remove_root=True)


class Executor:
    def __init__(
        self,
        store: Store,
        deploy_root: Path,
        logs: LogBook,
        sandbox_mode: str = "off",
        data_dir: Path | None = None,
        events: EventBus | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        self.store = store
        self.deploy_root = deploy_root
        self.logs = logs
        # Cluster mode: fetches a build this node lacks from a peer (cluster/artifacts.py).
        self.fetch_deploy: Callable[[str], Awaitable[None]] | None = None
        # Cluster mode: whether this node may hold this many instances of a function with the
        # cluster's total within a bound (cluster/nodes.py ``claim``).
        self.claim: Callable[[str, int, int], Awaitable[bool]] | None = None
        # Cluster mode: this node's share of a function's min_scale, from its function name,
        # min_scale and memory limit (cluster/placement.py ``warm_share``).
        self.warm_share: Callable[[str, int, int], int] | None = None
        # Request counts and latencies by function (observability/metrics.py), kept across
        # updates of a function and dropped with it.
        self.metrics = Metrics()
        # The largest response body a function may send (``fissile up --max-response-body``).
        self.max_response_body = DEFAULT_MAX_RESPONSE_BODY
        # Unix socket paths are limited to 108 bytes, so they live in a short private dir
        # (0700: only root, not functions running as other uids, may connect to instances).
        self.run_dir = Path(tempfile.mkdtemp(prefix="fissile-"))
        staging = self.run_dir / "root"
        staging.mkdir()
        # Where the platform socket (context.invoke/publish) is served: bound into sandboxed
        # instances at /run/fissile, so 0755 (functions run as other uids).
        self.platform_dir = self.run_dir / "platform"
        self.platform_dir.mkdir()
        self.platform_dir.chmod(0o755)
        self.events = events
        # The files of functions' secrets and config maps (fissile/values/mounts.py).
        self.values = ValueMounts(store, values_root(), sealer)
        self.sandbox = Sandbox.prepare(
            sandbox_mode,
            data_dir=str(data_dir or deploy_root.parent),
            deploy_root=str(deploy_root),
            staging=str(staging),
            platform_dir=str(self.platform_dir),
            values_root=str(self.values.root),
        )
        self.cgroups: Any = None
        if self.sandbox.fork_config.get("cgroups"):
            from fissile.sandbox import cgroups

            # One prefix per data dir: a restart after a crash finds and removes its leftovers,
            # and two platforms on one host never touch each other's groups.
            # The supervisor's pid in the name tells a dead platform's leftovers from a live
            # one's: any start removes the trees of platforms that died without cleaning up.
            digest = hashlib.sha256(str(data_dir or deploy_root).encode()).hexdigest()[:12]
            self.cgroups = cgroups.detect(prefix=f"fissile-{digest}-{os.getpid()}")
            if self.cgroups is not None:
                _prune_dead_platforms(self.cgroups)
        self.environments: dict[str, EnvironmentPool] = {}
        self.functions: dict[str, FunctionPool] = {}
        self.imports = ImportCache(self)
        self.packages: dict[str, Package] = {}
        self._package_changed: dict[str, asyncio.Event] = {}
        self._forking: dict[str, Instance] = {}
        self._by_pid: dict[int, Instance] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._counter = 0
        self.uids: dict[str, int] = {}  # function -> the uid its instances run as
        self._function_by_uid: dict[int, str] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        for record in self.store.list("packages"):
            self.packages[record.name] = Package.model_validate(record.merged())
        envs = [EnvironmentSpec.model_validate(r.data) for r in self.store.list("environments")]
        await asyncio.gather(*(self._add_environment(spec) for spec in envs))
        for function, uid in uids.assigned(self.store).items():
            self._uid_assigned(function, uid)
        for record in self.store.list("functions"):
            if record.name not in self.uids:  # created before uids were allocated
                self._uid_assigned(record.name, uids.allocate(self.store, record.name))
            self._add_function(FunctionSpec.model_validate(record.data))
        self.store.subscribe(self.on_change)
        self._reaper = asyncio.create_task(self._reap_forever())

    async def stop(self) -> None:
        self._stopping = True
        if self._reaper is not None:
            self._reaper.cancel()
        for pool in self.functions.values():
            pool.close()
        await self.imports.stop()
        await asyncio.gather(*(env.stop() for env in self.environments.values()))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # Their cleanup runs before the loop may close: a zygote that was starting is
            # killed and reaped (Zygote.start), not left running.
            await asyncio.wait(tasks, timeout=10)
        for instance in list(self._by_pid.values()):
            instance.kill("platform stopped")
        for path in self.run_dir.glob("*.sock"):
            path.unlink(missing_ok=True)
        (self.run_dir / "root").rmdir()
        for path in self.platform_dir.iterdir():
            path.unlink(missing_ok=True)
        self.platform_dir.rmdir()
        self.run_dir.rmdir()
        self.values.close()
        if self.cgroups is not None:
            from fissile.sandbox import cgroups

            cgroups.cleanup_stale(self.cgroups, remove_root=True)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background task, kept referenced until it ends and logged if it fails."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task failed", exc_info=task.exception())

    # -- lookups used by the router -----------------------------------------------------

    def function(self, name: str) -> FunctionPool:
        pool = self.functions.get(name)
        if pool is None:
            raise FunctionNotFound(f"function {name!r} not found")
        return pool

    def environment(self, name: str) -> EnvironmentPool:
        env = self.environments.get(name)
        if env is None:
            raise ExecutorError(f"environment {name!r} is not running")
        return env

    async def instance_source(self, env: str, deploy_dir: str) -> EnvironmentPool:
        """The pool a function's new instance comes from: its environment's, or a package
        zygote's that has the function's dependencies imported (importcache.py)."""
        if self.fetch_deploy is not None:
            await self.fetch_deploy(deploy_dir)
        pool = self.environment(env)
        if pool.spec.image != "python":
            return pool  # a program: no Python imports of its own to cache
        return await self.imports.source(pool, deploy_dir)

    def instances(self) -> list[Instance]:
        """Every live instance process."""
        return list(self._by_pid.values())

    def status(self, name: str) -> FunctionStatus:
        pool = self.functions.get(name)
        return pool.status() if pool is not None else FunctionStatus()

    @property
    def platform_socket(self) -> Path:
        """The platform socket on this host."""
        return self.platform_dir / "platform.sock"

    def platform_socket_for_instances(self) -> str:
        """The platform socket's path as instances see it."""
        if self.sandbox.fork_config.get("filesystem"):
            from fissile.sandbox.filesystem import PLATFORM_DIR

            return f"{PLATFORM_DIR}/platform.sock"
        return str(self.platform_socket)

    def ready(self) -> bool:
        return all(env.zygote is not None for env in self.environments.values())

    # -- instances ----------------------------------------------------------------------

    async def fork(self, zygote: Zygote, env: str) -> Instance:
        self._counter += 1
        instance_id = f"i{self._counter}"
        path = str(self.run_dir / f"{instance_id}.sock")
        instance = Instance(instance_id, env, path, secrets.token_hex(16))
        instance.zygote = zygote
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        read_fd, write_fd = os.pipe()
        try:
            listener.bind(path)
            listener.listen(512)
            self._forking[instance_id] = instance
            config = self.sandbox.fork_config
            if self.cgroups is not None:
                instance.cgroup = self._cgroup_for(instance)
                if instance.cgroup is not None:
                    procs = [str(Path(p) / "cgroup.procs") for p in instance.cgroup.paths]
                    config = {**config, "cgroup_procs": procs}
            await zygote.fork(instance_id, listener, write_fd, instance.token, config)
        except BaseException:
            self._forking.pop(instance_id, None)
            if instance.cgroup is not None:
                self._remove_cgroup(instance.cgroup, attempts=20)
            os.close(read_fd)
            Path(path).unlink(missing_ok=True)
            raise
        finally:
            listener.close()
            os.close(write_fd)
        self.logs.attach(instance, read_fd)
        return instance

    def instance_forked(self, instance_id: str, pid: int) -> None:
        instance = self._forking.pop(instance_id, None)
        if instance is not None:
            instance.pid = pid
            self._by_pid[pid] = instance

    def _cgroup_for(self, instance: Instance) -> Any:
        """A cgroup for a new instance, with the defaults until it is specialized. The child
        joins it itself: on cgroup v1 that write waits ~10 ms for an RCU grace period, which
        must not stall this event loop (benchmarks/sandbox.py measured it)."""
        from fissile.sandbox.cgroups import Limits

        try:
            group = self.cgroups.create(instance.id)
            limits = Limits(memory=DEFAULT_MEMORY, cpu=None, pids=DEFAULT_PIDS)
            group.set_limits(limits)
        except Exception as exc:
            logger.warning("instance %s: cgroup not made: %s", instance.id, exc)
            return None
        instance.limits = limits
        return group

    def limit(self, instance: Instance, spec: FunctionSpec) -> None:
        """Apply a function's limits to the instance's cgroup, before its code loads."""
        if instance.cgroup is None:
            return
        from fissile.sandbox.cgroups import Limits

        limits = Limits(memory=spec.memory, cpu=spec.cpu, pids=DEFAULT_PIDS)
        # Most functions keep the defaults the group was made with: five cgroup writes (~0.25
        # ms of a cold start, on this event loop) are skipped.
        if limits != instance.limits:
            instance.cgroup.set_limits(limits)
            instance.limits = limits
        instance.memory_limit = spec.memory

    def instance_exited(self, pid: int, status: int) -> None:
        instance = self._by_pid.pop(pid, None)
        if instance is not None:
            if instance.cgroup is not None and instance.exit_reason is None:
                try:
                    if instance.cgroup.oom_killed():
                        limit = format_memory(instance.memory_limit)
                        instance.exit_reason = f"out of memory (limit {limit})"
                except OSError:
                    pass
            instance.mark_exited(status)
            self._forget(instance)

    def zygote_lost(self, env: str, zygote: Zygote, reaped: bool = False) -> None:
        """A zygote is gone, and with it its instances: reaped by it on a clean stop, or
        killed by their parent-death signal (and by us, to be sure) if it died."""
        for pid, instance in list(self._by_pid.items()):
            if instance.zygote is zygote:
                del self._by_pid[pid]
                if not reaped:
                    instance.kill()
                instance.mark_exited(-1)
                if instance.exit_reason is not None and instance.exit_reason.startswith("ended"):
                    instance.exit_reason = f"its {env} zygote exited"
                self._forget(instance)

    def _forget(self, instance: Instance) -> None:
        Path(instance.socket_path).unlink(missing_ok=True)
        # A program's own socket, when it bound one here (image command without a private
        # /tmp: fissile/runtime/command.py).
        Path(instance.socket_path).with_suffix(".http.sock").unlink(missing_ok=True)
        if instance.cgroup is not None:
            self._remove_cgroup(instance.cgroup, attempts=20)
        if instance.function is not None:
            pool = self.functions.get(instance.function)
            if pool is not None:
                pool.lost(instance, instance.expected_exit)
        else:
            env = self.environments.get(instance.env)
            if env is not None:
                env.discard(instance)

    def _remove_cgroup(self, group: Any, attempts: int) -> None:
        """Remove an instance's cgroup without blocking the loop: its last processes may take
        a moment to exit after PID 1 is gone, so retry a few times."""
        try:
            group.kill_all(timeout=0)
            group.remove(timeout=0)
        except OSError as exc:
            if attempts > 0 and not self._stopping:
                loop = asyncio.get_running_loop()
                loop.call_later(0.05, self._remove_cgroup, group, attempts - 1)
            else:
                logger.warning("cgroup %s not removed: %s", group.name, exc)

    def retire(self, instance: Instance) -> None:
        """Stop an instance on purpose (reaped, rolled, deleted): not counted as a crash."""
        instance.expected_exit = True
        if instance.state is not State.dead:
            instance.state = State.draining if instance.inflight else instance.state
        instance.kill("stopped by the platform")

    def kill(self, instance: Instance, reason: str, crash: bool = True) -> None:
        """End an instance now: a misbehaving one (dropped a request) is a crash; one ended
        for its caller's sake (a cancelled invocation) or past its timeout
        (``FunctionPool.overran``) is not."""
        if not crash:
            instance.expected_exit = True
        pool = self.functions.get(instance.function) if instance.function else None
        if pool is not None and instance in pool.instances:
            pool.instances.remove(instance)
        if instance.state is not State.dead:
            instance.state = State.draining
        instance.kill(reason)

    # -- packages -----------------------------------------------------------------------

    def deploy_path(self, deploy: str) -> str:
        return str(self.deploy_root / deploy)

    def package_deploy(self, package: str) -> str | None:
        """The package's last good build, if it has one."""
        pkg = self.packages.get(package)
        return None if pkg is None else pkg.status.deploy

    async def preflight(self, spec: FunctionSpec, deploy: str) -> None:
        """Load ``spec`` on the build ``deploy`` in a fresh instance (``loading.preflight``);
        ``LoadFailed`` if it does not load."""
        await preflight(self, spec, self.deploy_path(deploy))

    def revision_added(self, function: str) -> None:
        """A revision was recorded for a function the store did not change for (its first,
        written just after it): serve the build it names."""
        pool = self.functions.get(function)
        if pool is not None:
            pool.update(pool.spec, self._revision_deploy(function))

    def _revision_deploy(self, function: str) -> str | None:
        latest = self.store.latest_revision(function)
        return None if latest is None else latest.deploy

    async def deploy_dir(self, package: str) -> str:
        """The deploy directory of ``package``, waiting for its first build if need be."""
        while True:
            pkg = self.packages.get(package)
            if pkg is None:
                raise ExecutorError(f"package {package!r} not found")
            if pkg.status.deploy:  # the last good build, also while a rebuild runs or failed
                return self.deploy_path(pkg.status.deploy)
            if pkg.status.state is BuildState.failed:
                raise BuildFailed(
                    f"package {package!r} failed to build; see `fissile pkg info --name {package}`"
                )
            event = self._package_changed.setdefault(package, asyncio.Event())
            await event.wait()

    # -- following the store ------------------------------------------------------------

    def on_change(self, change: Change) -> None:
        if self._stopping:
            return
        kind = change.record.kind
        if kind == "environments":
            self._environment_changed(change)
        elif kind == "functions":
            self._function_changed(change)
        elif kind == "packages":
            self._package_changed_(change)
        elif kind in ("secrets", "configmaps"):
            self._values_changed(change)
        elif kind == uids.KIND:
            function, uid = change.record.data.get("function", ""), int(change.record.name)
            if change.action == "deleted":
                if self.uids.get(function) == uid:
                    del self.uids[function]
                self._function_by_uid.pop(uid, None)
            else:
                self._uid_assigned(function, uid)

    def _uid_assigned(self, function: str, uid: int) -> None:
        self.uids[function] = uid
        self._function_by_uid[uid] = function

    def uid_of(self, function: str) -> int:
        """The uid the function's instances run as: its own, allocated in the store."""
        uid = self.uids.get(function)
        if uid is None:
            uid = uids.allocate(self.store, function)
            self._uid_assigned(function, uid)
        return uid

    def caller(self, pid: int, uid: int) -> str | None:
        """The function whose instance (or a process it started) is the peer ``pid``/``uid``
        of a platform socket connection, from the kernel's word (SO_PEERCRED), never from
        anything the peer sent; None for a process that is no function's."""
        if self.sandbox.fork_config.get("drop_uid"):
            # Each function runs as a uid of its own, which every process it starts keeps.
            return self._function_by_uid.get(uid)
        # Without uids of their own, the process tree tells: the instance or an ancestor.
        for _ in range(_MAX_ANCESTRY):
            instance = self._by_pid.get(pid)
            if instance is not None:
                return instance.function
            pid = _parent_of(pid)
            if pid <= 1:
                return None
        return None

    def _environment_changed(self, change: Change) -> None:
        name = change.record.name
        if change.action == "deleted":
            env = self.environments.pop(name, None)
            for package_pool in self.imports.forget_environment(name):
                self.spawn(package_pool.stop())
            if env is not None:
                self.spawn(env.stop())
            return
        spec = EnvironmentSpec.model_validate(change.record.data)
        existing = self.environments.get(name)
        if existing is None:
            self.spawn(self._add_environment(spec))
        else:
            self.spawn(self._update_environment(existing, spec))

    async def _add_environment(self, spec: EnvironmentSpec) -> None:
        env = EnvironmentPool(spec, self)
        self.environments[spec.name] = env
        try:
            await env.start()
        except Exception as exc:
            logger.error("environment %s failed to start: %s", spec.name, exc)

    async def _update_environment(self, env: EnvironmentPool, spec: EnvironmentSpec) -> None:
        if (spec.image, spec.preload) != (env.spec.image, env.spec.preload):
            # Forked from the old zygote, with the old preload list under them.
            for package_pool in self.imports.forget_environment(spec.name):
                await package_pool.stop()
        # Functions without a contract of their own follow the environment's.
        contract_changed = spec.contract != env.spec.contract
        command_changed = spec.command != env.spec.command
        restarted = await env.update(spec)
        for pool in self.functions.values():
            if pool.spec.env == spec.name and (
                restarted or command_changed or (contract_changed and pool.spec.contract is None)
            ):
                pool.roll(f"environment {spec.name} changed")

    def _values_changed(self, change: Change) -> None:
        """A secret or config map changed: the functions that use it roll onto the new values."""
        used = (change.record.kind, change.record.name)
        singular = "secret" if used[0] == "secrets" else "config map"
        for pool in self.functions.values():
            if used in refs.used(pool.spec):
                self.values.forget(pool.name)
                if change.action == "updated":
                    pool.roll(f"{singular} {used[1]} changed")

    def _function_changed(self, change: Change) -> None:
        name = change.record.name
        self.values.forget(name)
        if change.action == "deleted":
            self.values.remove(name)
            pool = self.functions.pop(name, None)
            if pool is not None:
                pool.close()
            self.metrics.forget(name)
            return
        spec = FunctionSpec.model_validate(change.record.data)
        existing = self.functions.get(name)
        if existing is None:
            self._add_function(spec)
        else:
            existing.update(spec, self._revision_deploy(name))
            existing.keep_warm()
            self._prepare_imports(existing)

    def _add_function(self, spec: FunctionSpec) -> None:
        pool = FunctionPool(spec, self)
        pool.deploy = self._revision_deploy(spec.name)
        self.functions[spec.name] = pool
        pool.keep_warm()
        self._prepare_imports(pool)

    def _prepare_imports(self, pool: FunctionPool) -> None:
        """Scan a new function's package (and make its package zygote) now, in the background,
        rather than at its first request."""
        deploy = pool.deploy or self.package_deploy(pool.spec.package)
        env = self.environments.get(pool.spec.env)
        if deploy is None or env is None or self._stopping:
            return
        if env.spec.image != "python":
            return
        deploy_dir = self.deploy_path(deploy)
        self.spawn(self.imports.source(env, deploy_dir))

    def _package_changed_(self, change: Change) -> None:
        name = change.record.name
        if change.action == "deleted":
            self.packages.pop(name, None)
        else:
            package = Package.model_validate(change.record.merged())
            previous = self.packages.get(name)
            self.packages[name] = package
            old = previous.status.deploy if previous is not None else None
            new = package.status.deploy
            if old is not None and new is not None and old != new:
                for pool in self.functions.values():
                    # A function with a build of its own (its revision's) moves to the new
                    # one only as a new revision, once a pre-flight loaded it
                    # (controlplane/revisions.py).
                    if pool.spec.package == name and pool.deploy is None:
                        pool.roll(f"package {name} rebuilt")
        event = self._package_changed.pop(name, None)
        if event is not None:
            event.set()

    # -- reaping and keeping warm ---------------------------------------------------------

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            now = time.monotonic()
            for pool in list(self.functions.values()):
                pool.autoscale(now)
                pool.keep_warm()
