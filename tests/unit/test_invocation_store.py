"""fissile/invocations/store.py and records.py: the durable record of async invocations."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from fissile.invocations.records import Invocation, Response, Status
from fissile.invocations.store import INLINE_LIMIT, InvocationStore
from fissile.store import StorageFull


@pytest.fixture
def store(tmp_path: Path) -> InvocationStore:
    return InvocationStore(tmp_path / "invocations.db", tmp_path / "bodies")


def make(invocation_id: str, function: str = "f", created: float | None = None) -> Invocation:
    now = time.time() if created is None else created
    return Invocation(
        id=invocation_id,
        function=function,
        status=Status.queued,
        method="POST",
        target="/async-function/f?x=1",
        headers=[("content-type", "text/plain"), ("x-mine", "1")],
        max_attempts=3,
        created_at=now,
        next_attempt_at=now,
    )


def test_round_trip(store: InvocationStore) -> None:
    store.add(make("a"), b"payload")
    found = store.get("a")
    assert found is not None
    assert found.status is Status.queued
    assert found.headers == [("content-type", "text/plain"), ("x-mine", "1")]
    assert found.target == "/async-function/f?x=1"
    assert store.request_body("a") == b"payload"
    assert store.get("missing") is None


def test_large_bodies_live_in_files_and_go_with_the_record(
    store: InvocationStore, tmp_path: Path
) -> None:
    big = b"x" * (INLINE_LIMIT + 1)
    invocation = make("big")
    store.add(invocation, big)
    assert (tmp_path / "bodies" / "big.request").read_bytes() == big
    assert store.request_body("big") == big

    invocation.status = Status.succeeded
    invocation.finished_at = time.time()
    invocation.response = Response(200, [("content-type", "application/octet-stream")], big * 2)
    store.finished(invocation)
    assert not (tmp_path / "bodies" / "big.request").exists()
    found = store.get("big")
    assert found is not None and found.response is not None
    assert found.response.body == big * 2

    assert store.expire(time.time() + 1) == 1
    assert store.get("big") is None
    assert list((tmp_path / "bodies").iterdir()) == []


def test_expire_keeps_unfinished_recent_and_pending_callbacks(store: InvocationStore) -> None:
    old = time.time() - 100
    for name in ("done", "queued", "callback"):
        store.add(make(name, created=old), b"")
    done = make("done")
    done.status, done.finished_at = Status.failed, old
    store.finished(done)
    callback = make("callback")
    callback.status, callback.finished_at = Status.succeeded, old
    callback.callback_url, callback.callback_state = "http://127.0.0.1:1/", "pending"
    store.finished(callback)
    assert store.expire(time.time() - 10) == 1
    assert store.get("done") is None
    assert store.get("queued") is not None
    assert store.get("callback") is not None
    assert [i.id for i in store.pending_callbacks()] == ["callback"]


def test_unfinished_oldest_first_and_list_filters(store: InvocationStore) -> None:
    base = time.time()
    store.add(make("second", "f", base + 1), b"")
    store.add(make("first", "g", base), b"")
    running = make("second", "f", base + 1)
    running.status, running.attempts, running.started_at = Status.running, 1, base + 2
    store.started(running)
    assert [i.id for i in store.unfinished()] == ["first", "second"]
    assert [i.id for i in store.list(status="running")] == ["second"]
    assert [i.id for i in store.list(function="g")] == ["first"]
    assert [i.id for i in store.list()] == ["second", "first"]  # newest first
    assert store.counts() == {"queued": 1, "running": 1}


def test_state_survives_reopening(tmp_path: Path) -> None:
    first = InvocationStore(tmp_path / "i.db", tmp_path / "b")
    first.add(make("kept"), b"body")
    first.close()
    again = InvocationStore(tmp_path / "i.db", tmp_path / "b")
    assert again.request_body("kept") == b"body"


def test_binary_response_is_base64_in_json() -> None:
    assert Response(200, [], b"\xff\x00").to_json()["body_encoding"] == "base64"
    text = Response(201, [("a", "b")], "héllo".encode()).to_json()
    assert text == {
        "status": 201,
        "headers": [["a", "b"]],
        "body": "héllo",
        "body_encoding": "text",
    }


def test_a_full_disk_keeps_no_half_written_body(
    store: InvocationStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = b"x" * (INLINE_LIMIT + 1)
    # The body's temporary file lands on /dev/full, which answers every write with ENOSPC.
    (store.bodies / "a.tmp").symlink_to("/dev/full")
    with pytest.raises(StorageFull, match=str(tmp_path)):
        store.add(make("a"), big)
    assert list(store.bodies.iterdir()) == []
    assert store.get("a") is None
    # The body was written but the row cannot be: the body goes too.
    monkeypatch.setattr(store, "_execute", _full(tmp_path))
    with pytest.raises(StorageFull):
        store.add(make("b"), big)
    assert list(store.bodies.iterdir()) == []


def _full(where: Path) -> Any:
    def execute(*args: Any) -> None:
        raise StorageFull(where)

    return execute
