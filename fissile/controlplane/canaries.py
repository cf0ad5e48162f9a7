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

The counts come from a ``Counts``: this router's counters on one node (``LocalCounts``); in a
cluster, every node's, summed by the one node that leads the controller
(``fissile/cluster/canary_leader.py``). Either way the controller keeps the counts it saw at the
last step (a ``Tally``) and ``interval`` says what happened since. Its writes of a canary's
status are compare-and-set on the record's generation, so two controllers that both believed
they led (for the moment a leader takes to see it lost its lock) never both take one step.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from fissile.controlplane.errors import ApiError, conflict, not_found
from fissile.models import CanarySpec, CanaryState, CanaryStatus, HTTPTriggerSpec
from fissile.observability.metrics import Metrics, server_errors
from fissile.store import Change, NotFound, Record, StaleWrite, Store

logger = logging.getLogger("fissile.canary")

KIND = "canaries"
# A write that lost to another (StaleWrite) is looked at again after this long, when the
# store's copy has the winner's write; a start is tried again this many times.
RETRY_DELAY = 0.1
RETRIES = 50


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


@dataclass(frozen=True)
class Count:
    """One source's counters of a function: requests answered, of which 5xx, and since when
    it counts (None: as long as this process has run)."""

    requests: int
    errors: int
    since: datetime | None = None


@dataclass(frozen=True)
class Tally:
    """A function's counters by source (one per node in a cluster, one alone on a single
    node), as read at ``at`` (the database's clock in a cluster; None on a single node)."""

    counts: dict[str, Count]
    at: datetime | None = None


def interval(before: Tally | None, after: Tally) -> tuple[int, int, Tally]:
    """The requests and 5xx answers counted between ``before`` (the last step's tally) and
    ``after``, and the tally to keep for the next step.

    Counters only grow, except when they start again: a node restarted (its counting began
    later: ``since`` changed) or a function's series was forgotten. Whatever a counter that
    started again holds came after ``before``, so it is counted whole; never a negative delta.
    A source ``before`` did not know counts whole if it began counting after ``before`` was
    read, and nothing otherwise (what it held then is not this interval's: it becomes the
    baseline). A source gone from ``after`` (a dead node) adds nothing and keeps its baseline,
    in case it comes back under the same counting."""
    requests = errors = 0
    kept = dict(before.counts) if before is not None else {}
    for source, now in after.counts.items():
        then = before.counts.get(source) if before is not None else None
        if then is not None and then.since == now.since and now.requests >= then.requests:
            requests += now.requests - then.requests
            errors += max(0, now.errors - then.errors)
        elif then is not None or _began_after(now, before):
            requests += now.requests
            errors += now.errors
        kept[source] = now
    return requests, errors, Tally(kept, after.at)


def _began_after(count: Count, before: Tally | None) -> bool:
    if before is None or before.at is None:
        return before is None
    return count.since is not None and count.since >= before.at


class Counts(Protocol):
    """Where the controller reads a function's counts."""

    @property
    def enabled(self) -> bool:
        """Whether requests are counted at all (``--no-metrics``: not)."""
        ...

    def tally(self, function: str) -> Tally: ...


