"""Google Cloud Functions (functions-framework): ``handler(request: flask.Request)`` for HTTP
functions, ``handler(cloud_event)`` for those registered with ``@functions_framework.cloud_event``.

An HTTP function gets a real ``flask.Request`` and answers through Flask's ``make_response``. A
CloudEvent function gets a ``cloudevents.http.CloudEvent`` read from the request (binary or
structured mode); calls the platform makes (triggers, asynchronous invocations,
``context.invoke``) become CloudEvents of fissile's own types. functions-framework is imported
only by the functions that use it: a plain ``handler(request)`` costs nothing more.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any

import flask

from fissile.runtime.context import Context
from fissile.runtime.contracts._calls import origin
from fissile.runtime.contracts._flask import FlaskCall
from fissile.runtime.contracts._handler import Handler, Target, required_positional
from fissile.runtime.request import Request
from fissile.runtime.response import Response

HTTP = "http"
CLOUDEVENT = "cloudevent"
_REGISTRY = "functions_framework._function_registry"


def bind(target: Target) -> Handler:
    func = target.func
    name = getattr(func, "__name__", repr(func))
    kind = signature_type(func)
    if kind not in (HTTP, CLOUDEVENT):
        raise TypeError(
            f"{name!r} is a functions-framework {kind!r} function; fissile's gcf contract runs"
            " @functions_framework.http and @functions_framework.cloud_event functions"
        )
    arity = required_positional(func)
    if arity != 1:
        expected = "handler(cloud_event)" if kind == CLOUDEVENT else "handler(request)"
        raise TypeError(f"{name!r} takes {arity} arguments; a {kind} function is {expected}")
    call = FlaskCall(target.function)
    if kind == HTTP:

        def invoke_http(request: Request, context: Context) -> Response:
            return call.run(request, lambda: func(_current_request()))

        return Handler(func, "gcf", invoke_http, is_async=False)

    def invoke_event(request: Request, context: Context) -> Response:
        def view() -> str:
            func(_cloud_event(request, context))
            # What functions-framework answers once a CloudEvent function has returned.
            return "OK"

        return call.run(request, view)

    return Handler(func, "gcf", invoke_event, is_async=False)


def _current_request() -> flask.Request:
    # The request itself, not the context-local proxy, as functions-framework passes it.
    return flask.request._get_current_object()  # type: ignore[attr-defined,no-any-return]


def signature_type(func: Any) -> str:
    """The type functions-framework registered ``func`` under (by name, as it does); ``http``,
    its default, for a function it never saw."""
    registry = sys.modules.get(_REGISTRY)
    if registry is None:
        return HTTP
    name = getattr(func, "__name__", None)
    if name in getattr(registry, "ASGI_FUNCTIONS", ()):
        return "aio"
    kind = getattr(registry, "REGISTRY_MAP", {}).get(name, HTTP)
    return str(kind)


def _cloud_event(request: Request, context: Context) -> Any:
    """The CloudEvent in the request, or one describing the platform's call; a request that is
    neither (nor a legacy background event) is answered 400, as functions-framework does."""
    import cloudevents.exceptions
    from cloudevents.http import from_http

    headers: dict[str, str] = request.headers
    kind = origin(request)
    if kind is not None and not _carries_cloudevent(headers):
        headers = {**headers, **_fissile_attributes(request, kind, context)}
    try:
        return from_http(headers, request.body)
    except (
        cloudevents.exceptions.MissingRequiredFields,
        cloudevents.exceptions.InvalidRequiredFields,
    ) as exc:
        problem: Exception = exc
    from functions_framework import event_conversion
    from functions_framework.exceptions import EventConversionException

    try:
        return event_conversion.background_event_to_cloud_event(flask.request)
    except EventConversionException as exc:
        flask.abort(
            400,
            description="the function takes CloudEvents, and this request is none"
            f" ({problem}; as a legacy background event: {exc})",
        )


def _carries_cloudevent(headers: dict[str, str]) -> bool:
    return "ce-specversion" in headers or headers.get("content-type", "").startswith(
        "application/cloudevents"
    )


def _fissile_attributes(request: Request, kind: str, context: Context) -> dict[str, str]:
    """Binary-mode CloudEvent headers for a call the platform made: its type says which kind
    of call, its source what sent it."""
    headers = request.headers
    event_id = context.invocation_id
    time = datetime.datetime.now(datetime.UTC).isoformat()
    if kind == "mqt":
        event_id = headers.get("x-fissile-message-id") or event_id
        type_, source = "fissile.mqt.message", f"//fissile/topics/{headers.get('x-fissile-topic')}"
    elif kind == "timer":
        name = headers.get("x-fissile-timer-name") or headers.get("x-fissile-trigger-name")
        type_, source = "fissile.timer.fired", f"//fissile/timers/{name}"
        time = headers.get("x-fissile-timer-slot") or time
    elif kind == "watch":
        event_id = headers.get("x-fissile-event-id") or event_id
        type_ = f"fissile.watch.{headers.get('x-fissile-event-type', 'event')}"
        source = f"//fissile/watches/{headers.get('x-fissile-trigger-name')}"
    elif kind == "async":
        type_, source = "fissile.invocation.async", f"//fissile/functions/{context.function}"
    else:
        type_ = "fissile.function.invoked"
        source = f"//fissile/functions/{headers.get('x-fissile-caller', '')}"
    attributes = {
        "ce-specversion": "1.0",
        "ce-id": event_id or "-",
        "ce-type": type_,
        "ce-source": source,
        "ce-time": time,
    }
    return attributes
