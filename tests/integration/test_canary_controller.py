"""The canary controller on a real store and the router's counters: it moves the route's
weights step by step, rolls back on failures, ends when its route goes, and resumes from the
store after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fissile.controlplane.canaries import Canaries, check
from fissile.models import CanarySpec
from fissile.observability.metrics import Metrics
from fissile.store import Store, StoreUnavailable, open_store

INTERVAL = 0.05


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'fissile.db'}")
    for function in ("old", "new"):
        opened.create("functions", function, {"name": function})
    opened.create("httptriggers", "t", {"name": "t", "function": "old", "url": "/t"})
    yield opened
    opened.close()


def create(store: Store, **fields: Any) -> None:
    spec = CanarySpec.model_validate(
        {
            "name": "c",
            "httptrigger": "t",
            "newfunction": "new",
            "oldfunction": "old",
            "increment_step": 25,
            "increment_interval": INTERVAL,
            **fields,
        }
    )
    data = {**spec.model_dump(mode="json"), "status": check(store, spec).model_dump(mode="json")}
    store.create("canaries", "c", data)


def status(store: Store) -> dict[str, Any]:
    record = store.find("canaries", "c")
    assert record is not None
    found: dict[str, Any] = record.data["status"]
    return found


def weights(store: Store) -> dict[str, int]:
    record = store.find("httptriggers", "t")
    assert record is not None
    found: dict[str, int] = record.data.get("function_weights", {})
    return found


async def until(condition: Callable[[], bool], what: str, serve: Callable[[], None]) -> None:
    """Serve requests (``serve``) until ``condition``; a generous deadline for a loaded box."""
    deadline = asyncio.get_running_loop().time() + 30
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        serve()
        await asyncio.sleep(INTERVAL / 5)


def answering(metrics: Metrics, status: int) -> Callable[[], None]:
    return lambda: metrics.function("new").request(status, 0.001)


async def test_a_healthy_canary_steps_to_100(store: Store) -> None:
    metrics = Metrics()
    canaries = Canaries(store, metrics)
    canaries.start()
    try:
        create(store)
        seen: set[int] = set()

        def done() -> bool:
            seen.add(status(store)["weight"])
            return bool(status(store)["state"] != "pending")

        await until(done, "the canary to finish", answering(metrics, 200))
        assert status(store)["state"] == "succeeded"
        assert weights(store) == {"old": 0, "new": 100}
        assert {25, 50, 75, 100} <= seen
    finally:
        await canaries.stop()


async def test_failures_past_the_threshold_roll_back(store: Store) -> None:
    metrics = Metrics()
    canaries = Canaries(store, metrics)
    canaries.start()
    try:
        create(store, failure_threshold=10)
        await until(lambda: status(store)["weight"] == 25, "the first step", lambda: None)
        await until(
            lambda: status(store)["state"] != "pending", "the rollback", answering(metrics, 503)
        )
        final = status(store)
        assert (final["state"], final["weight"], final["error_rate"]) == ("failed", 0, 100.0)
        assert weights(store) == {"old": 100, "new": 0}
        # Changed through the API (a fresh status): armed again, from the route's weights.
        record = store.find("canaries", "c")
        assert record is not None
        spec = CanarySpec.model_validate({k: v for k, v in record.data.items() if k != "status"})
        again = check(store, spec).model_dump(mode="json")
        store.update("canaries", "c", {**record.data, "status": again})
        await until(
            lambda: status(store)["state"] == "succeeded", "the second run", answering(metrics, 200)
        )
        assert weights(store) == {"old": 0, "new": 100}
    finally:
        await canaries.stop()


async def test_a_deleted_route_aborts_the_canary(store: Store) -> None:
    metrics = Metrics()
    canaries = Canaries(store, metrics)
    canaries.start()
    try:
        create(store)
        await until(lambda: status(store)["weight"] == 25, "the first step", lambda: None)
        store.delete("httptriggers", "t")
        await until(lambda: status(store)["state"] != "pending", "the abort", lambda: None)
        assert status(store)["state"] == "aborted"
        assert "is gone" in status(store)["message"]
    finally:
        await canaries.stop()


async def test_a_restart_resumes_the_schedule(store: Store) -> None:
    first = Canaries(store, Metrics())
    first.start()
    create(store)
    # No request reaches the new function: the first step is taken, then it waits.
    await until(lambda: "waiting" in status(store)["message"], "the wait", lambda: None)
    await first.stop()
    assert (status(store)["state"], status(store)["weight"]) == ("pending", 25)

    metrics = Metrics()  # the counters start again with the platform
    again = Canaries(store, metrics)
    again.start()
    try:
        await until(
            lambda: status(store)["state"] != "pending", "the resumed canary",
            answering(metrics, 200),
        )  # fmt: skip
        assert status(store)["state"] == "succeeded"
    finally:
        await again.stop()


def test_a_canary_must_name_a_route_serving_the_old_function(store: Store) -> None:
    from fissile.controlplane.errors import ApiError

    spec = CanarySpec(name="c", httptrigger="t", newfunction="old", oldfunction="new")
    with pytest.raises(ApiError, match="does not route to 'new'"):
        check(store, spec)
    missing = CanarySpec(name="c", httptrigger="nope", newfunction="new", oldfunction="old")
    with pytest.raises(ApiError, match="not found"):
        check(store, missing)
    create(store)
    second = CanarySpec(name="d", httptrigger="t", newfunction="new", oldfunction="old")
    with pytest.raises(ApiError, match="already moves"):
        check(store, second)


async def test_a_store_failing_when_the_lead_is_taken_only_delays_the_canary(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(store)
    update = store.update
    failures = [StoreUnavailable("the store is away")]

    def failing_once(kind: str, name: str, data: dict[str, Any], **kwargs: Any) -> Any:
        if kind == "canaries" and failures:
            raise failures.pop()
        return update(kind, name, data, **kwargs)

    monkeypatch.setattr(store, "update", failing_once)
    metrics = Metrics()
    canaries = Canaries(store, metrics, leading=False)
    canaries.start()
    try:
        canaries.lead()  # the failure is logged, not raised into the node's leader loop
        assert not failures
        await until(lambda: status(store)["weight"] == 25, "the first step", lambda: None)
    finally:
        await canaries.stop()
