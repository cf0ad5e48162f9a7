"""The platform socket's app: call chains too deep, deadlines passed, bad headers and publish
refusals are answered without running anything."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import pytest

from fissile.router import internal
from fissile.router.internal import MAX_DEPTH, PEER, PlatformSocketApp
from fissile.triggers.mq.hub import Refused


class Recorder:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def body(self) -> Any:
        return json.loads(self.messages[1]["body"])


async def call(
    app: PlatformSocketApp,
    path: str,
    headers: dict[str, str],
    query: bytes = b"",
    peer: tuple[int, int, int] | None = None,
    method: str = "POST",
) -> Recorder:
    scope = {
        PEER: peer,
        "type": "http",
        "method": method,
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    send = Recorder()
    await app(scope, receive, send)
    return send


@pytest.fixture
def invoked(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    async def fake_invoke(executor: Any, function: str, **kwargs: Any) -> Any:
        calls.append({"function": function, **kwargs})
        from fissile.router.proxy import Answer

        return Answer(200, "ok", "called")

    monkeypatch.setattr(internal, "invoke", fake_invoke)
    return calls


async def refuse(*args: Any) -> None:
    raise Refused(502, "broker_unavailable", "redis at redis://127.0.0.1:1: refused")


async def test_depth_past_the_limit_is_508(invoked: list[dict[str, Any]]) -> None:
    app = PlatformSocketApp(None, refuse)  # type: ignore[arg-type]
    deep = await call(
        app, "/invoke/f", {"x-fissile-chain-depth": str(MAX_DEPTH), "x-fissile-chain-id": "c1"}
    )
    assert deep.status == 508
    assert deep.body["error"]["code"] == "loop_detected"
    assert "c1" in deep.body["error"]["message"]
    assert invoked == []


async def test_the_callee_gets_depth_plus_one_and_the_remaining_time(
    invoked: list[dict[str, Any]],
) -> None:
    app = PlatformSocketApp(Callers({(1234, 100_007): "a"}), refuse)  # type: ignore[arg-type]
    headers = {
        "x-fissile-chain-depth": "3",
        "x-fissile-chain-id": "c1",
        "x-fissile-deadline": "2.5",
        "content-type": "application/json",
        "x-other": "passed",
        "host": "fissile",
        "x-fissile-params": "forged",
        "x-fission-params-id": "forged",
    }
    answered = await call(app, "/invoke/g", headers, peer=(1234, 100_007, 100_007))
    assert answered.status == 200
    (made,) = invoked
    assert made["function"] == "g" and made["timeout"] == 2.5 and made["body"] == b"{}"
    assert made["method"] == "POST" and made["path"] == "/"
    assert made["headers"] == {
        "content-type": "application/json",
        "x-other": "passed",
        "x-fissile-chain-id": "c1",
        "x-fissile-chain-depth": "4",
        "x-fissile-caller": "a",
    }


async def test_the_callee_gets_the_method_path_and_query_as_a_route_gives_them(
    invoked: list[dict[str, Any]],
) -> None:
    app = PlatformSocketApp(None, refuse)  # type: ignore[arg-type]
    await call(app, "/invoke/items/items/a%20b", {}, b"x=1&x=2", method="GET")
    await call(app, "/invoke/odd%2Fname", {}, method="DELETE")
    await call(app, "/invoke/items/", {}, method="PUT")
    got = [(made["function"], made["method"], made["path"]) for made in invoked]
    assert got == [
        ("items", "GET", "/items/a%20b?x=1&x=2"),
        ("odd/name", "DELETE", "/"),
        ("items", "PUT", "/"),
    ]
    # Publishing is POST only.
    assert (await call(app, "/publish", {}, b"topic=t", method="GET")).status == 405


class Callers:
    """The executor's side: which function a peer (pid, uid) belongs to."""

    def __init__(self, known: dict[tuple[int, int], str]) -> None:
        self.known = known

    def caller(self, pid: int, uid: int) -> str | None:
        return self.known.get((pid, uid))


async def test_the_caller_is_named_by_the_platform_never_by_the_request(
    invoked: list[dict[str, Any]],
) -> None:
    app = PlatformSocketApp(Callers({(1234, 100_007): "a"}), refuse)  # type: ignore[arg-type]
    forged = {"x-fissile-caller": "billing-admin"}
    await call(app, "/invoke/g", forged, peer=(1234, 100_007, 100_007))
    await call(app, "/invoke/g", forged, peer=(999, 0, 0))  # a process that is no function's
    await call(app, "/invoke/g", forged)  # no credentials at all
    assert [made["headers"].get("x-fissile-caller") for made in invoked] == ["a", None, None]


async def test_a_passed_deadline_and_bad_numbers(invoked: list[dict[str, Any]]) -> None:
    app = PlatformSocketApp(None, refuse)  # type: ignore[arg-type]
    late = await call(app, "/invoke/g", {"x-fissile-deadline": "0"})
    assert late.status == 504
    bad = await call(app, "/invoke/g", {"x-fissile-chain-depth": "deep"})
    assert bad.status == 400
    assert invoked == []


async def test_publish_refusals_keep_their_status() -> None:
    app = PlatformSocketApp(None, refuse)  # type: ignore[arg-type]
    refused = await call(app, "/publish", {}, b"topic=t&mqtype=redis")
    assert refused.status == 502
    assert refused.body["error"]["code"] == "broker_unavailable"
    invalid = await call(app, "/publish", {}, b"topic=no%20spaces")
    assert invalid.status == 422
    unknown = await call(app, "/elsewhere", {})
    assert unknown.status == 404


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_an_invoke_is_a_hop_of_the_caller_s_trace(invoked: list[dict[str, Any]]) -> None:
    app = PlatformSocketApp(None, refuse)  # type: ignore[arg-type]
    await call(app, "/invoke/g", {"traceparent": TRACEPARENT})
    await call(app, "/invoke/g", {})
    traced, untraced = (made["hop"] for made in invoked)
    assert traced.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert traced.parent_id == "00f067aa0ba902b7"
    assert traced.span_id != traced.parent_id
    assert untraced.parent_id is None  # the caller sent none: a trace starts here


async def test_a_published_message_carries_the_publish_s_span() -> None:
    published: list[dict[str, str]] = []

    async def publisher(mqtype: str, topic: str, body: bytes, meta: Any, url: Any) -> None:
        published.append(meta)

    app = PlatformSocketApp(None, publisher)  # type: ignore[arg-type]
    sent = await call(app, "/publish", {"traceparent": TRACEPARENT}, b"topic=t")
    assert sent.status == 202
    (meta,) = published
    trace, parent, flags = meta["traceparent"].split("-")[1:]
    assert (trace, flags) == ("4bf92f3577b34da6a3ce929d0e0e4736", "01")
    assert parent != "00f067aa0ba902b7"
