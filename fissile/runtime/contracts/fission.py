"""Fission's python environment: a zero-argument ``main()`` that reads ``flask.request``."""

from __future__ import annotations

import inspect
import io
import os
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any

from fissile.runtime.context import Context
from fissile.runtime.contracts._handler import Handler, Invoke, Target, required_positional
from fissile.runtime.request import Request
from fissile.runtime.response import Response, to_response

HTML_TYPE = "text/html; charset=utf-8"


def bind(target: Target) -> Handler:
    func = target.func
    arity = required_positional(func)
    if arity != 0:
        raise TypeError(
            f"{getattr(func, '__name__', func)!r} takes {arity} arguments;"
            " a Fission function is main() and reads flask.request"
        )
    if target.deploy_dir is not None and not _package_uses_flask(target.deploy_dir, target.loaded):
        return Handler(func, "fission", _plain_invoke(func))
    return Handler(func, "fission", _fission_invoke(func, target.function))


_FLASK_PACKAGES = ("flask", "werkzeug")


def _package_uses_flask(deploy_dir: str, loaded: Iterable[str]) -> bool:
    """Whether any module loaded from the package refers to Flask. Building a Flask request
    context costs about half the throughput of a hello function, so a zero-argument function
    that never reads ``flask.request`` is called directly (with Flask's return conventions)."""
    root = os.path.realpath(deploy_dir) + os.sep
    # Only the modules the function's import added: resolving the path of every module the
    # zygote preloaded (~365) cost ~5 ms of each cold start.
    for name in loaded:
        module = sys.modules.get(name)
        location = getattr(module, "__file__", None)
        if not location or not os.path.realpath(location).startswith(root):
            continue
        for value in vars(module).values():
            if isinstance(value, types.ModuleType):
                owner = value.__name__
            else:
                owner = getattr(value, "__module__", None) or type(value).__module__
            if isinstance(owner, str) and owner.split(".")[0] in _FLASK_PACKAGES:
                return True
        for value in vars(module).values():
            code = getattr(value, "__code__", None)
            if code is not None and set(code.co_names) & set(_FLASK_PACKAGES):
                return True
    return False


def _plain_invoke(func: Callable[..., Any]) -> Invoke:
    if inspect.iscoroutinefunction(func):

        async def invoke_async(request: Request, context: Context) -> Any:
            return _flask_like(await func())

        return invoke_async
    return lambda request, context: _flask_like(func())


def _flask_like(value: Any) -> Any:
    """Flask's reading of a return value, for functions that run without Flask: text and bytes
    are HTML, ``None`` is an error."""
    if type(value) is str or type(value) is bytes:
        # The common bare return: the same Response as the general path below builds, without
        # the throwaway ``Response("")`` and header filtering it needs for tuples (~1.5 µs).
        return Response(value, content_type=HTML_TYPE)
    body, rest = (value[0], value[1:]) if isinstance(value, tuple) and value else (value, ())
    if body is None:
        raise TypeError("the function returned None; Fission-style functions must return a value")
    if not isinstance(body, str | bytes | bytearray):
        return value
    # Status and headers are read as for any tuple (and checked there); only the default
    # content type differs from the native contract's.
    shape = to_response(("", *rest)) if rest else Response("")
    typed = len(rest) > 1 and any(str(k).lower() == "content-type" for k in dict(rest[1]))
    headers = [(k, v) for k, v in shape.headers if typed or k.lower() != "content-type"]
    return Response(body, shape.status, headers, content_type=None if typed else HTML_TYPE)


def _fission_invoke(func: Callable[..., Any], function_name: str) -> Invoke:
    """Run ``func`` inside a Flask request context, as Fission's python environment does."""
    try:
        import flask
    except ImportError:
        # Without Flask a zero-argument function can still run; it just cannot read a request.
        return lambda request, context: func()

    app = flask.Flask(function_name)

    if inspect.iscoroutinefunction(func):

        async def invoke_async(request: Request, context: Context) -> Any:
            with app.request_context(_environ(request)):
                return _from_flask(app.make_response(await func()))

        return invoke_async

    def invoke(request: Request, context: Context) -> Any:
        with app.request_context(_environ(request)):
            return _from_flask(app.make_response(func()))

    return invoke


def _from_flask(response: Any) -> Response:
    # A list, not a dict: Flask responses may repeat headers (two Set-Cookie lines).
    headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
    return Response(response.get_data(), response.status_code, headers)


def _environ(request: Request) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": request.path,
        "QUERY_STRING": request.query_string,
        "SERVER_NAME": "fissile",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": request.headers.get("x-forwarded-for", "127.0.0.1").split(",")[0],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.headers.get("x-forwarded-proto", "http"),
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(request.body)),
    }
    for key, value in request.headers.items():
        if key == "content-type":
            environ["CONTENT_TYPE"] = value
        elif key == "host":
            environ["HTTP_HOST"] = value
            environ["SERVER_NAME"] = value.split(":")[0]
        elif key != "content-length":
            environ["HTTP_" + key.upper().replace("-", "_")] = value
    return environ
