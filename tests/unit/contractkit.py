"""What the contract tests share: requests and contexts as the instance server builds them.

Each test module makes its own ``request`` and ``context`` with the defaults its platform's
functions expect (``request = request_maker(path="/function/fn")``)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fissile.runtime.context import Context
from fissile.runtime.request import Request


def request_maker(
    method: str = "GET", path: str = "/", host: str | None = None
) -> Callable[..., Request]:
    """A ``request(method, path, query, headers, body, params)`` with these defaults; ``host``
    is added to every request's headers (the router always sends one)."""
    default_method, default_path = method, path

    def request(
        method: str = default_method,
        path: str = default_path,
        query: str = "",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        params: dict[str, str] | None = None,
    ) -> Request:
        sent = {"host": host, **(headers or {})} if host is not None else dict(headers or {})
        return Request(method, path, query, sent, body, params)

    return request


def context_maker(function: str = "fn") -> Callable[..., Context]:
    """A ``context(timeout=10.0)`` of ``function``, with invocation id ``inv-1``."""

    def context(timeout: float = 10.0) -> Context:
        return Context(function, "inv-1", timeout, logging.getLogger(function))

    return context
