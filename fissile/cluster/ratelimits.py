"""Rate limits across a cluster: every router keeps its own buckets and pays for the requests
the other routers let through (``docs/cluster.md``).

A request still costs one local ``take()``: no round trip. Every ``INTERVAL`` each node
publishes, over NATS core pub/sub on its cluster's subject, how many tokens each of its buckets
gave since its last message, and every node debits its own bucket of the same limit by what a
peer reports. A bucket's key names the limit and its rate and burst, so a changed limit starts
fresh on every node. A lost message (NATS core never redelivers) only loosens the limit for
that interval; while NATS is away the buckets count alone, as on separate nodes, and share
again once the connection is back.

The bound: over any span of ``t`` seconds the cluster lets through at most
``burst + rate * t`` plus what the peers let through that this node has not heard of yet —
one interval's worth per node (``rate * INTERVAL`` when requests arrive steadily; a full bucket
per node when every node gets a burst at the same moment, which the debits then pay back).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from fissile.router.ratelimit import TokenBucket
from fissile.triggers.mq.base import redact

log = logging.getLogger("fissile.cluster")

#: Seconds between two messages of a node (none when nothing was taken). The overshoot grows
#: with it (a peer's requests are unknown here for up to an interval) and the traffic shrinks
#: with it: 0.1 s keeps the overshoot to a tenth of a second's rate per node, at ten small
#: messages a second per node while its limited routes are called, far above the event loop's
#: own jitter under load (a few ms to tens of ms), which a shorter interval would just measure.
INTERVAL = 0.1
#: A peer not heard of for this long no longer counts towards how deep a bucket may go.
PEER_TTL = 5.0
#: Buckets per message: a message stays far below NATS' 1 MB default payload limit.
MAX_KEYS = 1000
#: Seconds between two tries to connect while NATS cannot be reached.
RECONNECT = 1.0

Publish = Callable[[bytes], Awaitable[None]]


def subject(namespace: str) -> str:
    """The subject of a cluster's counts, from its MQ namespace (``fissile.<hash>``,
    ``triggers/mq/clustered.py``): apart from its topics, which a stream may cover."""
    return f"_{namespace}.ratelimits"


class SharedBucket(TokenBucket):
    """A bucket that also counts the tokens it gave, for the next message."""

    __slots__ = ("__weakref__", "taken")

    def __init__(
        self, rate: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(rate, burst, clock)
        self.taken = 0

    def take(self) -> float:
        # TokenBucket.take with a count: inlined, as calling it cost 0.15 us a request.
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            self.taken += 1
            return 0.0
        self._tokens = tokens
        return (1.0 - tokens) / self.rate

    def level(self) -> float:
        """The tokens now (negative: a debt), without taking any."""
        return min(self.burst, self._tokens + (self._clock() - self._stamp) * self.rate)


class SharedLimits:
    """This node's shared buckets, by key: what it tells its peers and what it hears."""

    def __init__(self, node: str, clock: Callable[[], float] = time.monotonic) -> None:
        # A node that restarts under its name is a new sender (its old counts are no debt).
        self.sender = f"{node}/{secrets.token_hex(4)}"
        self._clock = clock
        # Weak: a bucket goes with the last route or key using it, and its key with it.
        self._buckets: weakref.WeakValueDictionary[str, SharedBucket] = (
            weakref.WeakValueDictionary()
        )
        self._peers: dict[str, float] = {}  # sender: when last heard (clock)

    def bucket(self, key: str, rate: float, burst: int | None) -> TokenBucket:
        """The bucket of limit ``key`` at this rate and burst (``ratelimit.Buckets``): the one
        this node already has (a route updated without changing its rate keeps its tokens),
        or a new, full one."""
        name = f"{key}@{rate!r}/{burst}"
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = SharedBucket(rate, burst, self._clock)
        return bucket

    def collect(self) -> dict[str, int]:
        """The tokens each bucket gave since the last call; the counts start again."""
        counts: dict[str, int] = {}
        for name, bucket in list(self._buckets.items()):
            if bucket.taken:
                counts[name] = bucket.taken
                bucket.taken = 0
        return counts

    def messages(self, counts: dict[str, int]) -> list[bytes]:
        names = list(counts)
        return [
            json.dumps(
                {"node": self.sender, "taken": {n: counts[n] for n in names[i : i + MAX_KEYS]}},
                separators=(",", ":"),
            ).encode()
            for i in range(0, len(names), MAX_KEYS)
        ]

    async def flush(self, publish: Publish) -> int:
        """Publish what was taken since the last flush; how many messages it took."""
        counts = self.collect()
        if not counts:
            return 0
        messages = self.messages(counts)
        for body in messages:
            await publish(body)
        return len(messages)

    def receive(self, body: bytes) -> None:
        """Debit this node's buckets by what a peer's buckets of the same limits gave."""
        try:
            message: Any = json.loads(body)
            sender = message["node"]
            taken = message["taken"]
        except (ValueError, TypeError, KeyError):
            log.debug("rate limits: a message that is not fissile's counts ignored")
            return
        if not isinstance(sender, str) or not isinstance(taken, dict) or sender == self.sender:
            return
        now = self._clock()
        self._peers[sender] = now
        peers = self.peers(now)
        for name, count in taken.items():
            bucket = self._buckets.get(name)
            if bucket is None or not isinstance(count, int) or count <= 0:
                continue
            # Deep enough for every peer to spend a full bucket and an interval's refill
            # before it hears of the others (all idle, then a burst everywhere at once): that
            # debt is paid back in full, so over time the cluster keeps the rate. No deeper:
            # a node never waits longer than the cluster could have overspent.
            bucket.debit(count, -peers * (bucket.burst + bucket.rate * INTERVAL))

    def peers(self, now: float) -> int:
        """The peers heard of within ``PEER_TTL`` (at least 1: a message just came)."""
        for sender, heard in list(self._peers.items()):
            if now - heard > PEER_TTL:
                del self._peers[sender]
        return max(1, len(self._peers))


