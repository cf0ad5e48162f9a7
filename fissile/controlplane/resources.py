"""The rules of the resource graph, between the API and the store: references must exist,
names are unique, nothing in use is deleted, and builds start when sources change."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from fissile.builder import ArchiveStore, Builder
from fissile.controlplane import canaries
from fissile.controlplane.caps import Caps
from fissile.controlplane.errors import ApiError, conflict, not_found
from fissile.controlplane.revision_functions import RevisionFunctions, refuse_change, served
from fissile.controlplane.revisions import Revisions
from fissile.executor import Executor
from fissile.models import (
    SECRET_MASK,
    SINGULAR,
    TRIGGER_KINDS,
    BuildState,
    BuildStatus,
    CanarySpec,
    EnvironmentSpec,
    FunctionSpec,
    HTTPTriggerSpec,
    MessageQueueTriggerSpec,
    PackageSpec,
    Spec,
    TimeTriggerSpec,
    ValuesSpec,
    WatchTriggerSpec,
)
from fissile.observability import LogBook
from fissile.revision_targets import base, parse, resolve
from fissile.router.routes import Route, find_conflict
from fissile.store import AlreadyExists, NotFound, StaleWrite, StorageFull, Store, uids
from fissile.values import records, refs
from fissile.values.sealing import Sealer, SealError

if TYPE_CHECKING:
    from fissile.cluster.sources import Sources

logger = logging.getLogger("fissile.controlplane")

SOURCE_WAIT = 10.0  # seconds a package's create or update waits for its source's copy here


class Resources:
    def __init__(
        self,
        store: Store,
        builder: Builder,
        archives: ArchiveStore,
        executor: Executor,
        logs: LogBook,
        statuses: dict[str, Callable[[str], BaseModel]] | None = None,
        caps: Caps | None = None,
        sealer: Sealer | None = None,
        revisions: Revisions | None = None,
    ) -> None:
        """``statuses``: per kind, where the live status of a resource comes from (the MQ
        consumers, the timers); ``caps``: the operator's caps on a function's limits;
        ``sealer``: what seals secrets' values (none: secrets cannot be stored);
        ``revisions``: functions' revisions and pre-flight (default: 10 kept)."""
        self.revisions = revisions or Revisions(store, executor, logs, executor.deploy_root)
        self.caps = caps
        self.sealer = sealer
        self.statuses = statuses or {}
        self.store = store
        self.builder = builder
        self.archives = archives
        self.executor = executor
        self.logs = logs
        self.revision_functions = RevisionFunctions(self)
        # Cluster mode: the source archives shared between nodes (cluster/sources.py), this
        # node's name (written into the status of the builds its API asks for: they are its
        # builder's) and whether another node is alive (a build left by a dead one is taken).
        self.sources: Sources | None = None
        self.node: str | None = None
        self.alive: Callable[[str], bool] | None = None

    # -- reads --------------------------------------------------------------------------

    def list_kind(self, kind: str) -> list[dict[str, Any]]:
        return [self._view(kind, record.merged()) for record in self.store.list(kind)]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        record = self.store.find(kind, name)
        if record is None:
            raise not_found(SINGULAR[kind], name)
        return self._view(kind, record.merged())

    def _view(self, kind: str, document: dict[str, Any]) -> dict[str, Any]:
        if kind == "functions":
            document["status"] = self.executor.status(document["name"]).model_dump(mode="json")
            current = self.revisions.current(document["name"])
            if current is not None:
                document["revision"], document["deploy"] = current.number, current.deploy
            preflight = self.revisions.preflights.get(document["name"])
            if preflight is not None:
                document["preflight"] = preflight.model_dump(mode="json")
        elif kind in self.statuses:
            document["status"] = self.statuses[kind](document["name"]).model_dump(mode="json")
        elif kind == "httptriggers":
            if document.get("webhook_secret"):
                document["webhook_secret"] = SECRET_MASK
            # Password hashes and a JWT secret are never shown either: users' names are.
            if document.get("basic_users"):
                document["basic_users"] = {user: SECRET_MASK for user in document["basic_users"]}
            jwt = document.get("jwt")
            if isinstance(jwt, dict) and jwt.get("secret"):
                document["jwt"] = {**jwt, "secret": SECRET_MASK}
        elif kind in records.KINDS:
            document = records.view(document)
        return document

    def _sealer(self) -> Sealer:
        if self.sealer is None:
            raise ApiError(503, "unavailable", "this platform was started without a secrets key")
        return self.sealer

    def digest(self, spec: ValuesSpec) -> str:
        """The digest a secret holding ``spec``'s values has (``spec apply`` compares it with
        the stored one's: the values themselves are never read back)."""
        return self._sealer().digest(spec.data)

    # -- source archives in a cluster ---------------------------------------------------

    async def source_stored(self, digest: str) -> None:
        """An archive uploaded here: in a cluster, this node offers it to the others."""
        if self.sources is None:
            return
        try:
            await self.sources.publish(digest, uploaded=True)
        except Exception as exc:  # the database away: the package's create offers it again
            logger.warning("source archive %s not offered to the cluster: %s", digest[:12], exc)

    async def source_here(self, digest: str) -> None:
        """Before a package naming ``digest`` is stored through this node: in a cluster, the
        source, uploaded through another node, is copied here first and offered (the node
        receiving a package holds its source). One nobody holds is left to the check that
        refuses a source never uploaded."""
        if self.sources is None:
            return
        try:
            # Bounded: a copy already under way (which may wait for a holder) is shared.
            await asyncio.wait_for(self.sources.ensure(digest, wait=0), SOURCE_WAIT)
        except Exception as exc:
            logger.warning("source archive %s not copied here: %s", digest[:12], exc)

    # -- writes -------------------------------------------------------------------------

    def create(self, kind: str, spec: Spec) -> dict[str, Any]:
        data = self._check(kind, spec, creating=True)
        if isinstance(spec, ValuesSpec):
            data = self._sealed(spec)
        try:
            record = self.store.create(kind, data["name"], data)
        except AlreadyExists:
            raise conflict(f"{SINGULAR[kind]} {data['name']!r} already exists") from None
        if kind == "packages":
            self.builder.submit(record.name)
        elif kind == "functions":
            uids.allocate(self.store, record.name)
            self.revisions.created(record)
        return self._view(kind, record.merged())

    def update(self, kind: str, name: str, spec: Spec) -> dict[str, Any]:
        if getattr(spec, "name", name) != name:
            raise ApiError(
                422,
                "invalid",
                f"the body names {getattr(spec, 'name', '')!r} but the URL names {name!r}",
                [{"path": "name", "message": "must match the name in the URL"}],
            )
        current = self.store.find(kind, name)
        if current is None:
            raise not_found(SINGULAR[kind], name)
        if kind == "functions":
            refuse_change(current)
        if isinstance(spec, HTTPTriggerSpec):
            spec = _unmask(spec, current.data)
        data = self._check(kind, spec, creating=False)
        if isinstance(spec, ValuesSpec):
            data = self._sealed(spec)
            same = ("digest", "labels", "keys")
            if all(data.get(k) == current.data.get(k) for k in same):
                # The same values again (a spec re-applied): nothing changes, nothing rolls.
                return self._view(kind, current.merged())
        if kind == "httptriggers" and data.get("webhook_secret") == SECRET_MASK:
            # What a read showed, sent back unchanged: the secret stays as it is.
            data["webhook_secret"] = current.data.get("webhook_secret")
        rebuild = False
        if kind == "packages":
            old = (current.data.get("source"), current.data.get("buildcmd"), current.data["env"])
            new = (data["source"], data.get("buildcmd"), data["env"])
            previous = BuildStatus.model_validate(current.data.get("status", {}))
            if old == new:
                data["status"] = current.data["status"]
            else:
                rebuild = True
                fresh = BuildStatus(
                    deploy=previous.deploy, rebuild=previous.rebuild, node=self.node
                )
                data["status"] = fresh.model_dump(mode="json")
        record = self.store.update(kind, name, data)
        if rebuild:
            self.builder.submit(name)
        return self._view(kind, record.merged())

    async def update_function(self, name: str, spec: FunctionSpec) -> dict[str, Any]:
        """Change a function: a new revision, pre-flighted first when its instances must roll
        (``revisions.py``); a revision that does not load is refused (422 load_failed)."""
        if spec.name != name:
            return self.update("functions", name, spec)  # the mismatch's 422
        async with self.revisions.lock(name):
            current = self.store.find("functions", name)
            if current is None:
                raise not_found("function", name)
            refuse_change(current)
            data = self._check("functions", spec, creating=False)
            record = await self.revisions.change(current, data)
        return self._view("functions", record.merged())

    async def rollback(self, name: str, to: int | None) -> dict[str, Any]:
        """Return a function to an earlier revision (default: the one before), as a new one."""
        async with self.revisions.lock(name):
            current = self.store.find("functions", name)
            if current is None:
                raise not_found("function", name)
            refuse_change(current)
            record = await self.revisions.rollback(current, to, self._check_function)
        return self._view("functions", record.merged())

    async def save_route(self, spec: HTTPTriggerSpec, name: str | None = None) -> dict[str, Any]:
        """Create (``name`` None) or update a route, first making the revision functions its
        revision targets need; afterwards those no route names any more go."""
        try:
            await self.revision_functions.ensure(spec)
            if name is None:
                return self.create("httptriggers", spec)
            return self.update("httptriggers", name, spec)
        finally:
            self.revision_functions.sweep()

    def check_function(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` checked as a function's spec is on a change (422 if no longer valid)."""
        return self._check_function(data)

    def _check_function(self, data: dict[str, Any]) -> dict[str, Any]:
        try:
            spec = FunctionSpec.model_validate(data)
        except ValidationError as exc:
            raise ApiError(
                422, "invalid", f"the revision's settings are no longer valid: {exc}"
            ) from None
        return self._check("functions", spec, creating=False)

    def function_revisions(self, name: str) -> list[dict[str, Any]]:
        if self.store.find("functions", name) is None:
            raise not_found("function", name)
        return self.revisions.listing(name)

    def rebuild(self, name: str) -> dict[str, Any]:
        current = self.store.find("packages", name)
        if current is None:
            raise not_found("package", name)
        status = BuildStatus.model_validate(current.data.get("status", {}))
        if status.state in (BuildState.pending, BuildState.building) and not self._left(status):
            raise conflict(f"package {name!r} is already {status.state.value}")
        fresh = BuildStatus(deploy=status.deploy, rebuild=status.rebuild + 1, node=self.node)
        try:
            record = self.store.update(
                "packages",
                name,
                {**current.data, "status": fresh.model_dump(mode="json")},
                generation=current.generation,
            )
        except StaleWrite:
            raise conflict(f"package {name!r} changed meanwhile; try again") from None
        self.builder.submit(name)
        return record.merged()

    def _left(self, status: BuildStatus) -> bool:
        """A build another node of the cluster started and can no longer finish (it stopped
        or died): a rebuild here takes its place."""
        owner = status.node
        return self.alive is not None and owner not in (None, self.node) and not self.alive(owner)

    def delete(self, kind: str, name: str) -> dict[str, Any]:
        record = self.store.find(kind, name)
        if record is None:
            raise not_found(SINGULAR[kind], name)
        users = self._users(kind, name)
        if users:
            raise conflict(
                f"{SINGULAR[kind]} {name!r} is in use by {', '.join(users)}; delete those first"
            )
        try:
            deleted = self.store.delete(kind, name)
        except NotFound:
            raise not_found(SINGULAR[kind], name) from None
        if kind == "functions":
            self.logs.forget(name)  # first: it frees space, which a full disk needs
            try:
                uids.release(self.store, name)
                self._delete_owned_package(name, record.data.get("package"))
                self.revisions.forget(name)
            except StorageFull:
                # The function is gone, which is what was asked; its package stays until a
                # delete of its own (`pkg delete`) when the disk has space, and its uid stays
                # reserved (a function created again under its name takes it back).
                logger.warning("function %s deleted; its package or uid stays (disk full)", name)
        if kind == "packages":
            self.builder.cancel(name)
        if kind == "httptriggers":
            self.revision_functions.sweep()
        return deleted.merged()

    def _delete_owned_package(self, function: str, package: str | None) -> None:
        if package is None:
            return
        owned = self.store.find("packages", package)
        if owned is None or owned.data.get("owner") != function:
            return
        if not self._users("packages", package):
            self.store.delete("packages", package)
            self.builder.cancel(package)

    def _sealed(self, spec: ValuesSpec) -> dict[str, Any]:
        try:
            return records.to_record(spec, self._sealer())
        except SealError as exc:
            raise ApiError(500, "sealing_failed", str(exc)) from None

    # -- rules --------------------------------------------------------------------------

    def _check(self, kind: str, spec: Spec, creating: bool) -> dict[str, Any]:
        if isinstance(spec, FunctionSpec) and self.caps is not None:
            spec = self.caps.fit(spec)
        data = spec.model_dump(mode="json")
        if isinstance(spec, PackageSpec):
            self._require("environments", spec.env, "env")
            if not self.archives.exists(spec.source):
                raise ApiError(
                    422,
                    "invalid",
                    f"source archive {spec.source[:12]} has not been uploaded",
                    [{"path": "source", "message": "upload it first: POST /v1/archives"}],
                )
            data["status"] = BuildStatus(node=self.node).model_dump(mode="json")
        elif isinstance(spec, FunctionSpec):
            self._require("environments", spec.env, "env")
            package = self._require("packages", spec.package, "package")
            if package.data["env"] != spec.env:
                raise ApiError(
                    422,
                    "invalid",
                    f"package {spec.package!r} is built for environment {package.data['env']!r},"
                    f" not {spec.env!r}",
                    [{"path": "env", "message": "must match the package's environment"}],
                )
            status = BuildStatus.model_validate(package.data.get("status", {}))
            if status.state is BuildState.failed and status.deploy is None:
                tail = "\n".join(status.log.strip().splitlines()[-15:])
                raise conflict(f"package {spec.package!r} failed to build:\n{tail}")
            self._check_values(spec)
        elif isinstance(spec, HTTPTriggerSpec):
            self._require_trigger_target(spec.function, "function")
            for target in spec.function_weights:
                # A revision target (a@3) is served by its revision function (a-r3).
                if parse(target) is None:
                    self._require_trigger_target(target, f"function_weights.{target}")
                else:
                    self._require("functions", resolve(target), f"function_weights.{target}")
            _check_edge(spec)
            route = Route.from_trigger(spec)
            existing = [
                Route.from_trigger(HTTPTriggerSpec.model_validate(r.data))
                for r in self.store.list("httptriggers")
            ]
            clash = find_conflict(route, existing)
            if clash is not None:
                methods = ", ".join(sorted(clash.methods)) or "any method"
                raise conflict(
                    f"HTTP trigger {clash.trigger!r} already routes {clash.path} ({methods})"
                )
        elif isinstance(spec, TimeTriggerSpec | MessageQueueTriggerSpec | WatchTriggerSpec):
            self._require_trigger_target(spec.function, "function")
        elif isinstance(spec, CanarySpec):
            data["status"] = canaries.check(self.store, spec).model_dump(mode="json")
        elif isinstance(spec, EnvironmentSpec):
            pass
        return data

    def _check_values(self, spec: FunctionSpec) -> None:
        """Every secret and config map the function names exists, with every key its env vars
        name."""
        for index, ref in enumerate(spec.secrets):
            self._require("secrets", ref.name, f"secrets.{index}")
        for index, ref in enumerate(spec.configmaps):
            self._require("configmaps", ref.name, f"configmaps.{index}")
        for variable, kind, name, key in refs.env_references(spec):
            record = self._require(kind, name, f"env_vars.{variable}")
            if key not in {k["key"] for k in record.data.get("keys", [])}:
                raise ApiError(
                    422,
                    "invalid",
                    f"{SINGULAR[kind]} {name!r} has no key {key!r}",
                    [{"path": f"env_vars.{variable}", "message": f"no key {key!r} in {name!r}"}],
                )

    def _require(self, kind: str, name: str, field: str) -> Any:
        record = self.store.find(kind, name)
        if record is None:
            raise not_found(SINGULAR[kind], name, field)
        return record

    def _require_trigger_target(self, function: str, field: str) -> None:
        """A trigger names a user's function: a revision function lives only as long as a
        route's revision target names it."""
        record = self._require("functions", function, field)
        origin = served(record)
        if origin is not None:
            raise conflict(
                f"function {function!r} serves a route's revision target and goes with it;"
                f" name the revision in a route's split instead ({origin[0]}@{origin[1]})"
            )

    def _users(self, kind: str, name: str) -> list[str]:
        users: list[str] = []
        if kind == "environments":
            users += [
                f"package {r.name!r}" for r in self.store.list("packages") if r.data["env"] == name
            ]
            users += [
                f"function {r.name!r}"
                for r in self.store.list("functions")
                if r.data["env"] == name
            ]
        elif kind == "packages":
            users += [
                f"function {r.name!r}"
                for r in self.store.list("functions")
                if r.data["package"] == name
            ]
        elif kind in records.KINDS:
            users += [
                f"function {r.name!r}"
                for r in self.store.list("functions")
                if (kind, name) in _used(r.data)
            ]
        elif kind == "functions":
            for trigger_kind in TRIGGER_KINDS:
                users += [
                    f"{SINGULAR[trigger_kind]} {r.name!r}"
                    for r in self.store.list(trigger_kind)
                    if r.data["function"] == name or _targets(r.data, name)
                ]
        return users


def _targets(trigger: dict[str, Any], function: str) -> bool:
    """Whether a route's split names ``function``, one of its revisions (a@3 for a), or the
    revision it serves (a@3 for a-r3)."""
    return any(
        function in (base(target), resolve(target))
        for target in trigger.get("function_weights") or {}
    )


def _used(data: dict[str, Any]) -> set[tuple[str, str]]:
    try:
        return refs.used(FunctionSpec.model_validate(data))
    except ValueError:
        return set()


def _unmask(spec: HTTPTriggerSpec, current: dict[str, Any]) -> HTTPTriggerSpec:
    """An update that sends back what a read showed (masked secrets) keeps the stored ones."""
    changes: dict[str, Any] = {}
    stored_users = current.get("basic_users") or {}
    if any(value == SECRET_MASK for value in spec.basic_users.values()):
        users = dict(spec.basic_users)
        for user, value in spec.basic_users.items():
            if value == SECRET_MASK and user in stored_users:
                users[user] = stored_users[user]
        changes["basic_users"] = users
    stored_jwt = current.get("jwt") or {}
    if spec.jwt is not None and spec.jwt.secret == SECRET_MASK and stored_jwt.get("secret"):
        changes["jwt"] = spec.jwt.model_copy(update={"secret": stored_jwt["secret"]})
    return spec.model_copy(update=changes) if changes else spec


def _check_edge(spec: HTTPTriggerSpec) -> None:
    """What a route's edge settings name must exist and be usable: no route is made that
    would have to refuse every request."""
    from fissile.router.auth import load_jwks

    problems: list[dict[str, str]] = []
    unknown = [user for user, value in spec.basic_users.items() if value == SECRET_MASK]
    if unknown:
        problems.append(
            {"path": "basic_users", "message": f"no stored password for {', '.join(unknown)}"}
        )
    if spec.jwt is not None:
        if spec.jwt.secret == SECRET_MASK:
            problems.append({"path": "jwt.secret", "message": "no stored secret to keep"})
        if spec.jwt.jwks_file is not None:
            try:
                load_jwks(spec.jwt.jwks_file)
            except ValueError as exc:
                problems.append({"path": "jwt.jwks_file", "message": str(exc)})
    if problems:
        raise ApiError(422, "invalid", problems[0]["message"], problems)
