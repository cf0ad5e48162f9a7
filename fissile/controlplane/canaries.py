"""Canaries: a route's traffic moved from one function to another step by step (Fission's
CanaryConfig), rolled back when the new function fails.

A canary names a route (HTTP trigger) serving ``oldfunction``. When it is created (or
changed), the route gets ``function_weights`` {old: 100 - w, new: w}; every
``increment_interval`` the new function's 5xx share of its requests in that interval, counted
by the router (``observability/metrics.py``), is compared with ``failure_threshold``: at or
under it, ``w`` grows by ``increment_step`` (at 100 the canary has succeeded); over it, ``w``
goes back to 0 and the canary has failed. An interval in which the new function got no
request decides nothing (as in Fission): the next one is waited for.

Everything a canary needs to go on is in the store (its status, the time of its next step),
so after a restart the schedule resumes where it was; the counting starts again with the
restart, as the router's counters do.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fissile.controlplane.errors import ApiError, conflict, not_found
from fissile.models import CanarySpec, CanaryState, CanaryStatus, HTTPTriggerSpec
from fissile.observability.metrics import Metrics, server_errors
from fissile.store import Change, NotFound, Store

logger = logging.getLogger("fissile.canary")

KIND = "canaries"


@dataclass(frozen=True)
class Decision:
    state: CanaryState
    weight: int
    error_rate: float | None
    message: str


def decide(
    weight: int, step: int, threshold: int, requests: int, errors: int, measured: bool = True
) -> Decision:
    """The next state of a pending canary whose new function has ``weight`` percent, and got
    ``requests`` requests of which ``errors`` failed since the last step."""
    rate: float | None = None
    if weight > 0:
        if not measured:
            return Decision("pending", weight, None, "requests are not counted (--no-metrics)")
        if requests == 0:
            return Decision("pending", weight, None, "no request reached the new function: waiting")
        rate = 100.0 * errors / requests
        if rate > threshold:
            message = (
                f"{rate:.1f}% of the new function's {requests} requests failed"
                f" (threshold {threshold}%): rolled back"
            )
            return Decision("failed", 0, rate, message)
    weight = min(100, weight + step)
    if weight == 100:
        return Decision("succeeded", 100, rate, "the new function serves every request")
    return Decision("pending", weight, rate, "")


def weights_for(trigger: HTTPTriggerSpec, spec: CanarySpec, weight: int) -> dict[str, int]:
    """The route's weights with the new function at ``weight`` percent, the old one at the
    rest; other functions of the route keep theirs."""
    weights = dict(trigger.function_weights) or {trigger.function: 100}
    weights[spec.newfunction] = weight
    weights[spec.oldfunction] = 100 - weight
    return weights


def check(store: Store, spec: CanarySpec) -> CanaryStatus:
    """Refuse a canary that cannot run (a missing route or function, a route that does not
    serve the old function, a route another canary moves); its first status otherwise."""
    for field, function in (("newfunction", spec.newfunction), ("oldfunction", spec.oldfunction)):
        if store.find("functions", function) is None:
            raise not_found("function", function, field)
    record = store.find("httptriggers", spec.httptrigger)
    if record is None:
        raise not_found("HTTP trigger", spec.httptrigger, "httptrigger")
    trigger = HTTPTriggerSpec.model_validate(record.data)
    targets = trigger.function_weights or {trigger.function: 100}
    if spec.oldfunction not in targets:
        raise ApiError(
            422,
            "invalid",
            f"HTTP trigger {spec.httptrigger!r} does not route to {spec.oldfunction!r}",
            [{"path": "oldfunction", "message": "must be a function the route serves"}],
        )
    for other in store.list(KIND):
        busy = other.data.get("status", {}).get("state") == "pending"
        if other.name != spec.name and busy and other.data["httptrigger"] == spec.httptrigger:
            raise conflict(f"canary {other.name!r} already moves HTTP trigger {spec.httptrigger!r}")
    return CanaryStatus(weight=min(100, targets.get(spec.newfunction, 0)))


class Canaries:
    """Runs every pending canary: one task each, sleeping until its next step."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # The new function's counts by status at the canary's last step (in memory: the
        # counters themselves start again with the platform).
        self._baselines: dict[str, dict[int, int]] = {}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for record in self.store.list(KIND):
            self._arm(record.name)
        self.store.subscribe(self._changed)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._tasks.clear()

    def _changed(self, change: Change) -> None:
        if change.record.kind != KIND:
            return
        name = change.record.name
        if change.action == "deleted":
            self._cancel(name)
            return
        status = change.record.data.get("status") or {}
        if status.get("state") == "pending" and status.get("next_step_at") is None:
            # Created, or changed through the API (which starts it over): the controller's
            # own writes always carry the next step's time. Armed once the write returns.
            self._loop.call_soon_threadsafe(self._arm, name)

    def _cancel(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        self._baselines.pop(name, None)

    def _arm(self, name: str) -> None:
        self._cancel(name)
        record = self.store.find(KIND, name)
        if record is None:
            return
        status = CanaryStatus.model_validate(record.data.get("status") or {})
        if status.state != "pending":
            return
        spec = _spec(record.data)
        if status.next_step_at is None:
            # A fresh start: the route gets both functions, and the first step is one
            # interval away.
            if not self._set_weight(spec, status.weight):
                self._finish(name, "aborted", status, f"HTTP trigger {spec.httptrigger!r} is gone")
                return
            status.next_step_at = _now() + timedelta(seconds=spec.increment_interval)
            status.message = ""
            self._save(name, status)
        self._baselines[name] = dict(self.metrics.function(spec.newfunction).requests)
        self._tasks[name] = self._loop.create_task(self._run(name), name=f"canary {name}")

    async def _run(self, name: str) -> None:
        while True:
            record = self.store.find(KIND, name)
            if record is None:
                return
            status = CanaryStatus.model_validate(record.data.get("status") or {})
            if status.state != "pending" or status.next_step_at is None:
                return
            await asyncio.sleep(max(0.0, (status.next_step_at - _now()).total_seconds()))
            try:
                self._step(name)
            except Exception:
                # A store that failed this once (disk full...): the next interval tries again.
                logger.exception("canary %s: step failed", name)
                await asyncio.sleep(_spec(record.data).increment_interval)

    def _step(self, name: str) -> None:
        record = self.store.find(KIND, name)
        if record is None:
            return
        spec = _spec(record.data)
        status = CanaryStatus.model_validate(record.data.get("status") or {})
        counts = dict(self.metrics.function(spec.newfunction).requests)
        before = self._baselines.get(name, {})
        self._baselines[name] = counts
        requests = sum(counts.values()) - sum(before.values())
        errors = server_errors(counts) - server_errors(before)
        decision = decide(
            status.weight,
            spec.increment_step,
            spec.failure_threshold,
            requests,
            errors,
            measured=self.metrics.enabled,
        )
        if not self._set_weight(spec, decision.weight):
            self._finish(name, "aborted", status, f"HTTP trigger {spec.httptrigger!r} is gone")
            return
        status.weight = decision.weight
        status.requests = requests
        status.message = decision.message
        if decision.error_rate is not None or requests:
            status.error_rate = decision.error_rate
        if decision.state != "pending":
            self._finish(name, decision.state, status, decision.message)
            return
        status.next_step_at = _now() + timedelta(seconds=spec.increment_interval)
        self._save(name, status)
        logger.info("canary %s: %s at %d%%", name, spec.newfunction, decision.weight)

    def _set_weight(self, spec: CanarySpec, weight: int) -> bool:
        """Give the route's new function ``weight`` percent; False when the route is gone."""
        record = self.store.find("httptriggers", spec.httptrigger)
        if record is None:
            return False
        trigger = HTTPTriggerSpec.model_validate(record.data)
        weights = weights_for(trigger, spec, weight)
        if weights == trigger.function_weights:
            return True
        data: dict[str, Any] = {**record.data, "function_weights": weights}
        try:
            self.store.update("httptriggers", spec.httptrigger, data)
        except NotFound:
            return False
        return True

    def _finish(self, name: str, state: CanaryState, status: CanaryStatus, message: str) -> None:
        status.state = state
        status.message = message
        status.next_step_at = None
        self._save(name, status)
        self._tasks.pop(name, None)
        self._baselines.pop(name, None)
        log = logger.warning if state != "succeeded" else logger.info
        log("canary %s %s: %s", name, state, message)

    def _save(self, name: str, status: CanaryStatus) -> None:
        record = self.store.find(KIND, name)
        if record is None:
            return
        data = {**record.data, "status": status.model_dump(mode="json")}
        self.store.update(KIND, name, data)


def _spec(data: dict[str, Any]) -> CanarySpec:
    return CanarySpec.model_validate({k: v for k, v in data.items() if k != "status"})


def _now() -> datetime:
    return datetime.now(UTC)
