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
    """(module, name) of the first parameter's annotation, resolving string annotations
    (``from __future__ import annotations``) in the function's globals."""
    try:
        signature = inspect.signature(func, eval_str=True)
    except Exception:
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError):
            return None
    parameters = list(signature.parameters.values())
    if not parameters:
        return None
    annotation = parameters[0].annotation
    if annotation is inspect.Parameter.empty or isinstance(annotation, str):
        return None
    module = getattr(annotation, "__module__", "")
    name = getattr(annotation, "__qualname__", "")
    if (module, name) in _FASTAPI_REQUESTS | _FLASK_REQUESTS:
        return module, name
    # Subclasses and re-exports: fastapi.Request is starlette.requests.Request's subclass.
    for base in getattr(annotation, "__mro__", ())[1:]:
        pair = (getattr(base, "__module__", ""), getattr(base, "__qualname__", ""))
        if pair in _FASTAPI_REQUESTS | _FLASK_REQUESTS:
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
