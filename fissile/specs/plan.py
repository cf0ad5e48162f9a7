"""Desired state against live state: what must be created, updated and deleted to converge, in
an order the API accepts. Pure: the live state is passed in, nothing is called."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from fissile.models import SINGULAR, SPEC_MODELS, TRIGGER_KINDS
from fissile.specs.deployment import LABEL
from fissile.specs.validate import Desired

Action = Literal["create", "update", "delete", "unchanged"]
#: The order resources are created in; deletes go the other way.
ORDER = (
    "environments",
    "secrets",
    "configmaps",
    "packages",
    "functions",
    *TRIGGER_KINDS,
    "apikeys",
    "canaries",
)
#: Where a resource's references point: (field, kind).
REFERENCES = {
    "packages": (("env", "environments"),),
    "functions": (("env", "environments"), ("package", "packages")),
    **{kind: (("function", "functions"),) for kind in TRIGGER_KINDS},
    "canaries": (
        ("httptrigger", "httptriggers"),
        ("newfunction", "functions"),
        ("oldfunction", "functions"),
    ),
}

Live = Mapping[str, Sequence[Mapping[str, Any]]]


@dataclass(frozen=True)
class Step:
    action: Action
    kind: str
    name: str
    desired: Desired | None = None
    changes: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.action} {SINGULAR[self.kind]} '{self.name}'"
        return f"{text} ({', '.join(self.changes)})" if self.changes else text


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Resources this deployment made that the specs no longer declare, when not deleting.
    orphans: list[Step] = field(default_factory=list)

    def count(self, action: Action) -> int:
        return sum(step.action == action for step in self.steps)

    @property
    def changes(self) -> list[Step]:
        return [step for step in self.steps if step.action != "unchanged"]

    def summary(self) -> str:
        counts = [f"{self.count(a)} to {a}" for a in ("create", "update", "delete")]
        return ", ".join(counts) + f", {self.count('unchanged')} unchanged"


def spec_of(kind: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """A live resource's declared fields, normalised as a spec body is."""
    model = SPEC_MODELS[kind]
    fields = {k: v for k, v in document.items() if k in model.model_fields}
    if kind == "secrets":
        fields.pop("data", None)  # a read never has it
    try:
        spec: dict[str, Any] = model.model_validate(fields).model_dump(mode="json")
    except ValidationError:
        # Stored by an older fissile and no longer valid: differs from anything declared.
        return dict(fields)
    return spec


def make_plan(desired: Sequence[Desired], live: Live, deployment: str, delete: bool) -> Plan:
    """Steps in execution order: deletes of triggers (they free routes and functions), then
    creates and updates kind by kind, then the other deletes in reverse kind order. Without
    ``delete``, what would be deleted is kept in ``orphans`` instead."""
    plan = Plan()
    live_by_key = {(kind, r["name"]): r for kind in ORDER for r in live.get(kind, ())}
    wanted = {(r.kind, r.name) for r in desired}
    forward: list[Step] = []
    for kind in ORDER:
        for resource in (r for r in desired if r.kind == kind):
            current = live_by_key.get((kind, resource.name))
            if current is None:
                forward.append(Step("create", kind, resource.name, resource))
                continue
            have = spec_of(kind, current)
            body = resource.body
            if kind == "secrets":
                # Values are never read back: the digests of the stored and declared ones.
                have = {**have, "data": current.get("digest")}
                body = {**body, "data": resource.digest}
            changed = tuple(k for k, v in body.items() if have.get(k) != v)
            owner = (current.get("labels") or {}).get(LABEL)
            if owner != deployment:
                if changed == ("labels",):
                    # Declared exactly as it already is (the built-in python environment in
                    # most Fission specs): used as it is, never changed or deleted.
                    forward.append(Step("unchanged", kind, resource.name, resource))
                    continue
                whose = f"deployment {owner}" if owner else "no spec directory"
                plan.errors.append(
                    f"{resource.where}: {SINGULAR[kind]} '{resource.name}' already exists and"
                    f" belongs to {whose}; rename it here or delete it first"
                )
                continue
            action: Action = "update" if changed else "unchanged"
            forward.append(Step(action, kind, resource.name, resource, changed))
    deletes = [
        Step("delete", kind, r["name"])
        for kind in reversed(ORDER)
        for r in live.get(kind, ())
        if (r.get("labels") or {}).get(LABEL) == deployment and (kind, r["name"]) not in wanted
    ]
    if not delete:
        plan.orphans, deletes = deletes, []
    first = [s for s in deletes if s.kind in TRIGGER_KINDS]
    plan.steps = first + forward + [s for s in deletes if s.kind not in TRIGGER_KINDS]
    plan.errors += _dangling(desired, live_by_key, {(s.kind, s.name) for s in deletes})
    return plan


def _dangling(
    desired: Sequence[Desired],
    live: Mapping[tuple[str, str], Any],
    deleted: set[tuple[str, str]],
) -> list[str]:
    """References to resources neither declared nor already there (and staying)."""
    declared = {(r.kind, r.name) for r in desired}
    errors = []
    for resource in desired:
        for field_name, kind in REFERENCES.get(resource.kind, ()):
            target = resource.body.get(field_name)
            key = (kind, target)
            if key in declared or (key in live and key not in deleted):
                continue
            errors.append(
                f"{resource.where}: {SINGULAR[resource.kind]} '{resource.name}': {field_name}:"
                f" no {SINGULAR[kind]} '{target}' is declared or exists"
            )
    return errors
