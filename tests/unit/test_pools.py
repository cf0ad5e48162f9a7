"""fissile/executor/pools.py's FunctionPool queue bounds and timeout accounting, on a fake
executor (no processes)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import pytest

from fissile.executor.errors import Overloaded
from fissile.executor.instance import Instance, State
from fissile.executor.pools import CRASH_LOOP, MAX_QUEUE, STORM, STORM_WINDOW, FunctionPool
from fissile.models import FunctionSpec
from fissile.observability.metrics import Metrics


class FakeLogs:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def platform(
        self, function: str, message: str, level: str = "INFO", invocation: str | None = None
    ) -> None:
        self.lines.append(message)


class FakeExecutor:
    """Records what the pool asks for: starts (coroutines, closed unrun) and kills."""

    def __init__(self) -> None:
        self.logs = FakeLogs()
        self.events = None
        self.metrics = Metrics()
        self.started = 0
        self.killed: list[tuple[Instance, str, bool]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        coro.close()
        self.started += 1

    def kill(self, instance: Instance, reason: str, crash: bool = True) -> None:
        self.killed.append((instance, reason, crash))
        if not crash:
            instance.expected_exit = True


def pool_for(**fields: Any) -> tuple[FunctionPool, FakeExecutor]:
    executor = FakeExecutor()
    spec = FunctionSpec(name="fn", env="python", package="pkg", **fields)
    return FunctionPool(spec, executor), executor  # type: ignore[arg-type]


def ready(pool: FunctionPool, n: int) -> list[Instance]:
    instances = []
    for i in range(n):
        instance = Instance(f"i{i}", "python", f"/nonexistent/i{i}.sock", "token")
        instance.state = State.ready
        instance.function = pool.name
        instance.pid = 1000 + i
        instances.append(instance)
    pool.instances.extend(instances)
    return instances


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, 10 * 10 * 1),  # max_scale 10, a sync function: one request per instance
        ({"max_scale": 5}, 50),
        ({"max_scale": 5, "concurrency": 4}, 200),
        ({"max_scale": 1000}, MAX_QUEUE),
        ({"max_scale": 5, "queue_limit": 3}, 3),
        ({"queue_limit": 5000}, 5000),  # an explicit limit may exceed the default cap
    ],
)
def test_queue_limit(fields: dict[str, Any], expected: int) -> None:
    pool, _ = pool_for(**fields)
    assert pool.queue_limit == expected
    assert pool.status().queue_limit == expected


def test_queue_limit_follows_the_concurrency_learnt_and_spec_updates() -> None:
    pool, _ = pool_for(max_scale=2)
    assert pool.queue_limit == 20
    pool.is_async = True  # learnt at the first specialization: 100 in flight per instance
    pool._set_limit()
    assert pool.queue_limit == MAX_QUEUE
    pool.update(FunctionSpec(name="fn", env="python", package="pkg", queue_limit=7))
    assert pool.queue_limit == 7


def test_queue_timeout_defaults_to_the_timeout() -> None:
    assert pool_for(timeout=7)[0].queue_timeout == 7
    assert pool_for(timeout=7, queue_timeout=0.5)[0].queue_timeout == 0.5


async def test_a_full_queue_refuses_and_asks_for_every_instance() -> None:
    pool, executor = pool_for(max_scale=4, queue_limit=2)
    ready(pool, 1)
    assert pool.take_ready() is not None
    waiters = [pool.enqueue(), pool.enqueue()]
    assert pool.queue_full()
    assert executor.started == 2  # one instance per queued request
    with pytest.raises(Overloaded, match=r"at capacity \(its queue of 2 is full\)"):
        pool.enqueue()
    # The refused request was demand too: every instance the function may have is starting.
    assert len(pool.instances) + pool.starting == 4
    assert (pool.rejected, len(pool.waiters)) == (1, 2)
    # The autoscaler saw the queue as demand: in flight plus waiting.
    assert pool.scaler.demand == 3
    for waiter in waiters:
        waiter.cancel()


async def test_an_expired_waiter_leaves_the_queue_and_gives_back_a_late_instance() -> None:
    pool, _ = pool_for(max_scale=1)
    (instance,) = ready(pool, 1)
    assert pool.take_ready() is instance
    late = pool.enqueue()
    gone = pool.enqueue()
    pool.release(instance)  # hands the instance to ``late``
    assert late.done() and late.result() is instance
    pool.expired(late)  # ... which timed out meanwhile: the instance passes on
    assert gone.done() and gone.result() is instance
    assert (pool.queue_timeouts, instance.inflight, pool.inflight) == (1, 1, 1)
    pool.release(instance)
    assert (instance.inflight, pool.inflight, len(pool.waiters)) == (0, 0, 0)


async def test_overrunning_kills_the_instance_without_counting_a_crash() -> None:
    pool, executor = pool_for()
    for _ in range(CRASH_LOOP + 1):
        (instance,) = ready(pool, 1)
        pool.overran(instance, 2.0)
        assert executor.killed[-1] == (instance, "timeout after 2s", False)
        pool.instances.remove(instance)
        pool.lost(instance, instance.expected_exit)
    assert (pool.timeouts, pool.failures, pool.restarts) == (CRASH_LOOP + 1, 0, 0)
    assert pool.backing_off() == 0
    assert pool.status().last_exit_reason == "timeout after 2s"
    # An instance that dies on its own still counts (as a restart; toward the back-off only
    # if it never served: see below).
    (instance,) = ready(pool, 1)
    pool.lost(instance, expected=False)
    assert (pool.failures, pool.restarts) == (1, 1)


def test_an_instance_dying_while_it_loads_is_one_failure_not_two() -> None:
    pool, _ = pool_for()
    loading = Instance("i9", "python", "/nonexistent/i9.sock", "token")
    loading.state = State.specializing
    loading.function = pool.name
    # Not among the pool's instances yet: its failed start (_start) counts it, not its death.
    pool.lost(loading, expected=False)
    assert (pool.failures, pool.restarts) == (0, 1)
    (idle,) = ready(pool, 1)
    pool.lost(idle, expected=False)  # loaded, died before its first request: a failed start
    assert (pool.failures, pool.restarts) == (1, 2)


async def test_instances_dying_while_serving_never_arm_the_crash_loop() -> None:
    pool, executor = pool_for()
    for n in range(1, CRASH_LOOP * 2 + 1):
        (instance,) = ready(pool, 1)
        assert pool.take_ready() is instance
        instance.exit_reason = "killed by signal 11 (SIGSEGV)"
        pool.lost(instance, expected=False)
        assert (pool.failures, pool.restarts, pool.backing_off()) == (0, n, 0)
    # The next request is queued and starts an instance at once: no 503 crash_loop.
    waiter = pool.enqueue()
    assert not waiter.done() and executor.started == 1


def test_a_storm_of_deaths_while_serving_is_logged_and_counted_once_a_window() -> None:
    pool, executor = pool_for()
    metrics = executor.metrics.function("fn")
    for _ in range(STORM * 2):
        (instance,) = ready(pool, 1)
        instance.loaded = True
        instance.exit_reason = "out of memory (limit 64Mi)"
        pool.take_ready()
        pool.lost(instance, expected=False)
    assert metrics.crashes == {"oom": STORM * 2}
    assert metrics.crash_storms == 1
    storms = [line for line in executor.logs.lines if line.startswith("crash storm")]
    assert len(storms) == 1, executor.logs.lines
    assert f"{STORM} instances died while serving" in storms[0]
    assert "out of memory (limit 64Mi)" in storms[0]
    assert (pool.failures, pool.backing_off()) == (0, 0)
    # A new window: the next storm is said again.
    pool.storm_at -= STORM_WINDOW
    (instance,) = ready(pool, 1)
    pool.take_ready()
    pool.lost(instance, expected=False)
    assert metrics.crash_storms == 2


def test_deaths_while_serving_spread_out_are_no_storm() -> None:
    pool, executor = pool_for()
    for _ in range(STORM * 2):
        (instance,) = ready(pool, 1)
        pool.take_ready()
        pool.lost(instance, expected=False)
        pool.serving_deaths[-1] -= STORM_WINDOW  # as if each had died a window ago
    assert executor.metrics.function("fn").crash_storms == 0
