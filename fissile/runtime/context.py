"""The optional second argument of a native function."""

from __future__ import annotations

import logging
import time


class Context:
    """Facts about the current invocation, and the function's logger."""

    __slots__ = ("_deadline", "function", "invocation_id", "logger")

    def __init__(
        self, function: str, invocation_id: str, timeout: float, logger: logging.Logger
    ) -> None:
        self.function = function
        self.invocation_id = invocation_id
        self._deadline = time.monotonic() + timeout
        self.logger = logger

    @property
    def deadline(self) -> float:
        """``time.monotonic()`` value past which the platform ends the request."""
        return self._deadline

    def remaining(self) -> float:
        """Seconds left before the function's timeout."""
        return max(0.0, self._deadline - time.monotonic())

    def __repr__(self) -> str:
        return f"<Context {self.function} {self.invocation_id}>"
