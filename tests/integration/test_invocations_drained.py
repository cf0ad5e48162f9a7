"""A drained node of a cluster takes no new async work (``Invocations.paused``): it claims
nothing and leaves what it accepts to the other nodes. On a real PostgreSQL (a fresh schema)
and the harness's executor, shared by both services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from intkit import Harness, until
from pgkit import fresh_schema

from fissile.invocations import Invocations, Status
from fissile.invocations.pgstore import PostgresInvocationStore

WORK = """
def main(request):
    return "done"
"""


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


async def test_a_drained_node_claims_nothing_and_holds_nothing_it_accepts(
    harness: Harness, pg_url: str
) -> None:
    harness.function("work", WORK)
    drained = Invocations(PostgresInvocationStore(pg_url, "drained"), harness.executor)
    draining = {"now": True}
    drained.paused = lambda: draining["now"]
    await drained.start()
    try:
        accepted = [drained.submit("work", "POST", "/", [], b"").id for _ in range(3)]
        assert {drained.get(i).node for i in accepted} == {None}  # type: ignore[union-attr]
        # Nobody else is up: they wait, free, while the node stays drained (watched over
        # three claim intervals: nothing is to happen).
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            states = {drained.get(i).status for i in accepted}  # type: ignore[union-attr]
            assert states == {Status.queued}
            await asyncio.sleep(0.1)
        other = Invocations(PostgresInvocationStore(pg_url, "other"), harness.executor)
        await other.start()
        try:

            def done() -> bool:
                return all(other.get(i).final for i in accepted)  # type: ignore[union-attr]

            await until(done, timeout=30)
            assert {other.get(i).node for i in accepted} == {"other"}  # type: ignore[union-attr]
        finally:
            await other.stop(grace=0.5)
            other.store.close()
        # Resumed: it claims and runs again.
        draining["now"] = False
        again = drained.submit("work", "POST", "/", [], b"")
        await until(lambda: (drained.get(again.id) or again).final, timeout=30)
        found = drained.get(again.id)
        assert found is not None and found.status is Status.succeeded and found.node == "drained"
    finally:
        await drained.stop(grace=0.5)
        drained.store.close()
