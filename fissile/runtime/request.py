"""The request a native-style function receives."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs


class Request:
    """An HTTP request as the router delivered it.

    ``headers`` keys are lower-case. ``params`` holds the route's path parameters.
    """

    __slots__ = ("_query", "body", "headers", "method", "params", "path", "query_string")

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: dict[str, str],
        body: bytes,
        params: dict[str, str] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.body = body
        self.params = params if params is not None else {}
        self._query: dict[str, list[str]] | None = None

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, the first value of each."""
        return {key: values[0] for key, values in self.query_lists.items()}

    @property
    def query_lists(self) -> dict[str, list[str]]:
        """Query parameters with every value."""
        if self._query is None:
            self._query = parse_qs(self.query_string, keep_blank_values=True)
        return self._query

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"
