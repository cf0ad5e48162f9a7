"""The events a Lambda handler receives: an HTTP request as API Gateway's and function URLs'
proxy event (payload format 2.0, or REST APIs' 1.0), and the payload of any other call."""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from fissile.runtime.context import Context
from fissile.runtime.request import Request
from fissile.runtime.response import InvalidResponse

#: What a fissile deployment puts where AWS has an account or API id.
PLACEHOLDER = "fissile"

# Bodies of these types arrive as text; every other type base64-encoded, as API Gateway does.
_TEXT_TYPES = frozenset({"application/json", "application/javascript", "application/xml"})


def payload(request: Request) -> Any:
    """The event of a call that is not an HTTP request (a trigger's message, an asynchronous
    invocation, another function's ``invoke``): its JSON, else its text; ``{}`` when empty,
    as Lambda's own invoke with no payload gives."""
    body = request.body
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def http_v2(request: Request, path: str, context: Context) -> dict[str, Any]:
    """Payload format 2.0 (HTTP APIs, function URLs): lists joined with commas, cookies apart,
    fields that would be empty left out."""
    headers = {k: v for k, v in request.headers.items() if k != "cookie"}
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": request.query_string,
    }
    cookies = _cookies(request.headers.get("cookie", ""))
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if request.query_string:
        event["queryStringParameters"] = {
            key: ",".join(values) for key, values in request.query_lists.items()
        }
    event["requestContext"] = {
        "accountId": PLACEHOLDER,
        "apiId": PLACEHOLDER,
        **_domain(request),
        "http": {
            "method": request.method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": _source_ip(request),
            "userAgent": request.headers.get("user-agent", ""),
        },
        "requestId": context.invocation_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": _clf_time(now),
        "timeEpoch": int(now * 1000),
    }
    if request.params:
        event["pathParameters"] = dict(request.params)
    _add_body(event, request, omit_empty=True)
    return event


def http_v1(request: Request, path: str, context: Context) -> dict[str, Any]:
    """Payload format 1.0 (REST APIs): single and multi-value maps side by side, ``None``
    where there is nothing."""
    now = time.time()
    lists = request.query_lists if request.query_string else {}
    source_ip = _source_ip(request)
    user_agent = request.headers.get("user-agent", "")
    event: dict[str, Any] = {
        "version": "1.0",
        "resource": path,
        "path": path,
        "httpMethod": request.method,
        "headers": dict(request.headers),
        "multiValueHeaders": {k: [v] for k, v in request.headers.items()},
        # REST APIs give the last value of a repeated parameter here.
        "queryStringParameters": {k: v[-1] for k, v in lists.items()} or None,
        "multiValueQueryStringParameters": {k: list(v) for k, v in lists.items()} or None,
        "requestContext": {
            "accountId": PLACEHOLDER,
            "apiId": PLACEHOLDER,
            **_domain(request),
            "extendedRequestId": context.invocation_id,
            "httpMethod": request.method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": source_ip,
                "user": None,
                "userAgent": user_agent,
                "userArn": None,
            },
            "path": path,
            "protocol": "HTTP/1.1",
            "requestId": context.invocation_id,
            "requestTime": _clf_time(now),
            "requestTimeEpoch": int(now * 1000),
            "resourceId": None,
            "resourcePath": path,
            "stage": "$default",
        },
        "pathParameters": dict(request.params) or None,
        "stageVariables": None,
    }
    _add_body(event, request, omit_empty=False)
    return event


def decode_body(body: str, is_base64: bool) -> bytes:
    """A proxy response's body as bytes."""
    if not is_base64:
        return body.encode("utf-8")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        message = f"isBase64Encoded is true but the body is not base64: {exc}"
        raise InvalidResponse(message) from None


def _add_body(event: dict[str, Any], request: Request, *, omit_empty: bool) -> None:
    body = request.body
    if not body:
        if not omit_empty:
            event["body"] = None
        event["isBase64Encoded"] = False
        return
    if _is_text(request.headers.get("content-type", ""), body):
        event["body"] = body.decode("utf-8")
        event["isBase64Encoded"] = False
    else:
        event["body"] = base64.b64encode(body).decode("ascii")
        event["isBase64Encoded"] = True


def _is_text(content_type: str, body: bytes) -> bool:
    """Text types are passed as text (when they decode); a body with no type at all too when it
    is UTF-8, since curl and most clients label what they send and an unlabelled body is
    usually a hand-written string."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind:
        texty = (
            kind.startswith("text/")
            or kind in _TEXT_TYPES
            or kind.endswith("+json")
            or kind.endswith("+xml")
        )
        if not texty:
            return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _cookies(header: str) -> list[str]:
    return [part.strip() for part in header.split(";") if part.strip()]


def _domain(request: Request) -> dict[str, str]:
    host = request.headers.get("host", PLACEHOLDER).split(":")[0] or PLACEHOLDER
    return {"domainName": host, "domainPrefix": host.split(".")[0]}


def _source_ip(request: Request) -> str:
    return request.headers.get("x-forwarded-for", "127.0.0.1").split(",")[0].strip()


def _clf_time(now: float) -> str:
    """API Gateway's request time, in the common log format (``12/Mar/2020:19:03:58 +0000``)."""
    t = time.gmtime(now)
    # Not strftime's %b: that follows the locale.
    month = _MONTHS[t.tm_mon - 1]
    clock = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    return f"{t.tm_mday:02d}/{month}/{t.tm_year}:{clock} +0000"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
