"""fissile/invocations (service, store) and the router's front door in front of a real executor
and real SQLite, driven in-process through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from intkit import Harness, until

from fissile.events import Event, EventBus
from fissile.invocations import Invocations, InvocationStore, Status
from fissile.models import HTTPTriggerSpec
from fissile.router import Router
from fissile.router.front_door import FrontDoor
from fissile.store import StorageFull

WORK = """
import time

def main(request):
    seconds = float(request.query.get("sleep", "0"))
    time.sleep(seconds)
    status = int(request.query.get("status", "200"))
    invocation = request.headers.get("x-fissile-invocation-id")
    return {"body": request.text, "params": request.params, "id": invocation}, status
"""


class Door:
    def __init__(
        self, harness: Harness, service: Invocations, client: httpx.AsyncClient, root: Path
    ) -> None:
        self.harness = harness
        self.service = service
        self.client = client
        self.root = root

    async def submit(self, url: str, body: bytes = b"", **kwargs: Any) -> str:
        response = await self.client.post(url, content=body, **kwargs)
        assert response.status_code == 202, response.text
        document = response.json()
        assert response.headers["location"] == f"/invocations/{document['id']}"
        invocation_id: str = document["id"]
        return invocation_id

    async def final(self, invocation_id: str, timeout: float = 10.0) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            document: dict[str, Any] = (
                await self.client.get(f"/invocations/{invocation_id}")
            ).json()
            return document if document["status"] not in ("queued", "running") else None

        deadline = time.monotonic() + timeout
        while True:
            found = await check()
            if found is not None:
                return found
            assert time.monotonic() < deadline, f"{invocation_id} did not finish"
            await asyncio.sleep(0.02)


def start_service(harness: Harness, root: Path, events: EventBus | None = None) -> Invocations:
    store = InvocationStore(root / "invocations.db", root / "bodies")
    return Invocations(store, harness.executor, events, retention=3600)


@pytest.fixture
async def door(harness: Harness, tmp_path: Path) -> AsyncIterator[Door]:
    harness.function("work", WORK, timeout=2.0)
    service = start_service(harness, tmp_path)
    await service.start()
    router = Router(harness.executor, front_door=FrontDoor(service))
    router.follow(harness.store)
    transport = httpx.ASGITransport(app=router)
    async with httpx.AsyncClient(transport=transport, base_url="http://router.test") as client:
        yield Door(harness, service, client, tmp_path)
    await service.stop(grace=0.5)
    service.store.close()


async def test_accepted_then_succeeded_with_the_result(door: Door) -> None:
    invocation_id = await door.submit("/async-function/work/x?sleep=0.05", b"hello")
    assert len(invocation_id) == 32
    document = await door.final(invocation_id)
    assert document["status"] == "succeeded"
    assert document["attempts"] == 1
    assert document["response"]["status"] == 200
    result = await door.client.get(f"/invocations/{invocation_id}/result")
    assert result.status_code == 200
    assert result.json()["body"] == "hello"
    assert result.json()["id"] == invocation_id  # the function sees the invocation's id
    assert result.headers["x-fissile-invocation-status"] == "succeeded"


async def test_unknown_function_is_404_and_nothing_is_stored(door: Door) -> None:
    response = await door.client.post("/async-function/nope", content=b"x")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "function_not_found"
    assert door.service.list() == []
    missing = await door.client.get("/invocations/0123456789abcdef0123456789abcdef")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "invocation_not_found"


async def test_prefer_respond_async_on_a_route_keeps_path_params(door: Door) -> None:
    spec = HTTPTriggerSpec(name="items", function="work", url="/items/{item}", methods=["PUT"])
    door.harness.store.create("httptriggers", "items", spec.model_dump(mode="json"))
    response = await door.client.put(
        "/items/42", content=b"x", headers={"Prefer": "respond-async, wait=5"}
    )
    assert response.status_code == 202, response.text
    assert response.headers["preference-applied"] == "respond-async"
    document = await door.final(response.json()["id"])
    assert (document["method"], document["path"]) == ("PUT", "/items/42")
    result = (await door.client.get(f"/invocations/{document['id']}/result")).json()
    assert result["params"] == {"item": "42"}
    assert result["body"] == "x"
    # Without the preference the same route answers synchronously.
    sync = await door.client.put("/items/7", content=b"y")
    assert sync.status_code == 200 and sync.json()["params"] == {"item": "7"}


async def test_client_errors_fail_without_retry_and_5xx_retry_until_dead(
    door: Door,
) -> None:
    door.harness.update_function("work", async_retries=2)
    await until(lambda: door.harness.executor.function("work").spec.async_retries == 2)
    client_error = await door.submit("/async-function/work?status=404")
    server_error = await door.submit("/async-function/work?status=503")
    document = await door.final(client_error)
    assert (document["status"], document["attempts"]) == ("failed", 1)
    assert document["error"] == "the function answered 404"
    document = await door.final(server_error, timeout=15)
    assert (document["status"], document["attempts"], document["max_attempts"]) == ("dead", 3, 3)
    assert [i.id for i in door.service.list(status="dead")] == [server_error]


async def test_a_single_attempt_past_the_timeout_is_timed_out(door: Door) -> None:
    document = await door.final(await door.submit("/async-function/work?sleep=5"))
    assert document["status"] == "timed_out"
    assert "did not answer within 2s" in document["error"]
    assert document["response"] is None
    no_result = await door.client.get(f"/invocations/{document['id']}/result")
    assert no_result.status_code == 409
    assert no_result.json()["error"]["code"] == "no_result"


async def test_concurrency_is_honoured(door: Door) -> None:
    door.harness.update_function("work", max_scale=1)
    await until(lambda: door.harness.executor.function("work").spec.max_scale == 1)
    ids = [await door.submit("/async-function/work?sleep=0.1") for _ in range(4)]
    documents = [await door.final(i) for i in ids]
    spans = sorted(
        (
            door.service.get(d["id"]).started_at or 0.0,  # type: ignore[union-attr]
            door.service.get(d["id"]).finished_at or 0.0,  # type: ignore[union-attr]
        )
        for d in documents
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end - 0.005, "two attempts overlapped on a max_scale 1 function"


async def test_cancel_queued_and_running(door: Door) -> None:
    door.harness.update_function("work", max_scale=1)
    await until(lambda: door.harness.executor.function("work").spec.max_scale == 1)
    running = await door.submit("/async-function/work?sleep=30")
    queued = await door.submit("/async-function/work")
    await until(lambda: door.service.get(running).status is Status.running)  # type: ignore[union-attr]
    pool = door.harness.executor.function("work")
    # "running" is recorded before an instance is acquired: wait for the one serving it.
    await until(lambda: pool.instances and pool.instances[0].inflight)
    pid = pool.instances[0].pid
    cancelled = await door.client.delete(f"/invocations/{queued}")
    assert cancelled.json()["status"] == "cancelled"
    cancelled = await door.client.delete(f"/invocations/{running}")
    assert cancelled.json()["status"] == "cancelled"
    await until(lambda: pid not in [i.pid for i in pool.instances])
    again = await door.client.delete(f"/invocations/{running}")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_finished"
    # The function still serves.
    after = await door.final(await door.submit("/async-function/work", b"next"))
    assert after["status"] == "succeeded"


async def test_running_invocations_resume_after_a_restart(harness: Harness, tmp_path: Path) -> None:
    harness.function("work", WORK)
    events = EventBus()
    completed: list[Event] = []
    events.subscribe("invocation.completed", completed.append)
    first = start_service(harness, tmp_path, events)
    await first.start()
    invocation = first.submit("work", "POST", "/?sleep=0.3", [], b"again")
    await until(lambda: first.get(invocation.id).status is Status.running)  # type: ignore[union-attr]
    # A dying platform: its workers vanish without a word, the record still says running.
    for task in first._loops:
        task.cancel()
    for attempt in list(first._running.values()):
        attempt.cancelled = True
        attempt.task.cancel()
    first.store.close()

    second = start_service(harness, tmp_path, events)
    await second.start()
    try:
        await until(lambda: (second.get(invocation.id) or invocation).final, timeout=10)
        found = second.get(invocation.id)
        assert found is not None and found.status is Status.succeeded
        assert found.attempts == 1  # the interrupted attempt had no outcome
        assert found.response is not None and b'"body": "again"' in found.response.body
        await until(lambda: completed)
        assert completed[0].data["id"] == invocation.id
        assert completed[0].data["status"] == "succeeded"
    finally:
        await second.stop(grace=0.5)
        second.store.close()


async def test_server_sent_events_and_websocket_less_clients(door: Door) -> None:
    invocation_id = await door.submit("/async-function/work?sleep=0.2", b"sse")
    async with door.client.stream("GET", f"/invocations/{invocation_id}/events") as response:
        assert response.headers["content-type"] == "text/event-stream"
        text = (await response.aread()).decode()
    kinds = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
    assert kinds[-1] == "result" and set(kinds[:-1]) <= {"status"}
    assert '"status": "succeeded"' in text.split("event: result", 1)[1]
    # Already finished: the result at once.
    async with door.client.stream("GET", f"/invocations/{invocation_id}/events") as response:
        text = (await response.aread()).decode()
    assert text.startswith("id: result\nevent: result")


async def test_a_queue_timeout_is_busy_not_a_failed_attempt(door: Door) -> None:
    door.harness.update_function("work", max_scale=1, queue_timeout=0.2)
    pool = door.harness.executor.function("work")
    await until(lambda: pool.spec.queue_timeout == 0.2)
    sync = asyncio.create_task(door.client.get("/function/work?sleep=1.5"))
    await until(lambda: pool.inflight == 1, timeout=30)
    invocation_id = await door.submit("/async-function/work")
    document = await door.final(invocation_id, timeout=30)
    assert (await sync).status_code == 200
    # It met 503 queue_timeout (several times) while the one instance was busy: requeued, with
    # no attempt spent, then served.
    assert pool.queue_timeouts >= 1
    assert (document["status"], document["attempts"]) == ("succeeded", 1)


async def test_a_full_disk_holds_records_back_until_it_has_space(
    door: Door, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes that find the disk full: intake answers 507, accepted work is neither lost nor
    left running, and it finishes once writes succeed again (no restart)."""
    store = door.service.store
    full = False
    refused: list[str] = []

    def failing(write: Any) -> Any:
        def attempt(invocation: Any, *args: Any) -> None:
            if full:
                refused.append(write.__name__)
                raise StorageFull(store.data_dir)
            write(invocation, *args)

        attempt.__name__ = write.__name__
        return attempt

    for name in ("add", "started", "requeued", "finished"):
        monkeypatch.setattr(store, name, failing(getattr(store, name)))

    door.harness.update_function("work", max_scale=1)
    await until(lambda: door.harness.executor.function("work").spec.max_scale == 1)
    accepted = [await door.submit("/async-function/work?sleep=0.5") for _ in range(4)]
    await until(lambda: door.service.get(accepted[0]).status is Status.running, timeout=30)
    full = True
    response = await door.client.post("/async-function/work", content=b"x")
    assert response.status_code == 507, response.text
    assert response.json()["error"]["code"] == "storage_full"
    assert str(store.data_dir) in response.json()["error"]["message"]
    # Both kinds of held-back write happen: a start (queued work) and an outcome.
    await until(lambda: {"started", "finished"} <= set(refused), timeout=30)
    statuses = [(await door.client.get(f"/invocations/{i}")).json()["status"] for i in accepted]
    assert "succeeded" not in statuses[1:], statuses

    full = False
    for invocation_id in accepted:
        document = await door.final(invocation_id, timeout=60)
        assert (document["status"], document["attempts"]) == ("succeeded", 1), document
    assert door.service._unsaved == {}
