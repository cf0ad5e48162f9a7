"""Calling a function from inside the platform (async workers, timers, MQ and watch triggers):
the same request encoding and forwarding as the router, without an HTTP client in between."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping

from fissile.executor import Executor
from fissile.executor.connection import (
    InstanceGone,
    InstanceResponse,
    ResponseTooLarge,
    read_body,
)
from fissile.executor.instance import Instance
from fissile.observability import tracing
from fissile.router.proxy import Answer, forward
from fissile.router.relay import ResponseTimedOut

Headers = Iterable[tuple[str, str]] | Mapping[str, str]

# Headers a caller inside the platform may not set: hop-by-hop ones, and those the encoder
# writes itself.
_RESERVED = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
        "x-fissile-function",
        "x-fissile-invocation-id",
        "x-fissile-timeout",
    }
)
TRACEPARENT = "traceparent"


def new_invocation_id() -> str:
    return secrets.token_hex(8)


def encode_request(
    function: str,
    method: str,
    target: str,
    headers: Headers,
    body: bytes,
    timeout: float,
    invocation_id: str,
    traceparent: str | None = None,
) -> bytes:
    """One complete HTTP/1.1 request for an instance, with the platform's metadata headers
    (and ``traceparent`` instead of the caller's, when given)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    lines = [f"{method} {target} HTTP/1.1"]
    has_host = False
    for name, value in items:
        lower = name.lower()
        if lower in _RESERVED or "\r" in value or "\n" in value:
            continue
        if traceparent is not None and lower == TRACEPARENT:
            continue
        has_host = has_host or lower == "host"
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.append("host: fissile")
    if traceparent is not None:
        lines.append(f"{TRACEPARENT}: {traceparent}")
    lines += [
        f"x-fissile-function: {function}",
        f"x-fissile-invocation-id: {invocation_id}",
        f"x-fissile-timeout: {timeout:g}",
        f"content-length: {len(body)}",
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    return head + body


async def invoke(
    executor: Executor,
    function: str,
    *,
    method: str = "POST",
    path: str = "/",
    headers: Headers = (),
    body: bytes = b"",
    invocation_id: str | None = None,
    timeout: float | None = None,
    on_acquire: Callable[[Instance], None] | None = None,
    hop: tracing.Hop | None = None,
    span: str = "call",
) -> InstanceResponse | Answer:
    """Run one request through one of the function's instances (starting one if needed) and
    return its response, or the platform's answer when it failed (404, 429, 502, 503, 504).

    ``timeout`` may only shorten the function's own timeout (a caller's remaining deadline).
    With ``hop``, the function gets its ``traceparent`` and, when tracing is on, the hop is
    recorded as a span named ``<span> <function>``."""
    traceparent = None if hop is None else hop.traceparent
    recording = hop is not None and tracing.enabled()
    start = time.time_ns()
    arrived = time.monotonic()
    served: list[tuple[str, bool]] = []

    def acquired(instance: Instance) -> None:
        # A cold start as the router counts one (proxy.Trip): the instance became ready after
        # the request arrived, so the request waited for it to be made.
        served.append((instance.id, instance.ready_at > arrived))
        if on_acquire is not None:
            on_acquire(instance)

    result = await _invoke(
        executor,
        function,
        method,
        path,
        headers,
        body,
        invocation_id,
        timeout,
        acquired if recording else on_acquire,
        traceparent,
    )
    if not recording:
        return result
    assert hop is not None
    hop.record(
        f"{span} {function}",
        start,
        attributes(function, result, served),
        error=failure(result),
        kind="client",
    )
    return result


def attributes(
    function: str, result: InstanceResponse | Answer, served: list[tuple[str, bool]]
) -> dict[str, str | int | bool]:
    """A hop's span attributes: the function, the status, the instance and whether it was a
    cold start (an instance that became ready after the request arrived)."""
    found: dict[str, str | int | bool] = {
        "fissile.function": function,
        "http.response.status_code": result.status,
    }
    if isinstance(result, Answer):
        found["fissile.answer"] = result.code
    if served:
        found["fissile.instance"], found["fissile.cold"] = served[-1]
    return found


def failure(result: InstanceResponse | Answer) -> str | None:
    """A hop's error, for its span's status: the platform's answer, or a 5xx of the function."""
    if isinstance(result, Answer):
        return result.message
    return f"the function answered {result.status}" if result.status >= 500 else None


async def _invoke(
    executor: Executor,
    function: str,
    method: str,
    path: str,
    headers: Headers,
    body: bytes,
    invocation_id: str | None,
    timeout: float | None,
    on_acquire: Callable[[Instance], None] | None,
    traceparent: str | None,
) -> InstanceResponse | Answer:
    try:
        pool = executor.function(function)
    except Exception:
        return Answer(404, "function_not_found", f"function {function!r} not found")
    limit = pool.spec.timeout if timeout is None else min(timeout, pool.spec.timeout)
    if not path.startswith("/"):
        path = "/" + path
    request = encode_request(
        function,
        method,
        path,
        headers,
        body,
        limit,
        invocation_id or new_invocation_id(),
        traceparent,
    )
    # A caller's deadline bounds the wait and the run together; without one, each has its own.
    deadline = None if timeout is None else limit
    result = await forward(executor, pool, request, timeout=deadline, on_acquire=on_acquire)
    if isinstance(result, Answer) or result.stream is None:
        return result
    # Callers inside the platform need the body whole: collected, up to the same cap.
    try:
        result.body = await read_body(result.stream, executor.max_response_body)
    except ResponseTooLarge as exc:
        return Answer(502, "response_too_large", f"the response of {function} {exc}")
    except ResponseTimedOut:
        return Answer(504, "timeout", f"function {function} did not answer within {limit:g}s")
    except InstanceGone as exc:
        return Answer(502, "instance_died", str(exc))
    result.stream = None
    return result
