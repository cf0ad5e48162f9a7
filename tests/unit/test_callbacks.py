"""fissile/invocations/callbacks.py: result delivery to X-Callback-Url, with retries."""

from __future__ import annotations

import time

import httpx

from fissile.invocations.callbacks import CallbackSender, check_callback_url
from fissile.invocations.records import Invocation, Response, Status


def finished(response: Response | None) -> Invocation:
    now = time.time()
    return Invocation(
        id="abc",
        function="f",
        status=Status.succeeded if response else Status.timed_out,
        method="POST",
        target="/",
        headers=[],
        max_attempts=1,
        created_at=now,
        finished_at=now,
        error=None if response else "timeout after 1s",
        response=response,
        callback_url="http://127.0.0.1:9/hook",
        callback_state="pending",
    )


def test_callback_urls() -> None:
    assert check_callback_url("http://127.0.0.1:8000/x") is None
    assert check_callback_url("https://example.test/") is None
    for bad in ("ftp://host/", "/relative", "http://", "nonsense"):
        assert check_callback_url(bad) is not None


async def test_retries_until_the_receiver_recovers() -> None:
    seen: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500 if len(seen) < 3 else 204)

    client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    sender = CallbackSender(attempts=5, base_delay=0.001, client=client)
    invocation = finished(Response(200, [("content-type", "application/json")], b'{"a": 1}'))
    saves: list[tuple[str | None, int]] = []
    await sender.deliver(
        invocation, lambda: saves.append((invocation.callback_state, invocation.callback_attempts))
    )
    assert len(seen) == 3
    assert invocation.callback_state == "delivered"
    assert saves == [("pending", 1), ("pending", 2), ("delivered", 3)]
    last = seen[-1]
    assert last.content == b'{"a": 1}'
    assert last.headers["x-fissile-invocation-id"] == "abc"
    assert last.headers["x-fissile-invocation-status"] == "succeeded"
    assert last.headers["x-fissile-response-status"] == "200"
    assert last.headers["content-type"] == "application/json"


async def test_gives_up_after_the_last_attempt_with_the_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    sender = CallbackSender(attempts=2, base_delay=0.001, client=client)
    invocation = finished(None)
    await sender.deliver(invocation, lambda: None)
    assert invocation.callback_state == "failed"
    assert invocation.callback_attempts == 2
    assert invocation.callback_error == "ConnectError: connection refused"


async def test_no_response_sends_a_json_error() -> None:
    bodies: list[bytes] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(200)

    client = httpx.AsyncClient(transport=httpx.MockTransport(receiver))
    await CallbackSender(client=client).deliver(finished(None), lambda: None)
    assert b'"code": "timed_out"' in bodies[0]
    assert b"timeout after 1s" in bodies[0]
