"""The store protocol: versioned JSON records per kind, with change notifications.

Subscribers are called synchronously after each commit, in the thread that wrote. On one node
everything runs on one event loop, so the router and executor see a change before the API call
that made it has answered; no one polls the database on the hot path. A shared store
(``postgres.py``) also tells them about other processes' changes, on the loop it was opened in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from fissile.store.revisions import RevisionStore


class StoreError(Exception):
    pass


class StoreUnavailable(StoreError):
    """The database did not answer (a shared store's server away): try again later."""


class NotFound(StoreError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind}/{name} not found")
        self.kind = kind
        self.name = name


class AlreadyExists(StoreError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind}/{name} already exists")
        self.kind = kind
        self.name = name


class StaleWrite(AlreadyExists):
    """An update based on an older generation than the stored one (optimistic concurrency)."""

    def __init__(self, kind: str, name: str, expected: int, actual: int) -> None:
        Exception.__init__(
            self, f"{kind}/{name} changed meanwhile (generation {actual}, expected {expected})"
        )
        self.kind = kind
        self.name = name


@dataclass(frozen=True, slots=True)
class Record:
    kind: str
    name: str
    data: dict[str, Any]
    generation: int
    created_at: datetime
    updated_at: datetime

    def merged(self) -> dict[str, Any]:
        """The record as one flat document: its data plus the platform's metadata."""
        return {
            **self.data,
            "generation": self.generation,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Change:
    action: Literal["created", "updated", "deleted"]
    record: Record
    previous: Record | None = None


Subscriber = Callable[[Change], None]


class Store(RevisionStore, Protocol):
    """Resources, and the revisions of functions (``revisions.py``)."""

    def get(self, kind: str, name: str) -> Record: ...

    def find(self, kind: str, name: str) -> Record | None: ...

    def list(self, kind: str) -> list[Record]: ...

    def create(self, kind: str, name: str, data: dict[str, Any]) -> Record: ...

    def update(
        self, kind: str, name: str, data: dict[str, Any], *, generation: int | None = None
    ) -> Record: ...

    def delete(self, kind: str, name: str) -> Record: ...

    def subscribe(self, subscriber: Subscriber) -> None: ...

    def close(self) -> None: ...
