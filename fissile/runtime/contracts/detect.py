"""``auto``: which contract a function was written for, from signals that cannot mislead.

A signal counts only when no other platform's function could carry it by accident: a type
annotation naming a framework's request class, a framework's registration decorator, an ASGI
or WSGI callable, a platform's documented default handler name with its exact parameters.
Everything else is ``native``.
"""

from __future__ import annotations

import inspect
import sys
from types import ModuleType
from typing import Any

from fissile.runtime.contracts._handler import required_positional

_FASTAPI_REQUESTS = {
    ("fastapi", "Request"),
    ("fastapi.requests", "Request"),
    ("starlette.requests", "Request"),
}
_FLASK_REQUESTS = {("flask", "Request"), ("flask.wrappers", "Request")}


def detect(func: Any, module: ModuleType | None = None) -> str:
    """The contract ``func`` was written for; ``native`` when nothing is certain."""
    if _registered_with_functions_framework(func):
        return "gcf"
    names = _parameter_names(func)
    if names is None:
        return "native"
    if _is_asgi(func, names):
        return "asgi"
    if names[:2] == ["environ", "start_response"]:
        return "wsgi"
    first = _first_annotation(func)
    if first in _FASTAPI_REQUESTS:
        return "fission-fastapi"
    if first in _FLASK_REQUESTS:
        return "gcf"
    if required_positional(func) == 0 and not names:
        return "fission"
    func_name = getattr(func, "__name__", "")
    module_name = getattr(module, "__name__", "")
    if func_name == "lambda_handler" and names == ["event", "context"]:
        return "lambda"
    if module_name == "handler" and func_name == "handle":
        if names == ["event", "context"]:
            return "openfaas-http"
        if names == ["req"]:
            return "openfaas-flask"
    return "native"


def _parameter_names(func: Any) -> list[str] | None:
    """The positional parameters of ``func`` (of its ``__call__`` for an object)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    return [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def _is_asgi(func: Any, names: list[str]) -> bool:
    if names != ["scope", "receive", "send"]:
        return False
    call = func if inspect.isfunction(func) or inspect.ismethod(func) else type(func).__call__
    return inspect.iscoroutinefunction(call)


def _first_annotation(func: Any) -> tuple[str, str] | None:
    """(module, name) of the first parameter's annotation. A string annotation (``from
    __future__ import annotations``) is evaluated in the function's globals; one that cannot
    be (a name imported inside a function) counts only if spelled with its module."""
    try:
        parameters = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    if not parameters:
        return None
    annotation = parameters[0].annotation
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        try:
            # As inspect.signature(eval_str=True) would; the function's own code, in its own
            # instance, whose module was just imported anyway.
            annotation = eval(annotation, getattr(func, "__globals__", {}))
        except Exception:
            return _SPELLED.get(annotation.replace(" ", ""))
    return _request_class(annotation)


_SPELLED = {
    "fastapi.Request": ("fastapi", "Request"),
    "fastapi.requests.Request": ("fastapi.requests", "Request"),
    "starlette.requests.Request": ("starlette.requests", "Request"),
    "flask.Request": ("flask", "Request"),
}


def _request_class(annotation: Any) -> tuple[str, str] | None:
    # Subclasses and re-exports count: fastapi.Request is starlette.requests.Request.
    for cls in getattr(annotation, "__mro__", ()):
        pair = (getattr(cls, "__module__", ""), getattr(cls, "__qualname__", ""))
        if pair in _FASTAPI_REQUESTS or pair in _FLASK_REQUESTS:
            return pair
    return None


def _registered_with_functions_framework(func: Any) -> bool:
    """``@functions_framework.http`` / ``.cloud_event`` record the function in the framework's
    registry by name."""
    registry = sys.modules.get("functions_framework._function_registry")
    if registry is None:
        return False
    names = getattr(registry, "REGISTRY_MAP", {})
    return getattr(func, "__name__", None) in names
