"""Fission's python environment: a zero-argument ``main()`` that reads ``flask.request``.

Fission's server imports the function while it answers ``/v2/specialize``, inside its Flask
application: module-level code may use ``current_app`` (``current_app.template_folder = ...``)
and ``flask.request``. Each instance gets its own application, used for that import and then for
every request.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import sys
import types
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from fissile.runtime.context import Context
from fissile.runtime.contracts._handler import Handler, Invoke, Target, required_positional
from fissile.runtime.loader import LoadError, load_entry
from fissile.runtime.request import Request
from fissile.runtime.response import Response, to_response

HTML_TYPE = "text/html; charset=utf-8"

try:
    import flask
except ImportError:  # pragma: no cover - Flask is a dependency of the python environment
    flask = None  # type: ignore[assignment]


def _new_app() -> Any:
    # An explicit root_path: without one Flask searches sys.path for a module named like the app.
    return None if flask is None else flask.Flask("fissile", root_path=os.sep)


# Built when the zygote imports the runtime (~0.5 ms, paid once): each forked instance then owns
# a copy, rooted and named at specialization, instead of building one on its cold start.
_spare: Any = _new_app()
# The application the function was imported in, for ``bind`` to answer its requests with.
_imported: Any = None


def _take_app(deploy_dir: str | None) -> Any:
    global _spare
    app, _spare = _spare, None
    if app is None:
        app = _new_app()
        if app is None:
            return None
    app.root_path = deploy_dir or os.getcwd()
    return app


def load(deploy_dir: str, entrypoint: str, *, package_first: bool) -> tuple[Any, ModuleType]:
    """``load_entry`` for a function that may be Fission's: with ``package_first`` false (the
    ``fission`` contract) the import always runs inside the function's Flask app, as Fission's
    server does while answering ``POST /v2/specialize``; otherwise (``auto``) only when the
    plain import failed for want of one (an application or request context costs ~1.5 ms of a
    cold start, mostly pages of the zygote copied on first touch)."""
    if package_first:
        try:
            return load_entry(deploy_dir, entrypoint, package_first=True)
        except LoadError as exc:
            if not _outside_context(exc):
                raise
    global _imported
    _imported = app = _take_app(deploy_dir)
    if app is None:
        return load_entry(deploy_dir, entrypoint, package_first=package_first)
    body = json.dumps({"filepath": deploy_dir, "functionName": entrypoint}).encode()
    specialize = Request("POST", "/v2/specialize", "", {"content-type": "application/json"}, body)
    with app.request_context(_environ(specialize)):
        return load_entry(deploy_dir, entrypoint, package_first=package_first)


def _outside_context(exc: BaseException) -> bool:
    """Whether an import failed on Flask's "Working outside of application/request context"."""
    cause = exc.__cause__
    return isinstance(cause, RuntimeError) and str(cause).startswith("Working outside of")


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
    global _imported
    app, _imported = _imported or _take_app(target.deploy_dir), None
    if app is not None:
        # The name the app was built with, already cached by Flask (its logger's name).
        app.import_name = app.name = target.function
    return Handler(func, "fission", _fission_invoke(func, app))


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


def _fission_invoke(func: Callable[..., Any], app: Any) -> Invoke:
    """Run ``func`` inside a Flask request context, as Fission's python environment does."""
    if app is None:
        # Without Flask a zero-argument function can still run; it just cannot read a request.
        return lambda request, context: func()
    from werkzeug.exceptions import HTTPException

    if inspect.iscoroutinefunction(func):

        async def invoke_async(request: Request, context: Context) -> Any:
            with app.request_context(_environ(request)):
                try:
                    value = await func()
                except HTTPException as exc:
                    # abort(404), a missing form field (400): Flask's own answer.
                    value = app.handle_user_exception(exc)
                return _from_flask(app.make_response(value))

        return invoke_async

    def invoke(request: Request, context: Context) -> Any:
        with app.request_context(_environ(request)):
            try:
                value = func()
            except HTTPException as exc:
                value = app.handle_user_exception(exc)
            return _from_flask(app.make_response(value))

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


def _warm(app: Any) -> None:
    """Pay in the zygote what a first request context costs (importing the idna codec,
    compiling the URL map: ~3 ms), not in each instance's cold start."""
    if app is not None:
        with app.request_context(_environ(Request("GET", "/", "", {}, b""))):
            pass


_warm(_spare)
