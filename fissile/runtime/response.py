"""What a function may return, and how each shape becomes an HTTP response."""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import pathlib
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
BYTES_TYPE = "application/octet-stream"


Headers = Mapping[str, str] | Iterable[tuple[str, str]]
Stream = Iterator[Any] | AsyncIterator[Any]
# Bodies encoded whole, told apart by their exact type (cheaper than the iterator ABCs).
_WHOLE = frozenset({bytes, str, dict, list, type(None), int, float, bool})


class InvalidResponse(TypeError):
    """A function returned something fissile cannot send: the caller gets 500
    ``invalid_response`` naming its type, never the object's repr."""


# Values inside a JSON body that have one obvious text form.
_AS_TEXT = (datetime.date, datetime.time, decimal.Decimal, uuid.UUID, pathlib.PurePath)


def _json_default(value: Any) -> Any:
    if isinstance(value, _AS_TEXT):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return list(value)
    kind = type(value)
    raise InvalidResponse(
        f"cannot encode a {kind.__module__}.{kind.__qualname__} as a response body; return"
        " str, bytes, a dict or list of JSON values, None, a fissile Response, an iterator of"
        " chunks, or the response type of the function's contract (see --contract)"
    )


class Response:
    """An explicit response: body, status and headers (a dict, or a list of ``(name, value)``
    pairs when a header repeats, like ``set-cookie``).

    A body that is an iterator or an async iterator (a generator, an async generator) is
    streamed: ``stream`` holds it, ``body`` stays empty, and each item (bytes or str) goes out
    as it is produced."""

    __slots__ = ("body", "headers", "status", "stream")

    def __init__(
        self,
        body: Any = b"",
        status: int = 200,
        headers: Headers | None = None,
        content_type: str | None = None,
    ) -> None:
        self.stream: Stream | None = None
        if type(body) not in _WHOLE and isinstance(body, Iterator | AsyncIterator):
            # Its content type, when not given, follows from its first item.
            self.stream = body
            payload, default_type = b"", None
        else:
            payload, default_type = encode_body(body)
        self.body = payload
        self.status = status
        if headers is None:
            # Most returns carry no headers: skip the ABC check and the copies below.
            self.headers: list[tuple[str, str]] = []
        else:
            pairs = headers.items() if isinstance(headers, Mapping) else headers
            self.headers = [(str(k), str(v)) for k, v in pairs]
        if content_type is not None:
            if self.headers:
                self.headers = [(k, v) for k, v in self.headers if k.lower() != "content-type"]
            self.headers.append(("content-type", content_type))
        elif default_type and not any(k.lower() == "content-type" for k, _ in self.headers):
            self.headers.append(("content-type", default_type))

    def __repr__(self) -> str:
        if self.stream is not None:
            return f"<Response {self.status} streamed>"
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
    return json.dumps(body, default=_json_default).encode("utf-8"), JSON_TYPE


def to_response(value: Any) -> Response:
    """Turn a function's return value into a ``Response``.

    dict/list/number -> JSON; str -> text; bytes -> octet-stream; None -> 204;
    an iterator or async iterator of bytes/str (a generator) -> a streamed body;
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
                raise InvalidResponse("a returned tuple's third item must be a dict of headers")
            return Response(body, _status(status), headers)
        raise InvalidResponse("return (body, status) or (body, status, headers)")
    if value is None:
        return Response(None, 204)
    return Response(value)


def _status(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise InvalidResponse(f"status must be an integer from 100 to 599, not {value!r}")
    return value


def encode_chunk(item: Any) -> bytes:
    """One item of a streamed body as bytes: str as UTF-8, bytes-like as is."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, bytearray | memoryview):
        return bytes(item)
    raise InvalidResponse(f"a streamed body yields bytes or str, not {type(item).__name__}")
