"""What a function may return, and how each shape becomes an HTTP response."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
BYTES_TYPE = "application/octet-stream"


Headers = Mapping[str, str] | Iterable[tuple[str, str]]


class Response:
    """An explicit response: body, status and headers (a dict, or a list of ``(name, value)``
    pairs when a header repeats, like ``set-cookie``)."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        body: Any = b"",
        status: int = 200,
        headers: Headers | None = None,
        content_type: str | None = None,
    ) -> None:
        payload, default_type = encode_body(body)
        self.body = payload
        self.status = status
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        self.headers: list[tuple[str, str]] = [(str(k), str(v)) for k, v in pairs]
        if content_type is not None:
            self.headers = [(k, v) for k, v in self.headers if k.lower() != "content-type"]
            self.headers.append(("content-type", content_type))
        elif default_type and not any(k.lower() == "content-type" for k, _ in self.headers):
            self.headers.append(("content-type", default_type))

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)} bytes>"


def encode_body(body: Any) -> tuple[bytes, str | None]:
    """Bytes and a default content type for a returned value."""
    if body is None:
        return b"", None
    if isinstance(body, bytes):
        return body, BYTES_TYPE
    if isinstance(body, bytearray | memoryview):
        return bytes(body), BYTES_TYPE
    if isinstance(body, str):
        return body.encode("utf-8"), TEXT_TYPE
    return json.dumps(body, default=str).encode("utf-8"), JSON_TYPE


def to_response(value: Any) -> Response:
    """Turn a function's return value into a ``Response``.

    dict/list/number -> JSON; str -> text; bytes -> octet-stream; None -> 204;
    ``(body, status)`` or ``(body, status, headers)``; or a ``Response`` as is.
    """
    if isinstance(value, Response):
        return value
    if isinstance(value, tuple):
        if len(value) == 2:
            body, status = value
            return Response(body, _status(status))
        if len(value) == 3:
            body, status, headers = value
            if not isinstance(headers, Mapping):
                raise TypeError("the third item of a returned tuple must be a dict of headers")
            return Response(body, _status(status), headers)
        raise TypeError("return (body, status) or (body, status, headers)")
    if value is None:
        return Response(None, 204)
    return Response(value)


def _status(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise TypeError(f"status must be an integer from 100 to 599, not {value!r}")
    return value
