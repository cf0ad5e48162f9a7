"""What a function answered, as a test reads it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    """A function's response: ``status``, ``headers`` (name/value pairs in order, names
    lower-cased; a name may repeat, like ``set-cookie``) and the whole ``body``."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (any case)."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k == wanted), default)

    @property
    def content_type(self) -> str:
        return self.header("content-type") or ""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __repr__(self) -> str:
        return f"<Result {self.status} {self.content_type or '-'} {len(self.body)} bytes>"
