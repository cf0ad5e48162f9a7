"""Why the executor could not give a request an instance; the router turns these into answers."""

from __future__ import annotations

# Answers meaning the function did not run because it was busy (429: its queue was full; 503:
# no instance was free within its queue timeout), not that it failed: a caller retries them
# later without counting an attempt.
BUSY = frozenset({"overloaded", "queue_timeout"})


class ExecutorError(Exception):
    status = 503
    code = "unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FunctionNotFound(ExecutorError):
    status = 404
    code = "function_not_found"


class Overloaded(ExecutorError):
    status = 429
    code = "overloaded"


class CrashLoop(ExecutorError):
    """The function's instances keep dying; starts are spaced out exponentially."""

    status = 503
    code = "crash_loop"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LoadFailed(ExecutorError):
    """The function's code could not be imported (syntax error, missing module, ...)."""

    status = 500
    code = "load_failed"


class BuildFailed(ExecutorError):
    status = 500
    code = "build_failed"


class NoCapacity(ExecutorError):
    status = 503
    code = "no_capacity"
