"""The last few crashes of each function, with their reasons, from the event bus.

The counters say how many instances died; the dashboard and ``fn stats`` also show which, when
and why. The executor publishes ``instance.crashed`` for every instance that died unexpectedly;
the log keeps the last ``KEEP`` per function and forgets a function when it is deleted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from fissile.events import Event, EventBus

KEEP = 20


class CrashLog:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._recent: dict[str, deque[dict[str, Any]]] = {}

    def follow(self, events: EventBus) -> Callable[[], None]:
        """Record crashes published on ``events``; returns the function that stops it."""
        stops = [
            events.subscribe("instance.crashed", self.record),
            events.subscribe("function.deleted", self._deleted),
        ]

        def stop() -> None:
            for unsubscribe in stops:
                unsubscribe()

        return stop

    def record(self, event: Event) -> None:
        data = event.data
        function = data.get("function")
        if not isinstance(function, str):
            return
        recent = self._recent.get(function)
        if recent is None:
            recent = self._recent[function] = deque(maxlen=self.keep)
        recent.append(
            {
                "time": event.time.isoformat(),
                "instance": data.get("instance"),
                "pid": data.get("pid"),
                "reason": data.get("reason"),
                "restarts": data.get("restarts"),
            }
        )

    def _deleted(self, event: Event) -> None:
        name = event.data.get("function")
        if isinstance(name, str):
            self._recent.pop(name, None)

    def of(self, function: str) -> list[dict[str, Any]]:
        """``function``'s recent crashes, newest first."""
        return list(reversed(self._recent.get(function, ())))
