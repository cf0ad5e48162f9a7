"""Requests as the router hands them to a function, built from a test's few words."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from fissile.runtime.request import Request

_UNSET: Any = object()


def make_request(
    method: str = "GET",
    path: str = "/",
    *,
    body: bytes | str | None = None,
    json: Any = _UNSET,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    query: Mapping[str, str | list[str]] | str | None = None,
) -> Request:
    """A ``fissile.Request`` like the one the instance server builds.

    ``path`` may carry a query (``/items?page=2``); ``query`` adds to it (a dict, or a raw
    string). ``json`` sets the body and ``content-type: application/json``; ``body`` may be
    text. Header names are lower-cased, as the server does; ``content-length`` is set, as the
    router always sends it. ``params`` are the route's path parameters."""
    if body is not None and json is not _UNSET:
        raise TypeError("give body or json, not both")
    sent = {key.lower(): value for key, value in (headers or {}).items()}
    if json is not _UNSET:
        payload = jsonlib.dumps(json).encode()
        sent.setdefault("content-type", "application/json")
    elif isinstance(body, str):
        payload = body.encode()
    else:
        payload = body or b""
    sent.setdefault("content-length", str(len(payload)))
    path, _, query_string = path.partition("?")
    if query:
        extra = query if isinstance(query, str) else urlencode(query, doseq=True)
        query_string = f"{query_string}&{extra}" if query_string else extra
    return Request(method.upper(), path or "/", query_string, sent, payload, dict(params or {}))
