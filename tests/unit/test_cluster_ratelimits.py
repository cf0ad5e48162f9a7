"""Rate limits shared between a cluster's routers (``fissile/cluster/ratelimits.py``): a
bucket's debit and how deep it goes, the counts a node publishes and what it does with its
peers' — on a fake clock and a fake publisher."""

from __future__ import annotations

import gc
import json

import pytest

from fissile.cluster import ratelimits
from fissile.cluster.ratelimits import INTERVAL, SharedBucket, SharedLimits, subject
from fissile.models import HTTPTriggerSpec
from fissile.router.auth import KeyRing
from fissile.router.guard import guard_of
from fissile.router.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Published:
    """A fake publisher: the messages, decoded."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, body: bytes) -> None:
        self.bodies.append(body)

    def taken(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for body in self.bodies:
            counts.update(json.loads(body)["taken"])
        return counts


def test_a_debit_takes_tokens_after_the_refill_and_stops_at_the_floor() -> None:
    clock = Clock()
    bucket = TokenBucket(2.0, burst=4, clock=clock)
    bucket.debit(3, floor=-4)
    assert bucket.take() == 0.0  # 1 left
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 1.0  # refilled to 2 first, then 1 taken elsewhere
    bucket.debit(1, floor=-4)
    assert bucket.take() == 0.0
    assert bucket.take() > 0
    # Below zero, down to the floor: the next request waits for the debt and one token.
    bucket.debit(100, floor=-4)
    assert bucket.take() == pytest.approx((1 + 4) / 2.0)
    # Already at the floor: a further debit changes nothing, and neither raises it.
    bucket.debit(5, floor=-2)
    assert bucket.take() == pytest.approx(2.5)
    clock.now += 2.5
    assert bucket.take() == 0.0


def test_a_floor_above_zero_is_zero() -> None:
    bucket = TokenBucket(1.0, burst=2, clock=Clock())
    bucket.debit(10, floor=5)
    assert bucket.take() == pytest.approx(1.0)


def test_a_shared_bucket_counts_what_it_gave_and_collect_starts_again() -> None:
    clock = Clock()
    limits = SharedLimits("n1", clock=clock)
    bucket = limits.bucket("route/a", 1.0, 3)
    assert isinstance(bucket, SharedBucket)
    assert [bucket.take() == 0.0 for _ in range(5)] == [True, True, True, False, False]
    assert limits.collect() == {"route/a@1.0/3": 3}  # refusals cost nothing
    assert limits.collect() == {}
    assert bucket.level() == pytest.approx(0.0)


def test_a_shared_bucket_answers_as_a_local_one() -> None:
    clocks = Clock(), Clock()
    local, shared = TokenBucket(3.0, 4, clocks[0]), SharedBucket(3.0, 4, clocks[1])
    answers: list[tuple[float, float]] = []
    for step in (0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.5, 0.01, 0.0, 2.0, 0.0):
        for clock in clocks:
            clock.now += step
        answers.append((local.take(), shared.take()))
    assert [a for a, _ in answers] == pytest.approx([b for _, b in answers])
    assert shared.taken == sum(1 for a, _ in answers if a == 0.0)


def test_a_limit_keeps_its_bucket_while_its_rate_and_burst_stay() -> None:
    limits = SharedLimits("n1", clock=Clock())
    bucket = limits.bucket("route/a", 5.0, 5)
    assert limits.bucket("route/a", 5.0, 5) is bucket
    assert limits.bucket("route/a", 5.0, 6) is not bucket  # a changed limit starts fresh
    assert limits.bucket("route/a", 4.0, 5) is not bucket
    assert limits.bucket("apikey/a", 5.0, 5) is not bucket
    # A bucket nothing uses goes, and its key with it.
    del bucket
    gc.collect()
    assert limits.bucket("route/a", 5.0, 5).level() == 5.0


async def test_counts_are_batched_per_interval_and_split_past_max_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = SharedLimits("n1", clock=Clock())
    published = Published()
    assert await limits.flush(published) == 0  # nothing taken: no message
    a = limits.bucket("route/a", 10.0, 10)
    b = limits.bucket("apikey/k", 10.0, 10)
    for _ in range(4):
        a.take()
    b.take()
    assert await limits.flush(published) == 1
    message = json.loads(published.bodies[0])
    assert message == {
        "node": limits.sender,
        "taken": {"route/a@10.0/10": 4, "apikey/k@10.0/10": 1},
    }
    assert await limits.flush(published) == 0

    monkeypatch.setattr(ratelimits, "MAX_KEYS", 2)
    buckets = [limits.bucket(f"route/r{i}", 10.0, 10) for i in range(5)]
    for bucket in buckets:
        bucket.take()
    published = Published()
    assert await limits.flush(published) == 3
    assert published.taken() == {f"route/r{i}@10.0/10": 1 for i in range(5)}


async def test_a_peers_counts_are_debited_from_the_same_limit_here() -> None:
    clock = Clock()
    here = SharedLimits("n1", clock=clock)
    peer = SharedLimits("n2", clock=clock)
    mine = here.bucket("route/a", 1.0, 5)
    theirs = peer.bucket("route/a", 1.0, 5)
    other = here.bucket("route/b", 1.0, 5)
    for _ in range(3):
        assert theirs.take() == 0.0
    published = Published()
    await peer.flush(published)
    here.receive(published.bodies[0])
    assert mine.level() == pytest.approx(2.0)
    assert other.level() == 5.0  # another limit
    assert [mine.take() == 0.0 for _ in range(3)] == [True, True, False]
    # This node's own counts, a limit this node lacks and garbage change nothing.
    await here.flush(published)
    here.receive(published.bodies[-1])
    here.receive(json.dumps({"node": "n3/x", "taken": {"route/zz@1.0/5": 9}}).encode())
    for junk in (b"", b"[]", b'{"node": 1}', b'{"node": "n3/x", "taken": {"route/b@1.0/5": -4}}'):
        here.receive(junk)
    assert other.level() == 5.0
    clock.now += 1.0
    assert mine.level() == pytest.approx(1.0)


async def test_buckets_go_below_zero_by_a_burst_and_an_interval_per_peer_heard() -> None:
    clock = Clock()
    here = SharedLimits("n1", clock=clock)
    bucket = here.bucket("route/a", 5.0, 5)
    bound = 5 + 5.0 * INTERVAL

    def spent(sender: str, count: int) -> bytes:
        return json.dumps({"node": sender, "taken": {"route/a@5.0/5": count}}).encode()

    here.receive(spent("n2/a", 100))
    assert bucket.level() == pytest.approx(-bound)
    assert bucket.take() == pytest.approx((1 + bound) / 5.0)
    here.receive(spent("n3/a", 100))  # two peers heard: twice as deep
    assert bucket.level() == pytest.approx(-2 * bound)
    clock.now += ratelimits.PEER_TTL + 1  # both forgotten, then one heard again
    here.receive(spent("n2/a", 1000))
    assert bucket.level() == pytest.approx(-bound)


def test_routes_and_keys_take_their_buckets_from_the_routers_factory() -> None:
    limits = SharedLimits("n1", clock=Clock())
    keys = KeyRing()
    keys.buckets = limits.bucket
    keys.load(
        [{"name": "k", "hash": "h", "functions": [], "rate": "2/s", "burst": 4}],
    )
    key = keys._by_hash["h"]
    assert isinstance(key.bucket, SharedBucket)
    spec = HTTPTriggerSpec(name="r", function="f", url="/r", rate="5/s", burst=5)
    guard = guard_of(spec, keys, keys.buckets)
    assert guard is not None and isinstance(guard.bucket, SharedBucket)
    assert guard_of(spec, keys, keys.buckets).bucket is guard.bucket  # type: ignore[union-attr]
    # One node: plain buckets, as before.
    local = guard_of(spec, KeyRing())
    assert local is not None and type(local.bucket) is TokenBucket


def test_the_subject_is_apart_from_the_clusters_topics() -> None:
    assert subject("fissile.0123abcd4567") == "_fissile.0123abcd4567.ratelimits"
