"""Why an asynchronous invocation could not be accepted, found or cancelled."""

from __future__ import annotations


class InvocationError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
