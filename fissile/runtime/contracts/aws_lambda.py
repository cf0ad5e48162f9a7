"""AWS Lambda's Python handlers: ``handler(event, context)``.

``lambda`` gives an HTTP request as the proxy event of payload format 2.0 (HTTP APIs, function
URLs), ``lambda-v1`` as format 1.0 (REST APIs), and reads the result by that format's rules.
Calls the platform makes (triggers, asynchronous invocations, ``context.invoke``) carry a
payload instead, as Lambda's own invoke does: the handler gets it as the event and its result
goes back as JSON.
"""

from __future__ import annotations

import datetime
import inspect
import json
import secrets
import traceback
from collections.abc import Callable
from typing import Any

from fissile.runtime import logs
from fissile.runtime.context import Context
from fissile.runtime.contracts import _lambda_event as events
from fissile.runtime.contracts._calls import origin, split_path
from fissile.runtime.contracts._handler import Handler, Target, required_positional
from fissile.runtime.request import Request
from fissile.runtime.response import JSON_TYPE, InvalidResponse, Response, encode_body

#: fissile's own default, for an instance told no memory size.
DEFAULT_MEMORY = 256 * 1024**2


class CognitoIdentity:
    """``context.identity``: set by AWS's mobile SDKs only, so empty here."""

    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self) -> None:
        self.cognito_identity_id: str | None = None
        self.cognito_identity_pool_id: str | None = None


class LambdaContext:
    """The second argument of a Lambda handler, with the attributes of the Python runtime's.
    ``fissile`` is the platform's own ``Context`` (``invoke``, ``publish``, ``logger``)."""

    __slots__ = (
        "aws_request_id",
        "client_context",
        "fissile",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
    )

    def __init__(self, function: _Function, context: Context) -> None:
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function.arn
        # A string, as Lambda's Python runtime has it (read from its environment).
        self.memory_limit_in_mb = function.memory_mb
        self.aws_request_id = context.invocation_id
        self.log_group_name = function.log_group
        self.log_stream_name = function.log_stream
        self.identity = CognitoIdentity()
        self.client_context: Any = None
        self.fissile = context

    def get_remaining_time_in_millis(self) -> int:
        return int(self.fissile.remaining() * 1000)

    def __repr__(self) -> str:
        return f"<LambdaContext {self.function_name} {self.aws_request_id}>"