class LocalCounts:
    """This node's router's counters (``observability/metrics.py``): a single node's."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    @property
    def enabled(self) -> bool:
        return self.metrics.enabled

    def tally(self, function: str) -> Tally:
        requests = self.metrics.function(function).requests
        return Tally({"": Count(sum(requests.values()), server_errors(requests))})


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
    """Runs every pending canary: one task each, sleeping until its next step.

    ``leading`` False (a cluster node that does not lead): it follows the store and runs
    nothing until ``lead``."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        counts: Counts | None = None,
        leading: bool = True,
    ) -> None:
        self.store = store
        self.counts: Counts = counts if counts is not None else LocalCounts(metrics)
        self.leading = leading
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # The new function's counts at the canary's last step (in memory: a restart, or
        # another node taking the lead, counts from then on).
        self._baselines: dict[str, Tally] = {}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.subscribe(self._changed)
        if self.leading:
            self._arm_all()

    def lead(self) -> None:
        """Run the pending canaries from now on (this node took the lead)."""
        if not self.leading:
            self.leading = True
            self._arm_all()

    async def follow(self) -> None:
        """Run nothing from now on (another node leads, or may)."""
        self.leading = False
        await self.stop()

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._tasks.clear()
        self._baselines.clear()

    def pending(self) -> set[str]:
        """The new functions of the pending canaries: what must be counted."""
        return {
            record.data["newfunction"]
            for record in self.store.list(KIND)
            if (record.data.get("status") or {}).get("state") == "pending"
        }

    def _arm_all(self) -> None:
        for record in self.store.list(KIND):
            try:
                self._arm(record.name)
            except Exception:
                # The store failed this once (PostgreSQL away...): the others still start,
                # and this one is tried again in a moment.
                logger.exception("canary %s: cannot start it", record.name)
                self._loop.call_later(RETRY_DELAY * 10, self._arm_again, record.name, 0)

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
            self._loop.call_soon_threadsafe(self._arm_if_leading, name)

    def _arm_if_leading(self, name: str) -> None:
        if self.leading:
            self._arm(name)

    def _cancel(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        self._baselines.pop(name, None)

    def _arm(self, name: str, attempt: int = 0) -> None:
        self._cancel(name)
        record = self.store.find(KIND, name)
        if record is None:
            return
        status = CanaryStatus.model_validate(record.data.get("status") or {})
        if status.state != "pending":
            return
        spec = _spec(record.data)
        # The route gets the weight the status says: a fresh start puts both functions on
        # it; a resumed canary (a restart, a new leader) repairs a route whose update a
        # controller stopped before making.
        if not self._set_weight(spec, status.weight):
            self._finish(name, "aborted", status, f"HTTP trigger {spec.httptrigger!r} is gone")
            return
        if status.next_step_at is None:
            # A fresh start: the first step is one interval away.
            status.next_step_at = _now() + timedelta(seconds=spec.increment_interval)
            status.message = ""
            try:
                self._save(record, status)
            except StaleWrite:
                # Written meanwhile (another controller started it, or the API changed it):
                # once this store's copy has the write, it is armed from it.
                if attempt < RETRIES:
                    self._loop.call_later(RETRY_DELAY, self._arm_again, name, attempt + 1)
                else:
                    logger.warning("canary %s: changed under every attempt to start it", name)
                return
        self._baselines[name] = self.counts.tally(spec.newfunction)
        self._tasks[name] = self._loop.create_task(self._run(name), name=f"canary {name}")

    def _arm_again(self, name: str, attempt: int) -> None:
        if self.leading and name not in self._tasks:
            try:
                self._arm(name, attempt)
            except Exception:
                logger.exception("canary %s: cannot start it", name)
                if attempt < RETRIES:
                    self._loop.call_later(RETRY_DELAY * 10, self._arm_again, name, attempt + 1)

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
                if not self._step(name):
                    # Another controller's write, not in this store's copy yet.
                    await asyncio.sleep(RETRY_DELAY)
            except Exception:
                # A store that failed this once (disk full...): the next interval tries again.
                logger.exception("canary %s: step failed", name)
                await asyncio.sleep(_spec(record.data).increment_interval)

    def _step(self, name: str) -> bool:
        """Take the canary's step if it is due; False when another write came first."""
        record = self.store.find(KIND, name)
        if record is None:
            return True
        spec = _spec(record.data)
        status = CanaryStatus.model_validate(record.data.get("status") or {})
        weight = status.weight
        if status.state != "pending" or status.next_step_at is None or status.next_step_at > _now():
            return True  # finished, started over or stepped since this task read it
        tally = self.counts.tally(spec.newfunction)
        requests, errors, self._baselines[name] = interval(self._baselines.get(name), tally)
        decision = decide(
            status.weight,
            spec.increment_step,
            spec.failure_threshold,
            requests,
            errors,
            measured=self.counts.enabled,
        )
        status.weight = decision.weight
        status.requests = requests
        status.message = decision.message
        if decision.error_rate is not None or requests:
            status.error_rate = decision.error_rate
        if decision.state == "pending":
            status.next_step_at = _now() + timedelta(seconds=spec.increment_interval)
        else:
            status.state = decision.state
            status.next_step_at = None
        try:
            # The decision is recorded first, on the generation it was made from: a step
            # another controller took meanwhile makes this one void, not a second step.
            self._save(record, status)
        except StaleWrite:
            logger.info("canary %s: changed meanwhile: this step is not taken", name)
            return False
        if not self._set_weight(spec, decision.weight):
            self._finish(name, "aborted", status, f"HTTP trigger {spec.httptrigger!r} is gone")
            return True
        if decision.state != "pending":
            self._tasks.pop(name, None)
            self._baselines.pop(name, None)
            log = logger.warning if decision.state != "succeeded" else logger.info
            log("canary %s %s: %s", name, decision.state, decision.message)
        elif decision.weight != weight:
            logger.info("canary %s: %s at %d%%", name, spec.newfunction, decision.weight)
        else:
            logger.info(
                "canary %s: %s stays at %d%%: %s", name, spec.newfunction, weight, decision.message
            )
        return True

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
        record = self.store.find(KIND, name)
        if record is not None:
            self._save(record, status)
        self._tasks.pop(name, None)
        self._baselines.pop(name, None)
        log = logger.warning if state != "succeeded" else logger.info
        log("canary %s %s: %s", name, state, message)

    def _save(self, record: Record, status: CanaryStatus) -> None:
        """Write ``status`` over ``record`` if the record is still at its generation
        (``StaleWrite`` otherwise)."""
        data = {**record.data, "status": status.model_dump(mode="json")}
        self.store.update(KIND, record.name, data, generation=record.generation)


def _spec(data: dict[str, Any]) -> CanarySpec:
    return CanarySpec.model_validate({k: v for k, v in data.items() if k != "status"})


def _now() -> datetime:
    return datetime.now(UTC)
