"""Asynchronous invocations: accept (durably), run through the executor with the function's
own concurrency and timeout, retry, record, and tell whoever waits.

Queued ids live in memory per function (the database is the truth, memory the index): a
starting platform rebuilds the index from the database, and an invocation that was running when
the platform died runs again (at-least-once).

In a cluster (a store with ``shared``: ``pgstore.py``) the database is also where nodes meet:
each node claims what nobody holds for a lease it renews, runs it as above, and gives it back
when it stops; what a dead node held is claimed by another once its lease runs out. Watchers
of an invocation another node runs learn its changes by polling the record, and so does the
node running an attempt that another node's API cancelled: it stops the attempt.

A full disk loses nothing that was accepted: an attempt that cannot record its start waits and
starts again later, and an outcome that cannot be recorded is kept in memory and written by a
recovery task that retries with back-off until the disk has space again (no restart needed).
"""

from __future__ import annotations

import asyncio
import builtins
import heapq
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fissile.events import EventBus
from fissile.executor import Executor
from fissile.executor.connection import InstanceResponse
from fissile.executor.errors import BUSY
from fissile.executor.instance import Instance
from fissile.invocations.callbacks import CallbackSender
from fissile.invocations.errors import InvocationError
from fissile.invocations.records import CLOSING, Invocation, Response, Status
from fissile.invocations.store import InvocationStore
from fissile.observability import tracing
from fissile.observability.tally import Tally
from fissile.router.invoke import TRACEPARENT, invoke
from fissile.store.space import StorageFull

if TYPE_CHECKING:
    from fissile.invocations.pgstore import PostgresInvocationStore

logger = logging.getLogger("fissile.invocations")

DEFAULT_RETENTION = 24 * 3600.0
# Back-off between attempts: 0.5 s doubling, at most a minute.
RETRY_BASE = 0.5
RETRY_MAX = 60.0
# How long to wait before trying again when the function had no room (429, or 503 after its
# queue timeout): not an attempt.
OVERLOAD_PAUSE = 0.2
# At most this many invocations run at once across all functions.
MAX_RUNNING = 256
# While the disk is full: the first pause before writing again, doubling up to the last.
FULL_PAUSE = 0.5
FULL_PAUSE_MAX = 5.0
# In a cluster: how often a node looks for work nobody holds, renews what it holds, and reads
# the records of invocations watched here but run elsewhere.
CLAIM_INTERVAL = 0.5
WATCH_INTERVAL = 0.2


def new_id() -> str:
    """128 random bits: an id is the capability to read the result on the public data plane."""
    return secrets.token_hex(16)


