"""What an asynchronous invocation is: its states and the record kept of it."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"  # the function answered with a status below 400
    failed = "failed"  # it answered 4xx, or 5xx / crashed with no retries configured
    timed_out = "timed_out"  # its only attempt ran past the function's timeout
    cancelled = "cancelled"
    dead = "dead"  # every one of its retries failed: a dead letter


FINAL = frozenset(
    {Status.succeeded, Status.failed, Status.timed_out, Status.cancelled, Status.dead}
)

# Put on watchers' queues when the platform stops (compared by identity): not a state.
CLOSING: dict[str, Any] = {"status": "closing"}


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def to_json(self) -> dict[str, Any]:
        try:
            text, encoding = self.body.decode("utf-8"), "text"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(self.body).decode("ascii"), "base64"
        return {
            "status": self.status,
            "headers": [[name, value] for name, value in self.headers],
            "body": text,
            "body_encoding": encoding,
        }


@dataclass(slots=True)
class Invocation:
    id: str
    function: str
    status: Status
    method: str
    target: str  # path and query as the function will see them
    headers: list[tuple[str, str]]
    max_attempts: int
    created_at: float
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    next_attempt_at: float = 0.0
    error: str | None = None
    response: Response | None = None
    callback_url: str | None = None
    callback_state: str | None = None  # pending | delivered | failed
    callback_attempts: int = 0
    callback_error: str | None = None
    node: str | None = None  # in a cluster: the node that holds (or last held) it

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def to_json(self) -> dict[str, Any]:
        duration = None
        if self.started_at is not None and self.finished_at is not None:
            duration = round((self.finished_at - self.started_at) * 1000, 3)
        document: dict[str, Any] = {
            "id": self.id,
            "function": self.function,
            "status": str(self.status),
            "method": self.method,
            "path": self.target,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_ms": duration,
            "error": self.error,
            "response": None if self.response is None else self.response.to_json(),
        }
        if self.node is not None:
            document["node"] = self.node
        if self.callback_url is not None:
            document["callback"] = {
                "url": self.callback_url,
                "state": self.callback_state,
                "attempts": self.callback_attempts,
                "error": self.callback_error,
            }
        return document


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat()
