"""Pools: per environment, a zygote and warm unspecialized instances; per function, the
specialized instances that serve it, and the requests waiting for one."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from fissile.executor.autoscaler import STABLE_WINDOW, Autoscaler, Decision, target_for
from fissile.executor.errors import CrashLoop, ExecutorError, LoadFailed, NoCapacity, Overloaded
from fissile.executor.instance import DRAINING, READY, Instance, State
from fissile.executor.loading import load
from fissile.executor.zygote import Zygote
from fissile.models import EnvironmentSpec, FunctionSpec, FunctionStatus
from fissile.observability.metrics import crash_reason

if TYPE_CHECKING:
    from fissile.executor.executor import Executor

logger = logging.getLogger("fissile.executor")

# A function's queue, unless its spec sets ``queue_limit``: this many requests per request it
# can serve at once at its max scale, at most MAX_QUEUE. Deep enough to ride out a burst, short
# enough that a request at its end is likely served within a typical queue timeout; past it,
# a request is refused at once (429) rather than held in the supervisor's memory.
QUEUE_FACTOR = 10
MAX_QUEUE = 1000
REFILL_DELAY = 0.02  # seconds after a warm instance is taken; a cold start takes a few ms
CRASH_LOOP = 3  # failures in a row before starts are spaced out
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
# An instance that loaded and then died serving is replaced at once, without back-off: the
# request killed it, not the function's start, and the next caller's request may be good. This
# many such deaths within STORM_WINDOW seconds is a crash storm, said (once a window) in the
# function's log and counted in its metrics; callers are still served.
STORM = 10
STORM_WINDOW = 60.0
# In-flight requests per instance when a function does not say: one for a sync function (its
# instance runs one call at a time), this many for an ``async def`` one (they interleave).
ASYNC_CONCURRENCY = 100
CLAIM_RETRY = 0.5  # cluster mode: seconds before a start refused at max_scale is tried again


class Waiter(Protocol):
    """A place in a function's queue: what of ``asyncio.Future[Instance]`` the pool uses (the
    router's hot path queues a lighter object of its own, ``router.proxy._Queued``)."""

    def done(self) -> bool: ...

    def cancelled(self) -> bool: ...

    def exception(self) -> BaseException | None: ...

    def result(self) -> Instance: ...

    def set_result(self, instance: Instance, /) -> None: ...

    def set_exception(self, exc: BaseException, /) -> None: ...


