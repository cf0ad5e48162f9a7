"""A ``Context`` whose calls to other functions and topics stay in the test: ``invoke`` answers
from scripted replies, ``publish`` and the logger record what the function did."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from fissile.runtime.context import Context, Query, Reply, _encode, encode_call, invoke_target


@dataclass(frozen=True)
class Invocation:
    """One ``context.invoke`` call: the function called and the request it would have sent
    (``path`` as the callee sees it, ``query`` parsed, ``headers`` with lower-case names)."""

    function: str
    data: Any
    body: bytes
    content_type: str
    method: str = "POST"
    path: str = "/"
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, target: str, method: str, headers: Mapping[str, str], data: Any, body: bytes
    ) -> Invocation:
        """The call a platform socket request ``method /invoke/<function>[/path][?query]``
        makes."""
        url = urlsplit(target)
        name, slash, rest = url.path[len("/invoke/") :].partition("/")
        lowered = {k.lower(): v for k, v in headers.items()}
        kind = lowered.get("content-type", "")
        query = parse_qs(url.query, keep_blank_values=True)
        return cls(unquote(name), data, body, kind, method, slash + rest or "/", query, lowered)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Published:
    """One ``context.publish`` call."""

    topic: str
    data: Any
    body: bytes
    content_type: str
    mqtype: str = "embedded"
    broker_url: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


#: What a scripted reply may be: a ``Reply``; ``(status, body)`` or ``(status, body, headers)``;
#: a body alone (bytes, str, or JSON-serializable: 200); or a callable of the ``Invocation``
#: returning one of those (or raising, as a platform out of reach would:
#: ``fissile.runtime.context.PlatformError``). Scripted under the function's name, or under
#: ``"METHOD name /path"`` for one method and path of it (which wins).
ReplyLike = Reply | tuple[Any, ...] | bytes | str | dict[str, Any] | list[Any] | None
Scripted = ReplyLike | Callable[[Invocation], ReplyLike]


class _Records(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class FakeContext(Context):
    """A ``fissile.Context`` for unit tests (see ``make_context``).

    ``replies[name]`` (or ``replies["GET name /items/1"]``) scripts what ``invoke(name, ...)``
    returns; a function without one answers 404 ``function_not_found``, as the platform
    does. ``invocations``, ``published``
    and ``logs`` (``logging.LogRecord`` objects) record what the function did."""

    def __init__(
        self,
        function: str = "fn",
        invocation_id: str = "test-invocation",
        timeout: float = 60.0,
        *,
        replies: dict[str, Scripted] | None = None,
        chain_id: str = "",
        chain_depth: int = 0,
    ) -> None:
        self.logs: list[logging.LogRecord] = []
        # Not from logging.getLogger: a registered logger (and its handler) would outlive the
        # test and collect the next test's records too.
        logger = logging.Logger(function, logging.DEBUG)
        logger.parent = logging.getLogger()  # records still reach pytest's caplog
        logger.addHandler(_Records(self.logs))
        super().__init__(function, invocation_id, timeout, logger, chain_id, chain_depth)
        self.replies: dict[str, Scripted] = dict(replies or {})
        self.invocations: list[Invocation] = []
        self.published: list[Published] = []

    @property
    def messages(self) -> list[str]:
        """The logged messages, formatted."""
        return [record.getMessage() for record in self.logs]

    def invoke(
        self,
        function: str,
        data: Any = None,
        *,
        method: str = "POST",
        path: str = "/",
        query: Query | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content_type: str | None = None,
    ) -> Reply:
        body, sent = encode_call(data, json, content_type, headers)
        target = invoke_target(function, path, query)
        call = Invocation.of(target, method.upper(), sent, data if json is None else json, body)
        self.invocations.append(call)
        return answer(self.replies, call)

    def publish(
        self,
        topic: str,
        data: Any,
        *,
        mqtype: str = "embedded",
        broker_url: str | None = None,
        content_type: str | None = None,
    ) -> None:
        body, kind = _encode(data, content_type)
        self.published.append(Published(topic, data, body, kind, mqtype, broker_url))

    def __repr__(self) -> str:
        return f"<FakeContext {self.function} {self.invocation_id}>"


_MISSING: Any = object()


def answer(replies: dict[str, Scripted], call: Invocation) -> Reply:
    """The reply scripted for ``call`` in ``replies``; 404 ``function_not_found`` (the
    platform's answer) for a function without one."""
    scripted = replies.get(f"{call.method} {call.function} {call.path}", _MISSING)
    if scripted is _MISSING:
        scripted = replies.get(call.function, _MISSING)
    if scripted is _MISSING:
        message = f"function {call.function!r} not found (no reply scripted)"
        return _reply((404, {"error": {"code": "function_not_found", "message": message}}))
    if callable(scripted):
        scripted = scripted(call)
    return _reply(scripted)


def _reply(value: ReplyLike) -> Reply:
    if isinstance(value, Reply):
        return value
    status, headers = 200, {}
    if isinstance(value, tuple):
        if len(value) not in (2, 3) or not isinstance(value[0], int):
            raise TypeError("a scripted reply tuple is (status, body) or (status, body, headers)")
        status, value, *rest = value
        headers = {k.lower(): v for k, v in (rest[0] if rest else {}).items()}
    body, kind = _encode(value, headers.get("content-type"))
    if body:
        headers.setdefault("content-type", kind)
    return Reply(status, headers, body)


def make_context(
    function: str = "fn",
    *,
    invocation_id: str = "test-invocation",
    timeout: float = 60.0,
    replies: dict[str, Scripted] | None = None,
    chain_id: str = "",
    chain_depth: int = 0,
) -> FakeContext:
    """A context for calling a native function in a unit test: ``context.remaining()`` counts
    down from ``timeout``; ``invoke``, ``publish`` and the logger are recorded."""
    return FakeContext(
        function,
        invocation_id,
        timeout,
        replies=replies,
        chain_id=chain_id,
        chain_depth=chain_depth,
    )
