"""Calling a function object (or a function's code) in the test's own process, the way the
instance server calls it: the runtime's own contract binding (``fissile.runtime.contracts``)
and response encoding (``fissile.runtime.response``), without a socket in between."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from fissile.runtime.context import Context
from fissile.runtime.contracts import AUTO, Handler, bind
from fissile.runtime.request import Request
from fissile.runtime.response import BYTES_TYPE, TEXT_TYPE, Response, encode_chunk
from fissile.testing._context import make_context
from fissile.testing._requests import make_request
from fissile.testing._result import Result

Target = Any  # a callable, or the path of a function's code (a .py file or a directory)


def call(
    function: Any,
    request: Request | None = None,
    context: Context | None = None,
    *,
    raise_errors: bool = True,
) -> Result:
    """Call a native function (``main(request)`` or ``main(request, context)``, sync or
    ``async def``) and return its encoded response. ``request`` defaults to ``GET /``,
    ``context`` to ``make_context()``. An exception the function raises propagates; with
    ``raise_errors=False`` it becomes the platform's ``500 function_error`` answer instead.
    From inside a running event loop (an async test) use ``await call_async(...)``."""
    return call_contract(function, request, context, contract="native", raise_errors=raise_errors)


async def call_async(
    function: Any,
    request: Request | None = None,
    context: Context | None = None,
    *,
    contract: str = "native",
    raise_errors: bool = True,
) -> Result:
    """``call`` (or, with ``contract``, ``call_contract``) for async tests."""
    name = context.function if context is not None else _name(function)
    if isinstance(function, str | os.PathLike):
        with _in_directory(_deploy_dir(function)):
            handler = _bind(function, contract, name)
            return await _run_async(handler, request, context, name, raise_errors)
    return await _run_async(_bind(function, contract, name), request, context, name, raise_errors)


def call_fission(
    main: Any,
    request: Request | None = None,
    context: Context | None = None,
    *,
    raise_errors: bool = True,
) -> Result:
    """Call a Fission-style ``main()`` inside a Flask request context built from ``request``,
    as fissile's ``fission`` contract does; its return value is read by Flask's
    ``make_response``."""
    return call_contract(main, request, context, contract="fission", raise_errors=raise_errors)


def call_contract(
    target: Target,
    request: Request | None = None,
    context: Context | None = None,
    *,
    contract: str = AUTO,
    entrypoint: str = "main",
    raise_errors: bool = True,
) -> Result:
    """Call ``target`` through the contract adapter the runtime would use: ``auto`` detects it
    as an instance does; or name one (``native``, ``fission``, ``lambda``, ``gcf``,
    ``openfaas-http``, ``asgi``, ``wsgi``, ...). ``target`` is the function object, or the
    path of its code (a ``.py`` file, or a directory with ``entrypoint``): that code is then
    imported into the test's process, as the instance would import it (use ``invoke_local``
    to keep it out)."""
    name = context.function if context is not None else _name(target)
    if isinstance(target, str | os.PathLike):
        with _in_directory(_deploy_dir(target)):
            handler = _bind(target, contract, name, entrypoint)
            return _run(handler, request, context, name, raise_errors)
    return _run(_bind(target, contract, name, entrypoint), request, context, name, raise_errors)


@contextlib.contextmanager
def flask_request(method: str = "GET", path: str = "/", **options: Any) -> Iterator[Any]:
    """A Flask request context as the ``fission`` contract builds one (same WSGI environ),
    for calling a zero-argument ``main()`` directly; yields ``flask.request``. ``options`` are
    ``make_request``'s (``body``, ``json``, ``headers``, ``params``, ``query``)."""
    import flask

    from fissile.runtime.contracts import fission

    request = make_request(method, path, **options)
    app = fission._new_app()
    with app.request_context(fission._environ(request)):
        yield flask.request


# -- binding -------------------------------------------------------------------------------


def _name(target: Target) -> str:
    if isinstance(target, str | os.PathLike):
        return Path(target).stem or "fn"
    return "fn"


def _deploy_dir(target: str | os.PathLike[str]) -> str:
    path = Path(target).resolve()
    return str(path.parent if path.is_file() else path)


def _bind(target: Target, contract: str, name: str, entrypoint: str = "main") -> Handler:
    if not isinstance(target, str | os.PathLike):
        return bind(target, name, contract=contract, module=inspect.getmodule(target))
    from fissile.runtime.contracts import fission
    from fissile.runtime.loader import load_entry
    from fissile.runtime.server import _PACKAGE_LAST, _modules_mark, _modules_since

    path = Path(target).resolve()
    if path.is_file():
        entrypoint = f"{path.stem}.{entrypoint}" if "." not in entrypoint else entrypoint
    deploy_dir = _deploy_dir(target)
    mark = _modules_mark()
    load = fission.load if contract in (AUTO, "fission") else load_entry
    func, module = load(deploy_dir, entrypoint, package_first=contract not in _PACKAGE_LAST)
    # The entrypoint's module counts as loaded even when the test imported it first.
    loaded = [*_modules_since(mark), module.__name__]
    return bind(func, name, deploy_dir, loaded, contract, module)


@contextlib.contextmanager
def _in_directory(directory: str) -> Iterator[None]:
    # The runtime runs a function in its deploy directory; the test's own goes back after.
    cwd = os.getcwd()
    try:
        os.chdir(directory)
        yield
    finally:
        os.chdir(cwd)


# -- running -------------------------------------------------------------------------------


def _run(
    handler: Handler,
    request: Request | None,
    context: Context | None,
    name: str,
    raise_errors: bool,
) -> Result:
    if handler.is_async or handler.startup is not None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_run_async(handler, request, context, name, raise_errors))
        raise RuntimeError("inside a running event loop: use `await call_async(...)`")
    request = request if request is not None else make_request()
    context = context if context is not None else make_context(name)
    try:
        response = handler.call(request, context)
        if isinstance(response.stream, AsyncIterator):
            return asyncio.run(_collect_async(response))
        return _collect(response)
    except Exception as exc:
        if raise_errors:
            raise
        return _as_result(_failure(context.function, exc))


async def _run_async(
    handler: Handler,
    request: Request | None,
    context: Context | None,
    name: str,
    raise_errors: bool,
) -> Result:
    request = request if request is not None else make_request()
    context = context if context is not None else make_context(name)
    try:
        if handler.startup is not None:
            await handler.startup()
        if handler.is_async:
            response = await handler.call_async(request, context)
        else:
            response = handler.call(request, context)
        return await _collect_async(response)
    except Exception as exc:
        if raise_errors:
            raise
        return _as_result(_failure(context.function, exc))


def _failure(function: str, exc: Exception) -> Response:
    from fissile.runtime.server import _failed

    return _failed(function, exc)


def _as_result(response: Response, chunks: list[Any] | None = None) -> Result:
    headers = [(k.lower(), v) for k, v in response.headers]
    if chunks is None:
        return Result(response.status, headers, response.body)
    # A streamed body's default type follows from its first item, as the server's does.
    if chunks and not any(k == "content-type" for k, _ in headers):
        headers.append(("content-type", TEXT_TYPE if isinstance(chunks[0], str) else BYTES_TYPE))
    return Result(response.status, headers, b"".join(encode_chunk(c) for c in chunks))


def _collect(response: Response) -> Result:
    if response.stream is None:
        return _as_result(response)
    assert isinstance(response.stream, Iterator)
    return _as_result(response, list(response.stream))


async def _collect_async(response: Response) -> Result:
    stream = response.stream
    if isinstance(stream, AsyncIterator):
        return _as_result(response, [item async for item in stream])
    return _collect(response)
