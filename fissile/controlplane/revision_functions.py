"""Revision functions: what serves a route's revision target (``a@3``, revision_targets.py).

The executor keeps one pool per function name, so revision 3 of ``a`` is served by a function
of its own, ``a-r3``, made by the platform when a route first names ``a@3``: revision 3's spec
on a package of its own restored around revision 3's kept build (as a rollback restores one:
nothing is rebuilt), pre-flighted like any change. It is labelled with the function and the
revision it serves, cannot be changed by users, and is deleted when no route names it. While
it lives, its own revision keeps the build, so pruning ``a``'s revisions never frees it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fissile.controlplane.errors import ApiError, conflict, not_found
from fissile.models import FunctionSpec, HTTPTriggerSpec
from fissile.revision_targets import REVISION, REVISION_OF, fits, function_name, parse, resolve
from fissile.store import Record, uids

if TYPE_CHECKING:
    from fissile.controlplane.resources import Resources

logger = logging.getLogger("fissile.controlplane")


def served(record: Record) -> tuple[str, int] | None:
    """The function and revision a revision function serves; None for a user's function."""
    labels = record.data.get("labels") or {}
    of, number = labels.get(REVISION_OF), labels.get(REVISION)
    if not of or not str(number).isdigit():
        return None
    return str(of), int(str(number))


def refuse_change(record: Record) -> None:
    """Users do not change a revision function: it is what a revision was."""
    origin = served(record)
    if origin is not None:
        function, number = origin
        raise conflict(
            f"function {record.name!r} serves revision {number} of {function!r} for a route"
            f" split ({function}@{number}) and cannot be changed: update {function!r}, or"
            " change the route's weights"
        )


class RevisionFunctions:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.store = resources.store
        self.revisions = resources.revisions

    async def ensure(self, spec: HTTPTriggerSpec) -> None:
        """Make the revision function of each revision target of ``spec`` that has none."""
        for target in spec.function_weights:
            parsed = parse(target)
            if parsed is not None:
                await self._ensure(target, *parsed)

    async def _ensure(self, target: str, function: str, number: int) -> None:
        field = f"function_weights.{target}"
        if not fits(target):
            raise ApiError(
                422,
                "invalid",
                f"{target!r}: function {function!r} has too long a name for a revision target",
                [{"path": field, "message": "the function's name is too long"}],
            )
        name = function_name(function, number)
        async with self.revisions.lock(name):
            existing = self.store.find("functions", name)
            if existing is not None:
                if served(existing) == (function, number):
                    return
                raise conflict(
                    f"{target!r} is served by a function named {name!r}, and a function of"
                    " that name exists that is not it: rename or delete that function"
                )
            if self.store.find("functions", function) is None:
                raise not_found("function", function, field)
            revision = self.store.revision(function, number)
            if revision is None:
                raise not_found("revision", target, field)
            if revision.pruned or revision.deploy is None:
                raise conflict(
                    f"revision {number} of {function!r} was pruned: only the newest"
                    f" {self.revisions.keep} revisions keep their build, and a route can split"
                    " only to one with a build"
                )
            if self.store.find("packages", name) is not None:
                raise conflict(
                    f"{target!r} needs a package named {name!r} for its build, and one exists:"
                    " rename or delete it"
                )
            package = {**(revision.data.get("package") or {}), "name": name, "owner": name}
            data: dict[str, Any] = {
                **revision.data["spec"],
                "name": name,
                "package": name,
                "labels": {REVISION_OF: function, REVISION: str(number)},
            }
            why = f"for revision {number} of {function} (route target {target})"
            restored = self.revisions.restore_package(name, package, revision.deploy, why)
            try:
                data = self.resources.check_function(data)
                await self.revisions.preflight(FunctionSpec.model_validate(data), revision.deploy)
                record = self.store.create("functions", name, data)
            except BaseException:
                if restored is not None and self.store.find("packages", restored) is not None:
                    self.store.delete("packages", restored)
                raise
            uids.allocate(self.store, name)
            self.revisions.created(record, [f"revision {number} of {function}"])
            self.resources.logs.platform(
                function, f"revision {number} serves a route split as function {name}"
            )

    def sweep(self) -> None:
        """Delete the revision functions no route names any more."""
        wanted = {
            resolve(target)
            for trigger in self.store.list("httptriggers")
            for target in trigger.data.get("function_weights") or {}
            if parse(target) is not None
        }
        for record in self.store.list("functions"):
            if record.name in wanted or served(record) is None:
                continue
            try:
                self.resources.delete("functions", record.name)
            except ApiError as exc:  # named elsewhere (a timer?): it stays until that goes
                logger.warning("revision function %s kept: %s", record.name, exc.message)
