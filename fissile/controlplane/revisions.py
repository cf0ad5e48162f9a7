"""Revisions of functions, rollback and pre-flight (the store's side: store/revisions.py).

Every accepted change of a function's code, package or configuration adds a revision: its
spec and the build it serves, numbered, immutable. The executor serves a function's newest
revision (``FunctionPool.deploy``). A change that makes instances roll is first loaded by a
pre-flight (``executor/loading.py``): one fresh sandboxed instance loads the new revision,
and if that fails the change is refused with the load's error and nothing else moves, so the
old revision keeps serving. A package built in the background (a ``pkg update``, a spec's new
source) is pre-flighted for each function on it when its build finishes; the function moves
to the new build only if it loads. A rollback adds a revision copying an older one: its build
is still on disk (the newest ``keep`` revisions keep theirs), so nothing is rebuilt.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fissile._units import format_duration, format_memory
from fissile.controlplane.errors import ApiError, conflict, not_found
from fissile.executor import Executor
from fissile.executor.errors import ExecutorError, LoadFailed
from fissile.models import BuildState, BuildStatus, FunctionSpec, PreflightStatus
from fissile.observability import LogBook
from fissile.store import Change, Record, Revision, Store

logger = logging.getLogger("fissile.controlplane")

DEFAULT_KEEP = 10
_DURATIONS = ("timeout", "idle_timeout", "queue_timeout")
# Fields that are no part of a revision: metadata, and the package, which ``describe`` reports
# as what it holds (its source) rather than by name.
_NOT_CONFIG = ("name", "labels", "package")


class Revisions:
    def __init__(
        self,
        store: Store,
        executor: Executor,
        logs: LogBook,
        deploy_root: Path,
        keep: int = DEFAULT_KEEP,
    ) -> None:
        """``keep``: revisions per function that keep their build (for a rollback)."""
        if keep < 1:
            raise ValueError("at least one revision must keep its build")
        self.store = store
        self.executor = executor
        self.logs = logs
        self.deploy_root = deploy_root
        self.keep = keep
        # In a cluster: told which builds were freed here, so their packed archives go too.
        self.freed: Callable[[set[str]], None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        # The last pre-flight of a background build, per function, while it runs or after it
        # refused a build (cleared when the function moves to a build).
        self.preflights: dict[str, PreflightStatus] = {}

    def start(self) -> None:
        """Give functions made before revisions were recorded their first one, and follow
        package builds. Before the executor starts: it serves each function's newest."""
        for record in self.store.list("functions"):
            if self.store.latest_revision(record.name) is None:
                try:
                    self.created(record, ["created (before revisions were recorded)"])
                except ApiError as exc:  # its package is gone: it serves nothing either way
                    logger.warning("function %s: no first revision: %s", record.name, exc)
        self.store.subscribe(self._on_change)

    def lock(self, function: str) -> asyncio.Lock:
        """Held while a function's next revision is decided: one change at a time."""
        lock = self._locks.get(function)
        if lock is None:
            lock = self._locks[function] = asyncio.Lock()
        return lock

    # -- reads --------------------------------------------------------------------------

    def listing(self, function: str) -> list[dict[str, Any]]:
        return [self.view(revision) for revision in self.store.revisions(function)]

    def view(self, revision: Revision) -> dict[str, Any]:
        package = revision.data.get("package") or {}
        return {
            "function": revision.function,
            "number": revision.number,
            "created_at": revision.created_at,
            "package": package.get("name"),
            "source": package.get("source"),
            "deploy": revision.deploy,
            "changes": revision.data.get("changes", []),
            "rollback_to": revision.data.get("rollback_to"),
            "pruned": revision.pruned,
            "spec": revision.data.get("spec", {}),
        }

    def current(self, function: str) -> Revision | None:
        return self.store.latest_revision(function)

    # -- writes -------------------------------------------------------------------------

    def created(self, record: Record, changes: list[str] | None = None) -> Revision:
        """A new function's first revision (no pre-flight: there is nothing older to keep)."""
        spec = FunctionSpec.model_validate(record.data)
        package = self._package(spec.package)
        deploy = _deploy_of(package)
        revision = self.store.add_revision(
            spec.name, deploy, self._data(spec, _summary(package), changes or ["created"], None)
        )
        self.executor.revision_added(spec.name)
        return revision

    async def change(
        self,
        current: Record,
        data: dict[str, Any],
        *,
        rollback: Revision | None = None,
    ) -> Record:
        """Make ``data`` the function's spec: pre-flight it if instances must roll, then a new
        revision, then the store (which rolls the executor's instances). Call with the
        function's ``lock`` held. ``rollback``: the revision returned to (its build)."""
        name = current.name
        old = FunctionSpec.model_validate(current.data)
        new = FunctionSpec.model_validate(data)
        latest = self.store.latest_revision(name)
        package = self._package(new.package)
        served = latest.deploy if latest is not None else _deploy_of(self._package(old.package))
        if rollback is not None:
            deploy = rollback.deploy
        elif new.package == old.package and latest is not None and latest.deploy is not None:
            # The build the function serves, even when its package has a newer one that a
            # pre-flight refused.
            deploy = latest.deploy
        else:
            deploy = _deploy_of(package)
        previous_package = latest.data.get("package") if latest is not None else None
        if rollback is not None:
            summary = rollback.data.get("package") or _summary(package)
        elif previous_package is not None and deploy == served and new.package == old.package:
            summary = previous_package  # what that build was made from
        else:
            summary = _summary(package)
        if rollback is not None:
            changes = [f"rollback to {rollback.number}"]
        else:
            changes = describe(name, current.data, data, previous_package, summary, served, deploy)
        if not changes:
            # Labels only, or nothing at all: no new revision.
            return self.store.update("functions", name, data)
        if deploy is not None and (new.code_fields() != old.code_fields() or deploy != served):
            await self._preflight(new, deploy)
            if self.store.find("functions", name) is None:
                raise not_found("function", name)  # deleted meanwhile
        revision = self.store.add_revision(
            name,
            deploy,
            self._data(new, summary, changes, None if rollback is None else rollback.number),
        )
        record = self.store.update("functions", name, data)
        self.logs.platform(name, f"revision {revision.number}: {', '.join(changes)}")
        self.preflights.pop(name, None)
        self.prune(name)
        return record

    async def rollback(
        self,
        current: Record,
        to: int | None,
        check: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Record:
        """Return the function to revision ``to`` (default: the one before its current) as a
        new revision. Call with the function's ``lock`` held. ``check``: the rules a new spec
        must pass today (references, the operator's caps), returning it as it is to be
        stored."""
        name = current.name
        latest = self.store.latest_revision(name)
        if latest is None:
            raise conflict(f"function {name!r} has no revisions")
        number = latest.number - 1 if to is None else to
        if number == latest.number:
            raise conflict(f"revision {number} is the one function {name!r} serves")
        target = self.store.revision(name, number)
        if target is None or number < 1:
            raise not_found("revision", str(number), "to")
        if target.pruned:
            raise conflict(
                f"revision {number} of {name!r} was pruned: only the newest {self.keep}"
                " revisions keep their build (`fissile up --keep-revisions`)"
            )
        spec = dict(target.data["spec"])
        spec["labels"] = current.data.get("labels", {})
        package = target.data.get("package") or {}
        restored = self._restore_package(name, package, target.deploy)
        spec["package"] = package.get("name", spec.get("package"))
        try:
            if check is not None:
                spec = check(spec)
            return await self.change(current, spec, rollback=target)
        except BaseException:
            if restored is not None and self.store.find("packages", restored) is not None:
                self.store.delete("packages", restored)  # made for a rollback that failed
            raise

    def forget(self, function: str) -> None:
        """A deleted function: its revisions go, and the builds only they kept."""
        gone = self.store.forget_revisions(function)
        self._locks.pop(function, None)
        self.preflights.pop(function, None)
        self.free(r.deploy for r in gone)

    def prune(self, function: str) -> None:
        self.store.prune_revisions(function, self.keep)
        # Every pruned revision's build, not only the newly pruned: one an instance still ran
        # last time (draining) is freed now.
        self.free(r.deploy for r in self.store.revisions(function) if r.pruned)

    # -- background builds ----------------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        if change.record.kind != "packages" or change.action != "updated":
            return
        status = BuildStatus.model_validate(change.record.data.get("status", {}))
        before = BuildStatus.model_validate(
            (change.previous or change.record).data.get("status", {})
        )
        if status.state is not BuildState.succeeded or status.deploy is None:
            return
        if status.deploy == before.deploy and before.state is BuildState.succeeded:
            return
        package = change.record.name
        for record in self.store.list("functions"):
            if record.data.get("package") != package:
                continue
            latest = self.store.latest_revision(record.name)
            if latest is not None and latest.deploy == status.deploy:
                self.preflights.pop(record.name, None)  # back to the build it serves
                continue
            self.preflights[record.name] = PreflightStatus(
                state="running", deploy=status.deploy, at=datetime.now(UTC)
            )
            self.executor.spawn(self._follow_build(record.name, package, status.deploy))

    async def _follow_build(self, function: str, package: str, deploy: str) -> None:
        """Move ``function`` to its package's new build ``deploy`` if a pre-flight loads it."""
        async with self.lock(function):
            record = self.store.find("functions", function)
            pkg = self.store.find("packages", package)
            if (
                record is None
                or record.data.get("package") != package
                or pkg is None
                or _deploy_of(pkg) != deploy
            ):
                self._settled(function, deploy)  # superseded by a later change
                return
            latest = self.store.latest_revision(function)
            if latest is not None and latest.deploy == deploy:
                self._settled(function, deploy)
                return
            spec = FunctionSpec.model_validate(record.data)
            try:
                await self.executor.preflight(spec, deploy)
            except ExecutorError as exc:
                # LoadFailed, or no instance to load it in: either way it does not move.
                self.preflights[function] = PreflightStatus(
                    state="refused", deploy=deploy, error=exc.message, at=datetime.now(UTC)
                )
                self.logs.platform(
                    function,
                    f"pre-flight refused build {deploy[:12]} of package {package}; revision"
                    f" {latest.number if latest else '-'} keeps serving: {exc.message}",
                    "ERROR",
                )
                return
            if self.store.find("functions", function) is None:
                self._settled(function, deploy)
                return  # deleted meanwhile
            previous = (latest.data.get("package") if latest is not None else None) or {}
            summary = _summary(pkg)
            served = None if latest is None else latest.deploy
            changes = describe(
                function, record.data, record.data, previous, summary, served, deploy
            )
            revision = self.store.add_revision(
                function, deploy, self._data(spec, summary, changes or ["build"], None)
            )
            # The same spec written again: the executor reads the new revision and rolls.
            self.store.update("functions", function, record.data)
            self.logs.platform(function, f"revision {revision.number}: {', '.join(changes)}")
            self._settled(function, deploy)
            self.prune(function)

    def _settled(self, function: str, deploy: str) -> None:
        state = self.preflights.get(function)
        if state is not None and state.deploy == deploy and state.state == "running":
            del self.preflights[function]

    # -- for revision functions (revision_functions.py) ----------------------------------

    async def preflight(self, spec: FunctionSpec, deploy: str) -> None:
        """Load ``spec`` on build ``deploy`` in one sandboxed instance; 422 if it fails."""
        await self._preflight(spec, deploy)

    def restore_package(
        self, function: str, package: dict[str, Any], deploy: str | None, why: str
    ) -> str | None:
        """Make ``package`` (a revision's, renamed) around the kept build ``deploy``."""
        return self._restore_package(function, package, deploy, why)

    # -- helpers ------------------------------------------------------------------------

    async def _preflight(self, spec: FunctionSpec, deploy: str) -> None:
        try:
            await self.executor.preflight(spec, deploy)
        except LoadFailed as exc:
            self.logs.platform(spec.name, f"pre-flight refused the change: {exc}", "ERROR")
            raise ApiError(
                422,
                "load_failed",
                f"function {spec.name!r} failed to load; the change was refused and the"
                f" current revision keeps serving:\n{exc.message}",
            ) from None
        except ExecutorError as exc:
            raise ApiError(
                503, "unavailable", f"pre-flight of {spec.name!r} could not run: {exc.message}"
            ) from None

    def _package(self, name: str) -> Record:
        record = self.store.find("packages", name)
        if record is None:
            raise not_found("package", name, "package")
        return record

    def _data(
        self,
        spec: FunctionSpec,
        package: dict[str, Any],
        changes: list[str],
        rollback_to: int | None,
    ) -> dict[str, Any]:
        fields = spec.model_dump(mode="json")
        fields.pop("labels", None)
        return {
            "spec": fields,
            "package": package,
            "changes": changes,
            "rollback_to": rollback_to,
        }

    def _restore_package(
        self, function: str, package: dict[str, Any], deploy: str | None, why: str = ""
    ) -> str | None:
        """A rollback to a revision whose package was deleted since (``fn update --code``
        replaces the function's own package): make it again around the kept build, without
        building; its name, if it was made. A package still there is left as it is: the
        revision's build is used."""
        name = package.get("name")
        if not name or self.store.find("packages", name) is not None:
            return None
        if deploy is None or package.get("env") is None or package.get("source") is None:
            raise conflict(f"revision's package {name!r} is gone and cannot be made again")
        now = datetime.now(UTC)
        status = BuildStatus(
            state=BuildState.succeeded,
            deploy=deploy,
            log=f"restored {why or f'for a rollback of {function}'}: build {deploy[:12]} kept\n",
            started_at=now,
            finished_at=now,
        )
        self.store.create(
            "packages",
            name,
            {
                "name": name,
                "env": package["env"],
                "source": package["source"],
                "buildcmd": package.get("buildcmd"),
                "owner": package.get("owner"),
                "labels": {},
                "status": status.model_dump(mode="json"),
            },
        )
        return str(name)

    def free(self, deploys: Iterable[str | None]) -> set[str]:
        """Delete those of ``deploys`` no kept revision, package or live function serves any
        longer (a cluster's node also sweeps the builds it fetched so: ``cluster/service.py``);
        the ones kept only because this node's instances still run them (free again once
        they are gone)."""
        candidates = {d for d in deploys if d}
        if not candidates:
            return set()
        kept = self.store.kept_deploys()
        kept |= {d for r in self.store.list("packages") if (d := _deploy_of(r))}
        running = {p.deploy for p in self.executor.functions.values() if p.deploy}
        running |= {Path(i.deploy_dir).name for i in self.executor.instances() if i.deploy_dir}
        unused = candidates - kept - running
        if unused and self.freed is not None:
            self.freed(unused)
        for deploy in unused:
            path = self.deploy_root / deploy
            if not path.is_dir():
                continue
            # Out of the way at once (a build of the same key would reuse it), then removed
            # off the event loop.
            doomed = self.deploy_root / f".pruned-{deploy}-{secrets.token_hex(4)}"
            try:
                path.rename(doomed)
            except OSError as exc:
                logger.warning("build %s not pruned: %s", deploy[:12], exc)
                continue
            self.executor.spawn(asyncio.to_thread(shutil.rmtree, doomed, True))
        return (candidates - kept) & running


def describe(
    function: str,
    old: dict[str, Any],
    new: dict[str, Any],
    old_package: dict[str, Any] | None,
    new_package: dict[str, Any],
    old_deploy: str | None,
    new_deploy: str | None,
) -> list[str]:
    """What differs between two states of a function, in words: ``code``, ``env-var FOO``,
    ``memory 128Mi→256Mi``..."""
    changes: list[str] = []
    before, after = old_package or {}, new_package
    if before.get("source") != after.get("source"):
        changes.append("code")
    elif before.get("buildcmd") != after.get("buildcmd"):
        changes.append("build command")
    elif old_deploy is not None and new_deploy is not None and old_deploy != new_deploy:
        changes.append(f"rebuild of package {after.get('name')}")
    # A function's own package is renamed by every `fn update --code`: that is news only when
    # the code stayed the same.
    owned = before.get("owner") == function == after.get("owner")
    if before.get("name") != after.get("name") and not (owned and changes):
        changes.append(f"package {before.get('name')}→{after.get('name')}")
    for field in FunctionSpec.model_fields:
        if field in _NOT_CONFIG:
            continue
        was, now = old.get(field), new.get(field)
        if was == now:
            continue
        if field == "env_vars":
            was, now = was or {}, now or {}
            for key in sorted(set(was) | set(now)):
                if key not in now:
                    changes.append(f"env-var {key} removed")
                elif was.get(key) != now[key]:
                    changes.append(f"env-var {key}")
            continue
        if field in _REFERENCES:
            kind = _REFERENCES[field]
            had, has = _names(was), _names(now)
            changes += [f"{kind} {name} added" for name in has if name not in had]
            changes += [f"{kind} {name} removed" for name in had if name not in has]
            continue
        changes.append(f"{field.replace('_', '-')} {_show(field, was)}→{_show(field, now)}")
    return changes


# Lists of secrets and config maps, told by name (a change of their values rolls the function
# but is no revision: the revision names them, their values live apart).
_REFERENCES = {"secrets": "secret", "configmaps": "configmap"}


def _names(references: Any) -> list[str]:
    names = []
    for ref in references or []:
        namespace = ref.get("namespace", "default")
        names.append(ref["name"] if namespace == "default" else f"{namespace}/{ref['name']}")
    return names


def _summary(package: Record) -> dict[str, Any]:
    """What a revision keeps of its package: enough to make it again (``_restore_package``)."""
    fields = ("source", "buildcmd", "env", "owner")
    return {"name": package.name, **{key: package.data.get(key) for key in fields}}


def _show(field: str, value: Any) -> str:
    if value is None:
        return "unset"
    if field == "memory":
        return format_memory(int(value))
    if field in _DURATIONS:
        return format_duration(float(value))
    return str(value)


def _deploy_of(package: Record) -> str | None:
    deploy = package.data.get("status", {}).get("deploy")
    return str(deploy) if deploy else None