class RateSharing:
    """This node's link to the others' counts: a NATS connection publishing its counts every
    ``INTERVAL`` and debiting what the peers publish. Never fails a request: without NATS the
    buckets count alone (said once) until it is back."""

    def __init__(self, url: str, subject: str, node: str) -> None:
        self.url = url
        self.subject = subject
        self.limits = SharedLimits(node)
        self._nc: Any = None  # nats.aio.client.Client
        self._task: asyncio.Task[None] | None = None
        self._alone = False  # said that the buckets count alone
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True  # closing the connection is no outage to report
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._nc is not None:
            nc, self._nc = self._nc, None
            try:
                await asyncio.wait_for(nc.close(), 2.0)
            except Exception as exc:  # closing a connection that is gone
                log.debug("rate limits: closing NATS: %s", exc)

    @property
    def connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    async def _run(self) -> None:
        while self._nc is None:
            try:
                self._nc = await self._connect()
            except Exception as exc:  # unreachable, refused, timed out
                self._lost(str(exc) or type(exc).__name__)
                await asyncio.sleep(RECONNECT)
        self._back()
        while True:
            await asyncio.sleep(INTERVAL)
            if self.connected:
                try:
                    await self.limits.flush(self._publish)
                except Exception as exc:  # the connection dropped meanwhile
                    log.debug("rate limits: cannot publish counts: %s", exc)
            else:
                self.limits.collect()  # taken alone: no debt for the peers once back

    async def _connect(self) -> Any:
        import nats

        async def disconnected() -> None:
            self._lost("disconnected")

        async def reconnected() -> None:
            self._back()

        async def error(exc: Exception) -> None:
            log.debug("rate limits: NATS: %s", exc)

        nc = await nats.connect(
            self.url,
            connect_timeout=5,
            # The first connect fails fast (the loop above tries again); once connected, the
            # client reconnects on its own and subscribes again.
            allow_reconnect=False,
            max_reconnect_attempts=1,
            no_echo=True,  # this node's own counts are no debt
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
        )
        nc.options.update(allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        await nc.subscribe(self.subject, cb=self._received)
        await nc.flush(timeout=5)  # subscribed at the server before the first count goes out
        return nc

    async def _publish(self, body: bytes) -> None:
        await self._nc.publish(self.subject, body)

    async def _received(self, msg: Any) -> None:
        self.limits.receive(msg.data)

    def _lost(self, why: str) -> None:
        if not self._alone and not self._stopping:
            self._alone = True
            log.warning(
                "rate limits: NATS at %s unreachable (%s): each node counts its own requests"
                " until it is back (a cluster of N lets up to N times a limit through)",
                redact(self.url),
                why,
            )

    def _back(self) -> None:
        if self._alone:
            self._alone = False
            log.warning("rate limits: NATS is back: the nodes share their counts again")