class _Function:
    """What every call's context repeats about the function and its instance."""

    __slots__ = ("arn", "log_group", "log_stream", "memory_mb", "name")

    def __init__(self, name: str, memory: int) -> None:
        self.name = name
        self.arn = f"arn:fissile:lambda:local:{events.PLACEHOLDER}:function:{name}"
        self.memory_mb = str(memory // 1024**2)
        self.log_group = f"/fissile/functions/{name}"
        # Lambda's shape (date, version, one id per execution environment): one per instance.
        day = datetime.datetime.now(datetime.UTC).strftime("%Y/%m/%d")
        self.log_stream = f"{day}/[$LATEST]{secrets.token_hex(16)}"


def bind(target: Target) -> Handler:
    func = target.func
    if inspect.iscoroutinefunction(func):
        raise TypeError(
            f"{getattr(func, '__name__', func)!r} is async; a Lambda handler is a plain def"
        )
    arity = required_positional(func)
    if arity not in (1, 2):
        raise TypeError(
            f"{getattr(func, '__name__', func)!r} takes {arity} arguments;"
            " a Lambda handler is handler(event, context) (or handler(event))"
        )
    version = "1.0" if target.contract == "lambda-v1" else "2.0"
    http_event = events.http_v1 if version == "1.0" else events.http_v2
    function = _Function(target.function, int(target.options.get("memory") or DEFAULT_MEMORY))
    call: Callable[[Any, LambdaContext], Any] = (
        func if arity == 2 else lambda event, context: func(event)
    )

    def invoke(request: Request, context: Context) -> Response:
        http = origin(request) is None
        if not http:
            event = events.payload(request)
        elif arity == 1:
            # handler(event) is no AWS handler: it is the benchmark suites' shape, written for
            # a wrapper that hands on the request's JSON body.
            event = events.payload(request)
        else:
            event = http_event(request, split_path(request, target.function)[1], context)
        try:
            result = call(event, LambdaContext(function, context))
        except Exception as exc:
            return _error(exc, context)
        if not http:
            return _json(result)
        return proxy_response(result, version)

    return Handler(func, target.contract, invoke, is_async=False)


def proxy_response(result: Any, version: str) -> Response:
    """A handler's result as the HTTP answer API Gateway would make of it. With 2.0, anything
    but a dict holding ``statusCode`` is the body of a 200 ``application/json`` answer (a
    string as it is, anything else as JSON); 1.0 requires the proxy shape."""
    if isinstance(result, dict) and "statusCode" in result:
        return _proxy(result, version)
    if version == "1.0":
        what = "a dict without statusCode" if isinstance(result, dict) else type(result).__name__
        raise InvalidResponse(
            "a Lambda handler behind payload format 1.0 returns"
            f' {{"statusCode": int, "headers": {{...}}, "body": str}}, not {what}'
        )
    if isinstance(result, str):
        return Response(result.encode("utf-8"), 200, content_type=JSON_TYPE)
    return _json(result)


def _proxy(result: dict[str, Any], version: str) -> Response:
    status = result["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise InvalidResponse(f"statusCode must be an integer from 100 to 599, not {status!r}")
    body = result.get("body")
    if body is None:
        body = ""
    if not isinstance(body, str):
        raise InvalidResponse(
            f"a Lambda proxy response's body is a string, not a {type(body).__name__}"
            " (json.dumps it)"
        )
    payload = events.decode_body(body, bool(result.get("isBase64Encoded")))
    headers = _headers(result)
    if version == "2.0":
        cookies = result.get("cookies") or []
        if not isinstance(cookies, list):
            raise InvalidResponse("cookies must be a list of Set-Cookie values")
        headers += [("set-cookie", str(cookie)) for cookie in cookies]
    if payload and not any(k.lower() == "content-type" for k, _ in headers):
        # API Gateway's default for a body of unstated type.
        headers.append(("content-type", JSON_TYPE))
    return Response(payload, status, headers)


def _headers(result: dict[str, Any]) -> list[tuple[str, str]]:
    """``headers`` and ``multiValueHeaders`` merged: a name in both takes the multi-value
    list, as API Gateway does."""
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise InvalidResponse("headers and multiValueHeaders must be objects")
    pairs: list[tuple[str, str]] = []
    named = {str(name).lower() for name in multi}
    for name, values in multi.items():
        if not isinstance(values, list):
            raise InvalidResponse(f"multiValueHeaders[{name!r}] must be a list")
        pairs += [(str(name), _header_value(value)) for value in values]
    pairs += [(str(k), _header_value(v)) for k, v in single.items() if str(k).lower() not in named]
    return pairs


def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json(result: Any) -> Response:
    if isinstance(result, bytes | bytearray | memoryview):
        raise InvalidResponse("a Lambda handler returns JSON values; bytes are not (base64 them)")
    if result is None or isinstance(result, str):
        return Response(json.dumps(result).encode(), 200, content_type=JSON_TYPE)
    body, _ = encode_body(result)
    return Response(body, 200, content_type=JSON_TYPE)


def _error(exc: Exception, context: Context) -> Response:
    """An unhandled exception, shaped as Lambda reports one (``errorMessage``, ``errorType``);
    the stack trace goes to the function's log, not to the caller."""
    tb = exc.__traceback__
    logs.error("".join(traceback.format_exception(type(exc), exc, tb.tb_next if tb else tb)))
    body = {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": context.invocation_id,
    }
    return Response(body, 500, content_type=JSON_TYPE)
