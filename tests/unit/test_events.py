import asyncio

from fissile.events import EventBus


async def test_handlers_get_matching_events_only() -> None:
    bus = EventBus()
    got: list[str] = []
    bus.subscribe("function.*", lambda event: got.append(event.type))
    bus.subscribe("node.started", lambda event: got.append("exact:" + event.type))
    bus.publish("function.created", {"name": "f"})
    bus.publish("node.started")
    bus.publish("instance.crashed")
    assert got == ["function.created", "exact:node.started"]


async def test_async_handler_runs_as_task_and_failures_are_contained() -> None:
    bus = EventBus()
    seen: list[dict[str, object]] = []

    async def slow(event: object) -> None:
        await asyncio.sleep(0.01)
        seen.append(event.data)  # type: ignore[attr-defined]

    def broken(event: object) -> None:
        raise RuntimeError("boom")

    bus.subscribe("*", broken)
    bus.subscribe("*", slow)
    event = bus.publish("invocation.completed", {"id": "x"})
    assert seen == []  # publish never waits for subscribers
    await bus.drain()
    assert seen == [{"id": "x"}]
    assert event.to_json()["type"] == "invocation.completed"


async def test_unsubscribe() -> None:
    bus = EventBus()
    got: list[str] = []
    stop = bus.subscribe("*", lambda event: got.append(event.type))
    stop()
    stop()
    bus.publish("node.started")
    assert got == []