class Invocations:
    def __init__(
        self,
        store: InvocationStore | PostgresInvocationStore,
        executor: Executor,
        events: EventBus | None = None,
        retention: float = DEFAULT_RETENTION,
        callbacks: CallbackSender | None = None,
        max_running: int = MAX_RUNNING,
    ) -> None:
        self.store = store
        self.executor = executor
        self.events = events
        self.retention = retention
        self.callbacks = callbacks or CallbackSender()
        self.max_running = max_running
        self._queues: dict[str, deque[str]] = {}
        self._delayed: list[tuple[float, str, str]] = []
        self._running: dict[str, _Attempt] = {}
        self._per_function: dict[str, int] = {}
        self._watchers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._accepting = False
        self._closing = False
        # Writes that found the disk full, by invocation (a newer write replaces an older
        # one), and what to do once each is recorded.
        self._unsaved: dict[str, _Unsaved] = {}
        self._full = False
        self._full_pause = FULL_PAUSE
        self._recovery: asyncio.Task[None] | None = None
        # (function, outcome) -> attempts that ran (read by the metrics exposition)
        self.attempts = Tally()
        self._shared: PostgresInvocationStore | None = (
            store if getattr(store, "shared", False) else None  # type: ignore[assignment]
        )
        self._seen: dict[str, tuple[str, int]] = {}  # watched here: the last state told
        self._claim_now = asyncio.Event()  # an attempt ended: claim more at once
        # In a cluster: whether this node takes no new work (drained): it then claims nothing
        # and leaves what it accepts to the others.
        self.paused: Callable[[], bool] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        now = time.time()
        resumed = 0
        if self._shared is not None:
            # What this node held before a restart: claimed again below like anything free,
            # by this node or another.
            self._shared.release()
        for invocation in self.store.unfinished():
            if invocation.status is Status.running:
                # Cut off mid-run by a dead platform: that attempt had no outcome and does not
                # count; the invocation runs again.
                invocation.status = Status.queued
                invocation.attempts = max(0, invocation.attempts - 1)
                invocation.next_attempt_at = now
                invocation.error = "interrupted by a platform restart; run again"
                self._save(
                    invocation,
                    _both(self.store.started, self.store.requeued),
                    self._queued_again,
                )
            else:
                self._enqueue(invocation.id, invocation.function, invocation.next_attempt_at)
            resumed += 1
        if resumed:
            logger.info("resuming %d unfinished asynchronous invocations", resumed)
        for invocation in self.store.pending_callbacks():
            self._spawn(self._call_back(invocation))
        self._accepting = True
        self._loops = [
            asyncio.create_task(self._dispatch_forever()),
            asyncio.create_task(self._expire_forever()),
        ]
        if self._shared is not None:
            self._loops.append(asyncio.create_task(self._share_forever(self._shared)))

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking and starting work; give running attempts ``grace`` seconds, then cut
        them off (they stay ``running`` in the database and run again at the next start)."""
        self._accepting = False
        self.close_watchers()
        for task in self._loops:
            task.cancel()
        if self._recovery is not None:
            self._recovery.cancel()
        if self._unsaved:
            logger.warning(
                "%d invocation updates could not be recorded (disk full); they run again at"
                " the next start",
                len(self._unsaved),
            )
        running = [attempt.task for attempt in self._running.values()]
        if running:
            await asyncio.wait(running, timeout=grace)
        for attempt in list(self._running.values()):
            # Left as running in the database: the next start runs them again.
            attempt.cancelled = True
            attempt.task.cancel()
        if self._running:
            await asyncio.wait([a.task for a in self._running.values()], timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        await self.callbacks.close()
        if self._shared is not None:
            # Given back at once rather than at the lease's end: others run them now.
            try:
                self._shared.release()
            except StorageFull:
                logger.warning(
                    "could not give back this node's invocations: they wait for the lease"
                )

    # -- the front door -----------------------------------------------------------------

    def submit(
        self,
        function: str,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        callback_url: str | None = None,
    ) -> Invocation:
        """Record one invocation durably and queue it; raises InvocationError (404 unknown
        function, 503 platform stopping)."""
        if not self._accepting:
            raise InvocationError(503, "stopping", "the platform is stopping; try again")
        try:
            pool = self.executor.function(function)
        except Exception:
            raise InvocationError(
                404, "function_not_found", f"function {function!r} not found"
            ) from None
        now = time.time()
        start = time.time_ns()
        # Accepting is the invocation's first span (a new trace's root without a traceparent);
        # every attempt's parent is that span, so all attempts share its trace.
        accepted = tracing.hop(_traceparent(headers))
        headers = [(k, v) for k, v in headers if k.lower() != TRACEPARENT]
        headers.append((TRACEPARENT, accepted.traceparent))
        invocation = Invocation(
            id=new_id(),
            function=function,
            status=Status.queued,
            method=method,
            target=target,
            headers=headers,
            max_attempts=1 + pool.spec.async_retries,
            created_at=now,
            next_attempt_at=now,
            callback_url=callback_url,
            callback_state="pending" if callback_url else None,
        )
        if self._shared is None:
            self.store.add(invocation, body)
            self._enqueue(invocation.id, function, now)
        elif self._room(function) > 0 and not (self.paused is not None and self.paused()):
            self._shared.add(invocation, body)
            self._enqueue(invocation.id, function, now)
        else:
            # No room here now: left to whichever node has room first (this one included).
            self._shared.add(invocation, body, hold=False)
        accepted.record(
            f"accept {function}",
            start,
            {"fissile.function": function, "fissile.invocation": invocation.id},
            kind="producer",
        )
        return invocation

    def get(self, invocation_id: str) -> Invocation | None:
        return self.store.get(invocation_id)

    def list(
        self, status: str | None = None, function: str | None = None, limit: int = 100
    ) -> builtins.list[Invocation]:
        return self.store.list(status, function, limit)

    async def cancel(self, invocation_id: str) -> Invocation:
        invocation = self.store.get(invocation_id)
        if invocation is None:
            raise InvocationError(
                404, "invocation_not_found", f"invocation {invocation_id!r} not found"
            )
        if invocation.final:
            raise InvocationError(
                409,
                "already_finished",
                f"invocation {invocation_id} already finished ({invocation.status})",
            )
        attempt = self._running.get(invocation_id)
        if attempt is not None:
            self._stop(attempt, "cancelled")
            invocation = attempt.invocation
        # In a cluster, another node may be running it: recorded cancelled, the running node
        # sees it within CLAIM_INTERVAL and stops its attempt (``_stop_cancelled``).
        invocation.status = Status.cancelled
        invocation.error = "cancelled"
        self._finish(invocation)
        return invocation

    def _stop(self, attempt: _Attempt, why: str) -> None:
        """End a running attempt whose invocation is cancelled; its outcome is not recorded."""
        attempt.cancelled = True
        invocation = attempt.invocation
        instance = attempt.instance
        if instance is not None and instance.inflight <= 1:
            # The function would go on running in its instance: end it. An instance serving
            # other requests too (concurrency > 1) is left to finish them; only this
            # invocation's connection is dropped.
            self.executor.kill(instance, "invocation cancelled", crash=False)
            self.executor.logs.platform(
                invocation.function,
                f"invocation {invocation.id} {why}: its instance {instance.id} stopped",
                "WARNING",
                invocation.id,
            )
        attempt.task.cancel()

    # -- watching -----------------------------------------------------------------------

    def watch(self, invocation_id: str) -> asyncio.Queue[dict[str, Any]]:
        """A queue of the invocation's documents from now on, ending with the final one, or
        with CLOSING when the platform stops first."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        if self._closing:
            queue.put_nowait(CLOSING)
        self._watchers.setdefault(invocation_id, set()).add(queue)
        return queue

    def close_watchers(self) -> None:
        """End every open stream and websocket: a stopping platform must not wait for
        watchers of invocations that may run for a long time yet."""
        self._closing = True
        for watchers in self._watchers.values():
            for queue in watchers:
                queue.put_nowait(CLOSING)

    def unwatch(self, invocation_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        watchers = self._watchers.get(invocation_id)
        if watchers is not None:
            watchers.discard(queue)
            if not watchers:
                del self._watchers[invocation_id]
                self._seen.pop(invocation_id, None)

    def _notify(self, invocation: Invocation) -> None:
        watchers = self._watchers.get(invocation.id)
        if watchers:
            if self._shared is not None:
                self._seen[invocation.id] = (str(invocation.status), invocation.attempts)
            document = invocation.to_json()
            for queue in watchers:
                queue.put_nowait(document)

    # -- a cluster ----------------------------------------------------------------------

    async def _share_forever(self, shared: PostgresInvocationStore) -> None:
        renewed = claimed = 0.0
        while True:
            now = time.monotonic()
            try:
                if now - renewed >= shared.lease / 4:
                    shared.renew()
                    renewed = now
                if now - claimed >= CLAIM_INTERVAL or self._claim_now.is_set():
                    self._claim_now.clear()
                    claimed = now
                    if self._running:
                        self._stop_cancelled(shared)
                    self._claim(shared)
                if self._watchers:
                    self._poll_watched(shared)
            except StorageFull as exc:
                logger.warning("%s", exc)
            except Exception:
                logger.exception("sharing invocations with the cluster failed")
            pause = WATCH_INTERVAL if self._watchers else CLAIM_INTERVAL / 2
            try:
                await asyncio.wait_for(self._claim_now.wait(), pause)
            except TimeoutError:
                pass

    def _claim(self, shared: PostgresInvocationStore) -> None:
        """Claim free invocations of the functions this node has room for, as many as the
        room; the rest stay free for nodes with room. A drained node claims nothing."""
        if self.paused is not None and self.paused():
            return
        held = sum(len(q) for q in self._queues.values()) + len(self._delayed)
        room = self.max_running - len(self._running) - held
        if room <= 0:
            return
        for function, count in shared.free().items():
            take = min(room, count, self._room(function))
            if take <= 0:
                continue
            for invocation in shared.claim(take, function):
                self._adopt(invocation)
            room -= take
            if room <= 0:
                return

    def _stop_cancelled(self, shared: PostgresInvocationStore) -> None:
        """Stop the attempts running here whose invocation another node's API cancelled (the
        record says so: that node wrote it). Polled with the claims, one query while attempts
        run, rather than pushed: nothing is lost while a node or the database is away, and the
        cancelling node needs neither to know nor to reach the running one."""
        for invocation_id in shared.cancelled(list(self._running)):
            attempt = self._running.get(invocation_id)
            if attempt is not None and not attempt.cancelled:
                logger.info("invocation %s cancelled through another node: stopped", invocation_id)
                self._stop(attempt, "cancelled through another node")

    def _room(self, function: str) -> int:
        """Attempts of ``function`` this node could start now beyond those it holds."""
        if function not in self.executor.functions:
            return 0  # not known here (yet): a node that knows it runs it
        held = len(self._queues.get(function, ())) + self._per_function.get(function, 0)
        return self._limit(function) - held

    def _adopt(self, invocation: Invocation) -> None:
        if invocation.id in self._running:
            return
        if invocation.status is Status.running:
            # Its node died (or stopped) mid-run: that attempt had no outcome and does not
            # count; it runs again here.
            invocation.status = Status.queued
            invocation.attempts = max(0, invocation.attempts - 1)
            invocation.next_attempt_at = time.time()
            invocation.error = f"interrupted: node {invocation.node} went away; run again"
            self._save(
                invocation, _both(self.store.started, self.store.requeued), self._queued_again
            )
        else:
            self._enqueue(invocation.id, invocation.function, invocation.next_attempt_at)

    def _poll_watched(self, shared: PostgresInvocationStore) -> None:
        ids = [i for i in self._watchers if i not in self._running]
        if not ids:
            return
        for invocation_id, state in shared.states(ids).items():
            if self._seen.get(invocation_id) == state:
                continue
            invocation = shared.get(invocation_id)
            if invocation is None:
                continue
            self._notify(invocation)
            if invocation.final:
                self._watchers.pop(invocation_id, None)
                self._seen.pop(invocation_id, None)

    # -- dispatching --------------------------------------------------------------------

    def _enqueue(self, invocation_id: str, function: str, at: float) -> None:
        if at > time.time():
            heapq.heappush(self._delayed, (at, invocation_id, function))
        else:
            self._queues.setdefault(function, deque()).append(invocation_id)
        self._wakeup.set()

    def _limit(self, function: str) -> int:
        """Attempts of one function in flight at once: what its instances can take, so the
        async backlog never overflows the function's wait queue."""
        pool = self.executor.functions.get(function)
        if pool is None:
            return 1
        return pool.spec.max_scale * pool.limit

    async def _dispatch_forever(self) -> None:
        while True:
            self._wakeup.clear()
            now = time.time()
            while self._delayed and self._delayed[0][0] <= now:
                _, invocation_id, function = heapq.heappop(self._delayed)
                self._queues.setdefault(function, deque()).append(invocation_id)
            for function, queue in list(self._queues.items()):
                limit = self._limit(function)
                while queue and len(self._running) < self.max_running:
                    if self._per_function.get(function, 0) >= limit:
                        break
                    self._start(queue.popleft(), function)
                if not queue:
                    del self._queues[function]
            timeout = None
            if self._delayed:
                timeout = max(0.0, self._delayed[0][0] - time.time())
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass

    def _start(self, invocation_id: str, function: str) -> None:
        invocation = self.store.get(invocation_id)
        if invocation is None or invocation.status is not Status.queued:
            return  # cancelled or expired meanwhile
        self._per_function[function] = self._per_function.get(function, 0) + 1
        attempt = _Attempt(invocation)
        self._running[invocation_id] = attempt
        attempt.task = asyncio.create_task(self._run(attempt))
        attempt.task.add_done_callback(lambda _: self._ended(invocation_id, function))

    def _ended(self, invocation_id: str, function: str) -> None:
        if self._shared is not None:
            self._claim_now.set()
        self._running.pop(invocation_id, None)
        left = self._per_function.get(function, 1) - 1
        if left > 0:
            self._per_function[function] = left
        else:
            self._per_function.pop(function, None)
        self._wakeup.set()

    async def _run(self, attempt: _Attempt) -> None:
        invocation = attempt.invocation
        invocation.status = Status.running
        invocation.attempts += 1
        invocation.started_at = time.time()
        try:
            self.store.started(invocation)
        except StorageFull:
            # Not started as far as the record goes: try again once there may be space.
            invocation.status = Status.queued
            invocation.attempts -= 1
            self._disk_full()
            self._enqueue(invocation.id, invocation.function, time.time() + self._full_pause)
            return
        self._disk_has_space()
        self._notify(invocation)
        body = self.store.request_body(invocation.id)
        try:
            result = await invoke(
                self.executor,
                invocation.function,
                method=invocation.method,
                path=invocation.target,
                # Marked, so that contracts with their own event for it (Lambda's) know.
                headers=[*invocation.headers, ("x-fissile-async", "true")],
                body=body,
                invocation_id=invocation.id,
                on_acquire=attempt.acquired,
                hop=tracing.hop(_traceparent(invocation.headers)),
                span=f"attempt {invocation.attempts}",
            )
        except Exception as exc:
            # A fault of the platform, not of the function: record it rather than leave the
            # invocation running forever.
            logger.exception("invocation %s failed inside the platform", invocation.id)
            if not attempt.cancelled:
                self.attempts.add(invocation.function, "failed")
                self._failed(invocation, f"platform error: {type(exc).__name__}: {exc}", False)
            return
        if attempt.cancelled:
            return
        if isinstance(result, InstanceResponse):
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in result.headers]
            response = Response(result.status, headers, result.body)
            invocation.response = response
            self.attempts.add(invocation.function, "succeeded" if result.status < 400 else "failed")
            if result.status < 400:
                invocation.status = Status.succeeded
                invocation.error = None
                return self._finish(invocation)
            if result.status < 500:
                invocation.status = Status.failed
                invocation.error = f"the function answered {result.status}"
                return self._finish(invocation)
            return self._failed(invocation, f"the function answered {result.status}", False)
        if result.code in BUSY or result.code == "crash_loop":
            # No room right now (a full queue, or none within the queue timeout), or starts
            # held back while the function crash-loops (other invocations crashed it): not
            # this invocation's failure, so not an attempt.
            pause = OVERLOAD_PAUSE
            pool = self.executor.functions.get(invocation.function)
            if pool is not None:
                pause = max(pause, pool.backing_off())
            invocation.attempts -= 1
            invocation.status = Status.queued
            invocation.next_attempt_at = time.time() + pause
            self._requeue(invocation)
            return None
        invocation.response = None
        self.attempts.add(invocation.function, "timed_out" if result.status == 504 else "failed")
        if result.status == 404:
            invocation.status = Status.failed
            invocation.error = result.message
            return self._finish(invocation)
        return self._failed(invocation, result.message, result.status == 504)

    def _failed(self, invocation: Invocation, error: str, timed_out: bool) -> None:
        invocation.error = error
        if invocation.attempts < invocation.max_attempts:
            delay = min(RETRY_MAX, RETRY_BASE * 2 ** (invocation.attempts - 1))
            invocation.status = Status.queued
            invocation.next_attempt_at = time.time() + delay
            self._requeue(invocation)
            logger.info(
                "invocation %s of %s failed (%s); attempt %d of %d in %.1fs",
                invocation.id,
                invocation.function,
                error,
                invocation.attempts + 1,
                invocation.max_attempts,
                delay,
            )
            return
        if invocation.max_attempts > 1:
            invocation.status = Status.dead
        else:
            invocation.status = Status.timed_out if timed_out else Status.failed
        self._finish(invocation)

    def _requeue(self, invocation: Invocation) -> None:
        # Queued again in memory only once the record says queued: _start reads the record.
        self._save(invocation, self.store.requeued, self._queued_again)

    def _queued_again(self, invocation: Invocation) -> None:
        self._notify(invocation)
        self._enqueue(invocation.id, invocation.function, invocation.next_attempt_at)

    def _finish(self, invocation: Invocation) -> None:
        invocation.finished_at = time.time()
        self._save(invocation, self.store.finished, self._finished)

    def _finished(self, invocation: Invocation) -> None:
        self._notify(invocation)
        self._watchers.pop(invocation.id, None)
        self._seen.pop(invocation.id, None)
        if self.events is not None:
            self.events.publish(
                "invocation.completed",
                {
                    "id": invocation.id,
                    "function": invocation.function,
                    "status": str(invocation.status),
                    "attempts": invocation.attempts,
                    "response_status": (
                        None if invocation.response is None else invocation.response.status
                    ),
                    "error": invocation.error,
                },
            )
        if invocation.callback_url:
            self._spawn(self._call_back(invocation))

    # -- a full disk ----------------------------------------------------------------------

    def _save(
        self,
        invocation: Invocation,
        write: Callable[[Invocation], None],
        then: Callable[[Invocation], None],
    ) -> None:
        """Record ``invocation`` with ``write``, then do ``then``; on a full disk, both happen
        later, when the recovery task manages to write."""
        self._unsaved.pop(invocation.id, None)  # superseded by this newer state
        try:
            write(invocation)
        except StorageFull:
            self._unsaved[invocation.id] = _Unsaved(invocation, write, then)
            self._disk_full()
            return
        self._disk_has_space()
        then(invocation)

    def _disk_full(self) -> None:
        if not self._full:
            self._full = True
            if self._shared is not None:
                logger.warning("PostgreSQL is away: invocation records wait until it is back")
            else:
                logger.warning(
                    "the disk of %s is full: invocation records wait until it has space",
                    self.store.data_dir,
                )
        self._full_pause = min(FULL_PAUSE_MAX, self._full_pause * 2)
        if self._unsaved and (self._recovery is None or self._recovery.done()):
            self._recovery = asyncio.create_task(self._recover())

    def _disk_has_space(self) -> None:
        self._full_pause = FULL_PAUSE
        if self._full:
            self._full = False
            logger.info("the disk of %s has space again", self.store.data_dir)

    async def _recover(self) -> None:
        """Write what a full disk held back, oldest first, pausing longer while it stays
        full."""
        pause = FULL_PAUSE
        while self._unsaved:
            await asyncio.sleep(pause)
            for invocation_id, unsaved in list(self._unsaved.items()):
                if self._unsaved.get(invocation_id) is not unsaved:
                    continue  # replaced meanwhile
                try:
                    unsaved.write(unsaved.invocation)
                except StorageFull:
                    pause = min(FULL_PAUSE_MAX, pause * 2)
                    break
                except Exception:
                    logger.exception("recording invocation %s failed", invocation_id)
                    del self._unsaved[invocation_id]
                    continue
                del self._unsaved[invocation_id]
                pause = FULL_PAUSE
                self._disk_has_space()
                unsaved.then(unsaved.invocation)

    # -- callbacks and retention --------------------------------------------------------

    async def _call_back(self, invocation: Invocation) -> None:
        await self.callbacks.deliver(
            invocation,
            lambda: self._save(invocation, self.store.callback_progress, _nothing),
        )

    async def _expire_forever(self) -> None:
        interval = max(0.2, min(60.0, self.retention / 2))
        while True:
            await asyncio.sleep(interval)
            try:
                expired = self.store.expire(time.time() - self.retention)
            except StorageFull:
                continue  # the next round tries again
            except Exception:
                logger.exception("expiring invocation records failed")
                continue
            if expired:
                logger.info("expired %d invocation records", expired)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Unsaved:
    __slots__ = ("invocation", "then", "write")

    def __init__(
        self,
        invocation: Invocation,
        write: Callable[[Invocation], None],
        then: Callable[[Invocation], None],
    ) -> None:
        self.invocation = invocation
        self.write = write
        self.then = then


def _both(
    first: Callable[[Invocation], None], second: Callable[[Invocation], None]
) -> Callable[[Invocation], None]:
    def write(invocation: Invocation) -> None:
        first(invocation)
        second(invocation)

    return write


def _traceparent(headers: builtins.list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() == TRACEPARENT:
            return value
    return None


def _nothing(invocation: Invocation) -> None:
    pass


class _Attempt:
    __slots__ = ("cancelled", "instance", "invocation", "task")

    def __init__(self, invocation: Invocation) -> None:
        self.invocation = invocation
        self.instance: Instance | None = None
        self.cancelled = False
        self.task: asyncio.Task[None] = None  # type: ignore[assignment]

    def acquired(self, instance: Instance) -> None:
        self.instance = instance