class EnvironmentPool:
    def __init__(self, spec: EnvironmentSpec, executor: Executor) -> None:
        self.spec = spec
        self.executor = executor
        self.zygote: Zygote | None = None
        self.warm: deque[Instance] = deque()
        self._refill: asyncio.Task[None] | None = None
        self._stopped = False
        # One zygote start at a time: a request arriving while the first start is still
        # importing must wait for it, not start a second zygote.
        self._starting = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.spec.name

    async def start(self) -> None:
        async with self._starting:
            if self.zygote is not None and self.zygote.alive:
                return
            await self._start_zygote()

    async def _start_zygote(self) -> None:
        zygote = Zygote(
            self.name,
            self.spec.preload,
            self.executor.instance_forked,
            self.executor.instance_exited,
        )
        zygote.on_death = self._zygote_died
        await zygote.start()
        if self._stopped:
            # Stopped (its environment deleted, the platform stopping) while this zygote
            # started: ``stop`` saw none to stop, so it goes now, never serving.
            await zygote.stop()
            self.executor.zygote_lost(self.name, zygote, reaped=True)
            return
        self.zygote = zygote
        self.refill()

    def _zygote_died(self, zygote: Zygote) -> None:
        self.executor.zygote_lost(self.name, zygote)
        if not self._stopped and zygote is self.zygote:
            self.zygote = None
            self.executor.spawn(self._restart())

    async def _restart(self) -> None:
        delay = 0.1
        while not self._stopped and self.zygote is None:
            try:
                await self.start()
                return
            except Exception as exc:
                logger.error("environment %s: zygote restart failed: %s", self.name, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def take(self) -> Instance:
        """A warm instance for a function to specialize; forks one if the pool is empty."""
        while self.warm:
            instance = self.warm.popleft()
            if instance.alive:
                self.refill_later()
                return instance
        instance = await self.fork()
        self.refill_later()
        return instance

    def refill_later(self) -> None:
        """Refill once the cold start that took a warm instance has answered: forking, the new
        child's sandbox set-up and its cgroup's creation on this event loop competed with it for
        the CPUs and the loop (about 2 ms of the cold start's p50 on 2 cores)."""
        asyncio.get_running_loop().call_later(REFILL_DELAY, self.refill)

    async def fork(self) -> Instance:
        if self.zygote is None or not self.zygote.alive:
            if self._stopped:
                raise ExecutorError(f"environment {self.name} is stopping")
            await self._restart()
            if self.zygote is None:  # stopped while it restarted
                raise ExecutorError(f"environment {self.name} is stopping")
        return await self.executor.fork(self.zygote, self.name)

    def refill(self) -> None:
        if self._refill is None or self._refill.done():
            self._refill = self.executor.spawn(self._fill())

    async def _fill(self) -> None:
        while not self._stopped and len(self.warm) < self.spec.poolsize:
            try:
                instance = await self.fork()
            except Exception as exc:
                logger.warning("environment %s: cannot fill the warm pool: %s", self.name, exc)
                return
            await instance.prime()
            if instance.alive:
                self.warm.append(instance)

    def discard(self, instance: Instance) -> None:
        try:
            self.warm.remove(instance)
        except ValueError:
            pass

    async def update(self, spec: EnvironmentSpec) -> bool:
        """Apply a changed spec; True when the zygote had to restart (its instances died)."""
        restart = (spec.image, spec.preload) != (self.spec.image, self.spec.preload)
        self.spec = spec
        if restart:
            await self.stop()
            self._stopped = False
            await self.start()
            return True
        while len(self.warm) > spec.poolsize:
            self.executor.retire(self.warm.pop())
        self.refill()
        return False

    async def stop(self) -> None:
        self._stopped = True
        if self._refill is not None:
            self._refill.cancel()
        for instance in self.warm:
            self.executor.retire(instance)
        self.warm.clear()
        if self.zygote is not None:
            zygote, self.zygote = self.zygote, None
            await zygote.stop()
            self.executor.zygote_lost(self.name, zygote, reaped=True)


class FunctionPool:
    # Read per request on the router's hot path, copied from the spec when it is set: an
    # attribute of a pydantic model goes through its class's ``__getattr__`` hook (~80 ns
    # against ~37 for a plain attribute, timeit), and the hot path read four per request.
    name: str
    timeout: float  # the function's timeout, seconds
    queue_timeout: float  # how long a request may wait for an instance; its timeout after

    def __init__(self, spec: FunctionSpec, executor: Executor) -> None:
        self.spec = spec
        self.executor = executor
        self.metrics = executor.metrics.function(spec.name)  # the router counts into it
        self.generation = 1
        # The build its current revision serves (store/revisions.py); None: its package's
        # current build (a function without revisions, or whose package had none yet).
        self.deploy: str | None = None
        self.instances: list[Instance] = []
        self.draining: set[Instance] = set()
        self.starting = 0
        # Of ``starting``, those whose cluster claim is not answered yet: the node's heartbeat
        # leaves them out, or its row would hold more than the claims granted (a refused claim
        # then shows the cluster above max_scale until the next heartbeat).
        self.claiming = 0
        self.waiters: deque[Waiter] = deque()
        # The timer of the queued requests' queue timeout, kept by the router's hot path
        # (router.proxy._QueueClock): one per function rather than one per queued request.
        self.queue_clock: Any = None
        self.restarts = 0
        # Crash-loop back-off: consecutive failed starts and unexpected deaths, reset by a
        # successful answer. From CRASH_LOOP failures on, no instance starts before retry_at.
        self.failures = 0
        self.retry_at = 0.0
        self.last_exit_reason: str | None = None
        self.last_crash_at: datetime | None = None
        # The last STORM deaths of instances while they served (``time.monotonic()``).
        self.serving_deaths: deque[float] = deque(maxlen=STORM)
        self.storm_at = -math.inf
        self.deleted = False
        self.is_async: bool | None = None  # learnt at the first specialization
        self.contract: str | None = None  # likewise: the one ``auto`` chose
        self.limit = self._limit()
        self.queue_limit = self._queue_limit()
        self.inflight = 0  # over all instances
        self.scaler = Autoscaler(time.monotonic(), target_for(self.limit), self._stable_window())
        self.decision: Decision | None = None
        # Overload, counted apart from crashes: none of these is the function's fault.
        self.rejected = 0  # 429: the queue was full
        self.queue_timeouts = 0  # 503: waited longer than the queue timeout
        self.timeouts = 0  # 504: overran the timeout; only its instance was killed
        self._scaled_from: int | None = None
        # Cluster mode: no start is tried before this (time.monotonic()) after one was refused.
        self.refused_until = 0.0

    @property
    def spec(self) -> FunctionSpec:
        return self._spec

    @spec.setter
    def spec(self, spec: FunctionSpec) -> None:
        self._spec = spec
        self.name = spec.name
        self.timeout = spec.timeout
        self.queue_timeout = spec.queue_timeout or spec.timeout

    def _limit(self) -> int:
        if self.spec.concurrency is not None:
            return self.spec.concurrency
        return ASYNC_CONCURRENCY if self.is_async else 1

    def _queue_limit(self) -> int:
        if self.spec.queue_limit is not None:
            return self.spec.queue_limit
        return min(QUEUE_FACTOR * self.spec.max_scale * self.limit, MAX_QUEUE)

    def queue_full(self) -> bool:
        return len(self.waiters) >= self.queue_limit

    def _stable_window(self) -> float:
        # A function that asks to be reaped sooner than the stable window gets a shorter one.
        return max(min(STABLE_WINDOW, self.spec.idle_timeout), 0.001)

    def _set_limit(self) -> None:
        self.limit = self._limit()
        self.queue_limit = self._queue_limit()
        self.scaler.target = target_for(self.limit)
        self.scaler.stable_window = self._stable_window()

    def _observe(self) -> None:
        self.scaler.observe(time.monotonic(), self.inflight + len(self.waiters))

    # -- the hot path -------------------------------------------------------------------

    def pick(self) -> Instance | None:
        """The least-loaded ready instance with room for one more request."""
        best: Instance | None = None
        limit = self.limit
        for instance in self.instances:
            if instance.inflight < limit and (best is None or instance.inflight < best.inflight):
                best = instance
                if instance.inflight == 0:
                    break
        return best

    def take_ready(self) -> Instance | None:
        """An instance with room, without waiting (the hot path's first try: no coroutine)."""
        instance = self.pick()
        if instance is not None:
            self.take(instance)
        return instance

    def take(self, instance: Instance) -> None:
        """Count one more request on ``instance``, which ``pick`` chose. (The router's hot
        path, ``proxy.forward_soon``, does the same inline: keep them in step.)"""
        instance.inflight += 1
        instance.served = True
        self.inflight += 1
        self._observe()

    def enqueue(self) -> asyncio.Future[Instance]:
        """Wait in the function's queue for an instance with room (scaling up for it); the
        future's instance is already counted as taken. Raises when the function is
        crash-looping or its queue is full."""
        waiter: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self.enqueue_waiter(waiter)
        return waiter

    def enqueue_waiter(self, waiter: Waiter) -> None:
        """``enqueue`` with a waiter of the caller's: ``waiter.set_result`` gets the instance
        (already counted as taken) straight from ``wake``; ``set_exception`` the refusal of
        every waiter when the function cannot start or was deleted."""
        wait = self.backing_off()
        if wait and not self.starting:
            self.metrics.refused("crash_loop")
            raise CrashLoop(
                f"function {self.name} is crash-looping ({self.failures} failures in a row,"
                f" last: {self.last_exit_reason or 'failed to start'}); next start in {wait:.1f}s",
                retry_after=wait,
            )
        if len(self.waiters) >= self.queue_limit:
            self.rejected += 1
            self.metrics.refused("overloaded")
            # The demand is past what the queue holds: every instance the function may have.
            self.scale_up(self.spec.max_scale)
            raise Overloaded(
                f"function {self.name} is at capacity (its queue of {self.queue_limit} is full);"
                " retry later"
            )
        self.waiters.append(waiter)
        self._observe()
        self.scale_up()

    def abandon(self, waiter: Waiter) -> None:
        """The caller of ``enqueue`` gave up (timeout, cancel): leave the queue, or give back
        the instance it was handed meanwhile."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self.release(waiter.result())
            return
        try:
            self.waiters.remove(waiter)
        except ValueError:
            pass
        self._observe()

    def release(self, instance: Instance) -> None:
        instance.inflight -= 1
        self.inflight -= 1
        instance.last_used = now = time.monotonic()
        if instance.state is DRAINING:
            if instance.inflight == 0:
                self.draining.discard(instance)
                if instance.exit_reason is None:  # not already killed for misbehaving
                    self.executor.retire(instance)
        elif instance.state is READY and self.waiters:
            self.wake()  # (a call per request fewer when none wait)
        # ``now`` again rather than a second clock read: ``wake`` hands instances over
        # without waiting.
        self.scaler.observe(now, self.inflight + len(self.waiters))

    def wake(self) -> None:
        while self.waiters:
            instance = self.pick()
            if instance is None:
                return
            waiter = self.waiters.popleft()
            if waiter.done():
                continue
            instance.inflight += 1
            instance.served = True
            self.inflight += 1
            waiter.set_result(instance)

    # -- scaling ------------------------------------------------------------------------

    def scale_up(self, wanted: int = 0) -> None:
        """Start instances for the queue (or ``wanted`` of them) at once; the autoscaler's
        windows decide later how many to keep."""
        if len(self.instances) + self.starting >= self.spec.max_scale:
            # Nothing to start: the common case under load, where every queued request calls
            # this (the arithmetic below was ~2 % of the router's CPU under wrk, py-spy).
            return
        if self.refused_until and time.monotonic() < self.refused_until:
            return  # cluster mode: at max_scale across the cluster a moment ago
        wanted = max(wanted, math.ceil(len(self.waiters) / self.limit))
        started = 0
        while self.starting < wanted and len(self.instances) + self.starting < self.spec.max_scale:
            self.starting += 1
            started += 1
            self.executor.spawn(self._start())
        if started:
            total = len(self.instances) + self.starting
            if total > self.scaler.desired:
                if self._scaled_from is None:
                    # One log line per burst of queueing, not one per queued request.
                    self._scaled_from = self.scaler.desired
                    asyncio.get_running_loop().call_soon(self._log_scale_up)
                self.scaler.desired = total

    def _log_scale_up(self) -> None:
        old, self._scaled_from = self._scaled_from, None
        if old is not None:
            self._log_decision(
                old, self.scaler.desired, f"{len(self.waiters)} queued, starting instances"
            )

    async def _start(self, bound: int | None = None) -> None:
        """Start one instance (``starting`` counts it already). In cluster mode, only within
        ``bound`` instances across the cluster (default: ``max_scale``)."""
        generation = self.generation
        instance: Instance | None = None
        try:
            if self.executor.claim is not None and not await self._claimed(bound):
                return
            if self.deploy is not None:
                deploy_dir = self.executor.deploy_path(self.deploy)
            else:
                deploy_dir = await self.executor.deploy_dir(self.spec.package)
            source = await self.executor.instance_source(self.spec.env, deploy_dir)
            instance = await source.take()
            await self._specialize(instance, deploy_dir)
        except Exception as exc:
            if instance is not None:
                self.executor.retire(instance)
            self.metrics.crashed("load_failed" if isinstance(exc, LoadFailed) else "start_failed")
            self._failed()
            self._fail_waiters(exc)
            return
        finally:
            self.starting -= 1
        if generation != self.generation or self.deleted:
            self.executor.retire(instance)
            self.scale_up()
            return
        instance.ready_at = time.monotonic()
        self.instances.append(instance)
        self.wake()

    async def _claimed(self, bound: int | None) -> bool:
        claim = self.executor.claim
        assert claim is not None
        limit = self.spec.max_scale if bound is None else bound
        self.claiming += 1
        try:
            granted = await claim(self.name, len(self.instances) + self.starting, limit)
        except Exception as exc:
            # The database is away: serving beats holding the bound (docs/cluster.md).
            logger.warning("cannot claim an instance of %s in the cluster: %s", self.name, exc)
            return True
        finally:
            self.claiming -= 1
        if granted:
            self.refused_until = 0.0
            return True
        self.refused_until = time.monotonic() + CLAIM_RETRY
        if not self.waiters:
            return False
        if self.instances or self.starting > 1:
            # An instance here will serve the queue; more may start once a slot is freed.
            asyncio.get_running_loop().call_later(CLAIM_RETRY * 1.1, self.scale_up)
            return False
        # The cluster holds max_scale instances elsewhere and none will start here: the
        # requests queued in the moment before this node learnt it fail now rather than wait
        # for a slot (new ones are forwarded to the peers holding instances, cluster/peers.py).
        error = NoCapacity(
            f"function {self.name!r} runs its max_scale of {limit} instances on other nodes"
            " of the cluster; retry"
        )
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        self._observe()
        return False

    async def _specialize(self, instance: Instance, deploy_dir: str) -> None:
        instance.state = State.specializing
        instance.function = self.name
        instance.generation = self.generation
        body = await load(self.executor, instance, self.spec, deploy_dir)
        if self.is_async is None:
            self.is_async, self.contract = _loaded(body)
            if self.spec.concurrency is None and self.is_async:
                self._set_limit()
        instance.state = State.ready
        instance.loaded = True
        instance.last_used = time.monotonic()
        self.executor.logs.platform(self.name, f"instance {instance.id} ready (pid {instance.pid})")

    def _fail_waiters(self, exc: Exception) -> None:
        error = exc if isinstance(exc, ExecutorError) else ExecutorError(str(exc))
        logger.warning("function %s: %s", self.name, error)
        self.executor.logs.platform(self.name, f"cannot start an instance: {error}", "ERROR")
        if self.instances:
            return  # ready instances will serve the waiters
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        self._observe()

    def _failed(self) -> None:
        self.failures += 1
        if self.failures >= CRASH_LOOP:
            delay = min(BACKOFF_BASE * 2 ** (self.failures - CRASH_LOOP), BACKOFF_MAX)
            self.retry_at = time.monotonic() + delay
            self.executor.logs.platform(
                self.name,
                f"crash loop: {self.failures} failures in a row; next start in {delay:.1f}s",
                "ERROR",
            )

    def _died_serving(self, instance: Instance) -> None:
        """Not a crash loop: the next request gets a new instance at once (a warm one from the
        pool, ready in milliseconds). Only demand starts them, so a storm of deaths costs one
        start per request that kills one; it is said in the log, not turned into refusals."""
        now = time.monotonic()
        deaths = self.serving_deaths
        deaths.append(now)
        stormy = len(deaths) == STORM and now - deaths[0] <= STORM_WINDOW
        if stormy and now - self.storm_at >= STORM_WINDOW:
            self.storm_at = now
            self.metrics.crash_storms += 1
            self.executor.logs.platform(
                self.name,
                f"crash storm: {STORM} instances died while serving within"
                f" {now - deaths[0]:.1f}s (last: {instance.exit_reason}); each is replaced"
                " at once and other requests are still served: look for the requests"
                " that kill them",
                "ERROR",
            )

    def expired(self, waiter: Waiter) -> None:
        """A request waited its whole queue timeout: it leaves the queue (503), no instance is
        touched."""
        self.abandon(waiter)
        self.queue_timeouts += 1
        self.metrics.refused("queue_timeout")

    def overran(self, instance: Instance, timeout: float) -> None:
        """A request ran past its timeout: kill the instance that ran it (the only way to stop
        the call), without counting it as a crash: slow code, or a burst of slow calls, is not
        a crash loop."""
        reason = f"timeout after {timeout:g}s"
        self.timeouts += 1
        self.metrics.timeouts += 1
        self.last_exit_reason = reason
        self.executor.logs.platform(
            self.name,
            f"instance {instance.id} killed: {reason} (not counted as a crash)",
            "WARNING",
        )
        self.executor.kill(instance, reason, crash=False)

    def succeeded(self) -> None:
        """A request was answered without a server error: the function is healthy."""
        self.failures = 0

    def backing_off(self) -> float:
        """Seconds until the next instance may start (0 when not in back-off)."""
        if self.failures < CRASH_LOOP:
            return 0.0
        return max(0.0, self.retry_at - time.monotonic())

    def keep_warm(self) -> None:
        if not self.spec.min_scale or self.backing_off():
            return
        minimum = self._minimum()
        while len(self.instances) + self.starting < minimum:
            self.starting += 1
            self.executor.spawn(self._start(self.spec.min_scale))

    def _minimum(self) -> int:
        """The instances kept warm here: ``min_scale``, or in cluster mode this node's share
        of it (cluster/placement.py ``warm_share``)."""
        share = self.executor.warm_share
        if share is None or not self.spec.min_scale:
            return self.spec.min_scale
        return share(self.name, self.spec.min_scale, self.spec.memory)

    def autoscale(self, now: float) -> Decision | None:
        """One tick of the autoscaler: start instances up to the desired count, or stop idle
        ones above it (least recently used first)."""
        previous = self.scaler.desired
        if not (previous or self.instances or self.starting or self.scaler.demand):
            self.scaler.rest(now)  # scaled to zero and idle: nothing to decide (cheap for 1,000)
            return None
        minimum = self._minimum()
        decision = self.scaler.decide(
            now,
            len(self.instances),
            minimum,
            self.spec.max_scale,
            self.spec.idle_timeout,
        )
        self.decision = decision
        if decision.desired != previous:
            self._log_decision(
                previous,
                decision.desired,
                f"{decision.reason}; average in flight {decision.stable_average:.2f}"
                f" (stable), {decision.panic_average:.2f} (panic)",
            )
        current = len(self.instances) + self.starting
        # Only a healthy function is scaled up ahead of requests: one whose last start failed
        # is retried when a request asks for it (with the crash-loop back-off), not by ticks.
        if decision.desired > current and not self.failures:
            # Wanting no more than the minimum, the instances count against min_scale across
            # a cluster (``_start``), not against max_scale on every node.
            bound = self.spec.min_scale if decision.desired <= minimum else None
            while len(self.instances) + self.starting < decision.desired:
                self.starting += 1
                self.executor.spawn(self._start(bound))
        surplus = len(self.instances) - decision.desired
        if surplus > 0:
            idle = sorted((i for i in self.instances if i.inflight == 0), key=lambda i: i.last_used)
            for instance in idle[:surplus]:
                self.instances.remove(instance)
                self.executor.logs.platform(
                    self.name, f"instance {instance.id} stopped: scaled down"
                )
                self.executor.retire(instance)
        return decision

    def _log_decision(self, old: int, new: int, why: str) -> None:
        message = f"autoscaler: {old} -> {new} instances ({why})"
        logger.info("function %s: %s", self.name, message)
        self.executor.logs.platform(self.name, message)

    # -- change -------------------------------------------------------------------------

    def update(self, spec: FunctionSpec, deploy: str | None = None) -> None:
        """Serve ``spec`` on the build ``deploy`` (None: the package's current one)."""
        roll = spec.code_fields() != self.spec.code_fields()
        if deploy != self.deploy:
            # Pinning the build already served (its package's current one) changes nothing.
            served = self.deploy or self.executor.package_deploy(self.spec.package)
            roll = roll or served is None or deploy != served
        self.spec = spec
        self.deploy = deploy
        self._set_limit()
        if roll:
            self.roll("function updated")
        else:
            self.wake()
            self.scale_up()

    def roll(self, why: str) -> None:
        """New requests get new instances; in-flight ones finish on the old ones."""
        self.generation += 1
        self.is_async = None  # new code may be async where the old was not: learnt again
        self.contract = None
        self._set_limit()
        old, self.instances = self.instances, []
        for instance in old:
            instance.state = State.draining
            if instance.inflight == 0:
                self.executor.retire(instance)
            else:
                self.draining.add(instance)
        self.executor.logs.platform(self.name, f"rolling instances: {why}")
        self.scale_up()

    def lost(self, instance: Instance, expected: bool) -> None:
        """An instance of this function exited."""
        serving = instance in self.instances or instance in self.draining
        if instance in self.instances:
            self.instances.remove(instance)
        self.draining.discard(instance)
        if not expected:
            # One that died while loading is counted once, by the failed start (_start).
            if serving and instance.served:
                self._died_serving(instance)
            elif serving:
                # Loaded, then died before it was given a request: it cannot stay up, which
                # is a failed start as much as dying while loading.
                self._failed()
            self.restarts += 1
            if instance.loaded:
                self.metrics.crashed(crash_reason(instance.exit_reason))
            self.last_exit_reason = instance.exit_reason
            self.last_crash_at = datetime.now(UTC)
            self.executor.logs.platform(
                self.name, f"instance {instance.id} died: {instance.exit_reason}", "ERROR"
            )
            if self.executor.events is not None:
                self.executor.events.publish(
                    "instance.crashed",
                    {
                        "function": self.name,
                        "instance": instance.id,
                        "pid": instance.pid,
                        "reason": instance.exit_reason,
                        "restarts": self.restarts,
                    },
                )
        self.scale_up()

    def close(self) -> None:
        """The function was deleted: in-flight requests finish, then its instances stop."""
        self.deleted = True
        self.generation += 1
        for instance in self.instances:
            instance.state = State.draining
            if instance.inflight == 0:
                self.executor.retire(instance)
            else:
                self.draining.add(instance)
        self.instances.clear()
        error = ExecutorError(f"function {self.name} was deleted")
        error.status = 404
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def status(self) -> FunctionStatus:
        return FunctionStatus(
            contract=self.contract,
            instances=len(self.instances),
            desired=self.scaler.desired,
            panic=self.scaler.panic_since is not None,
            queued=len(self.waiters),
            inflight=self.inflight,
            concurrency=self.limit,
            pids=[i.pid for i in self.instances],
            busy=sum(1 for i in self.instances if i.inflight),
            starting=self.starting,
            restarts=self.restarts,
            last_exit_reason=self.last_exit_reason,
            last_crash_at=self.last_crash_at,
            failures_in_a_row=self.failures,
            backoff=round(self.backing_off(), 3),
            queue_limit=self.queue_limit,
            rejected=self.rejected,
            queue_timeouts=self.queue_timeouts,
            timeouts=self.timeouts,
        )


def _loaded(body: bytes) -> tuple[bool, str | None]:
    """Whether the loaded function is async, and its contract, from the instance's answer."""
    import json

    try:
        answer = json.loads(body)
        contract = answer.get("contract")
        return bool(answer.get("async")), contract if isinstance(contract, str) else None
    except (ValueError, AttributeError):
        return False, None
