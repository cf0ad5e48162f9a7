"""What every contract produces: a loaded function bound to the way it is called."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from fissile.runtime.context import Context
from fissile.runtime.request import Request
from fissile.runtime.response import Response, to_response

Invoke = Callable[[Request, Context], Any]


@dataclass
class Target:
    """What a contract binds: the object at the entrypoint and where it came from."""

    func: Any
    function: str
    contract: str
    deploy_dir: str | None = None
    #: modules the function's import brought in (newest first)
    loaded: Sequence[str] = ()
    module: ModuleType | None = None
    #: the route prefix the function is mounted under, for whole apps (ASGI/WSGI root_path)
    options: dict[str, Any] = field(default_factory=dict)


class Handler:
    """A loaded function bound to its contract.

    ``invoke(request, context)`` returns what ``to_response`` accepts (or an awaitable of it
    when ``is_async``). ``startup``, when set, runs once on the instance's loop before the
    first request (an ASGI app's lifespan). ``websocket``, set by contracts that serve
    websockets, gives an upgrade request's ASGI app and ``websocket`` scope."""

    def __init__(
        self,
        func: Any,
        contract: str,
        invoke: Invoke,
        *,
        is_async: bool | None = None,
        startup: Callable[[], Awaitable[None]] | None = None,
        websocket: Callable[[Request], tuple[Any, dict[str, Any]]] | None = None,
    ) -> None:
        self.func = func
        self.contract = contract
        self.is_async = (
            inspect.iscoroutinefunction(invoke) or inspect.iscoroutinefunction(func)
            if is_async is None
            else is_async
        )
        self.startup = startup
        self.websocket = websocket
        self._invoke = invoke

    def call(self, request: Request, context: Context) -> Response:
        """Run a sync function."""
        return to_response(self._invoke(request, context))

    async def call_async(self, request: Request, context: Context) -> Response:
        """Run an ``async def`` function."""
        return to_response(await self._invoke(request, context))


def required_positional(func: Callable[..., Any]) -> int:
    """How many positional arguments ``func`` needs (1 when its signature cannot be read)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return 1
    count = 0
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            if parameter.default is parameter.empty:
                count += 1
        elif parameter.kind is parameter.VAR_POSITIONAL:
            return max(count, 1)
    return count
