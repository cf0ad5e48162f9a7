"""Carrying out a plan through the API, one resource at a time, stopping at the first failure
with an exact account of what was and was not applied (a second apply finishes the job)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fissile.client import ClientError
from fissile.specs.plan import Plan, Step


class Api(Protocol):
    """The part of ``fissile.client.Client`` that apply uses."""

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def update(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]: ...
    def delete(self, kind: str, name: str) -> dict[str, Any]: ...
    def upload_archive(self, data: bytes) -> dict[str, Any]: ...
    def wait_for_build(self, name: str, timeout: float = ...) -> dict[str, Any]: ...
    def wait_for_rollout(self, package: dict[str, Any], timeout: float = ...) -> dict[str, str]: ...


@dataclass
class Outcome:
    done: list[Step] = field(default_factory=list)
    failed: Step | None = None
    error: str = ""
    not_done: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed is None


class BuildFailed(Exception):
    def __init__(self, step: Step, message: str) -> None:
        super().__init__(message)
        self.step = step


def execute(
    api: Api, plan: Plan, wait: bool = False, echo: Callable[[str], None] = print
) -> Outcome:
    """Run the plan's changes in order. With ``wait``, the builds started by package steps are
    waited for before any function is touched, so a failed build changes no function."""
    outcome = Outcome()
    steps = plan.changes
    building: list[Step] = []
    for index, step in enumerate(steps):
        try:
            if wait and building and step.kind not in ("environments", "packages"):
                _wait(api, building, echo)
                building = []
        except BuildFailed as exc:
            outcome.failed, outcome.error, outcome.not_done = exc.step, str(exc), steps[index:]
            return outcome
        try:
            created = _run(api, step)
        except ClientError as exc:
            outcome.failed, outcome.error = step, exc.message
            outcome.not_done = steps[index + 1 :]
            return outcome
        outcome.done.append(step)
        echo(f"{_past(step)} {str(step).split(' ', 1)[1]}")
        if created is not None and "value" in created:
            # An API key's value exists from its creation on, and is shown this once.
            echo(f"  its value (shown only now): {created['value']}")
        if step.kind == "packages" and step.action != "delete":
            building.append(step)
    if wait and building:
        try:
            _wait(api, building, echo)
        except BuildFailed as exc:
            outcome.failed, outcome.error = exc.step, str(exc)
    return outcome


def _past(step: Step) -> str:
    return {"create": "created", "update": "updated", "delete": "deleted"}[step.action]


def _run(api: Api, step: Step) -> dict[str, Any] | None:
    """What the API answered to a create (None for other steps)."""
    if step.action == "delete":
        try:
            api.delete(step.kind, step.name)
        except ClientError as exc:
            # A function's own package goes with it: already gone is what was wanted.
            if exc.status != 404:
                raise
        return None
    desired = step.desired
    assert desired is not None
    new_source = step.action == "create" or "source" in step.changes
    if step.kind == "packages" and desired.archive is not None and new_source:
        api.upload_archive(desired.archive)
    if step.action == "create":
        return api.create(step.kind, desired.body)
    api.update(step.kind, step.name, desired.body)
    return None


def _wait(api: Api, steps: list[Step], echo: Callable[[str], None]) -> None:
    for step in steps:
        package = api.wait_for_build(step.name)
        status = package["status"]
        if status["state"] == "failed":
            tail = "\n".join(str(status.get("log", "")).strip().splitlines()[-20:])
            raise BuildFailed(step, f"the build failed:\n{tail}")
        echo(f"built package '{step.name}'")
        # The functions on it move to the new build only once a pre-flight loaded it.
        refused = api.wait_for_rollout(package)
        if refused:
            errors = "\n".join(f"function '{name}': {error}" for name, error in refused.items())
            raise BuildFailed(step, f"the new build was refused by its functions:\n{errors}")
