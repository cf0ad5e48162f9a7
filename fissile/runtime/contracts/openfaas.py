"""OpenFaaS's Python templates: ``openfaas-http`` is python3-http's ``handle(event, context)``,
``openfaas-flask`` is python3-flask's ``handle(req)``.

Both templates run the handler inside Flask, and so does fissile: the event's headers and query
are Flask's, and what the handler returns is read as the template's ``index.py`` reads it. A
direct call at ``/function/<name>/rest`` is seen at ``/rest``, as OpenFaaS's gateway forwards it.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import flask

from fissile.runtime.context import Context
from fissile.runtime.contracts._flask import FlaskCall
from fissile.runtime.contracts._handler import Handler, Target, required_positional
from fissile.runtime.request import Request
from fissile.runtime.response import Response


class Event:
    """python3-http's first argument."""

    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(self, request: flask.Request) -> None:
        self.body: bytes = request.get_data()
        self.headers = request.headers
        self.method: str = request.method
        self.query = request.args
        self.path: str = request.path

    def __repr__(self) -> str:
        return f"<Event {self.method} {self.path}>"


class TemplateContext:
    """python3-http's second argument: the container's host name there, the instance's here."""

    __slots__ = ("fissile", "hostname")

    def __init__(self, context: Context) -> None:
        self.hostname = os.environ.get("HOSTNAME", "localhost")
        #: fissile's own context (``invoke``, ``publish``, ``logger``)
        self.fissile = context


def bind(target: Target) -> Handler:
    func = target.func
    name = getattr(func, "__name__", repr(func))
    if inspect.iscoroutinefunction(func):
        raise TypeError(f"{name!r} is async; an OpenFaaS handler is a plain def")
    arity = required_positional(func)
    call = FlaskCall(target.function)
    if target.contract == "openfaas-flask":
        if arity != 1:
            raise TypeError(f"{name!r} takes {arity} arguments; python3-flask's is handle(req)")

        def invoke_flask(request: Request, context: Context) -> Response:
            return call.run(request, lambda: func(_body_text()))

        return Handler(func, "openfaas-flask", invoke_flask, is_async=False)
    if arity != 2:
        raise TypeError(
            f"{name!r} takes {arity} arguments; python3-http's is handle(event, context)"
        )

    def invoke_http(request: Request, context: Context) -> Response:
        def view() -> Any:
            return _template_response(func(Event(flask.request), TemplateContext(context)))

        return call.run(request, view)

    return Handler(func, "openfaas-http", invoke_http, is_async=False)


def _body_text() -> str | bytes:
    """The body as text, unless the function sets ``RAW_BODY=true`` (the template's switch)."""
    if os.environ.get("RAW_BODY", "false").lower() in ("true", "1"):
        return flask.request.get_data()
    return flask.request.get_data(as_text=True)


def _template_response(value: Any) -> Any:
    """python3-http's reading of a result: ``None`` is an empty 200; a dict gives
    ``statusCode`` (200), ``headers`` and ``body`` (a dict as JSON, bytes as they are, anything
    else as ``str()``); any other value goes to Flask as it is."""
    if value is None:
        return "", 200
    if not isinstance(value, dict):
        return value
    status = value.get("statusCode", 200)
    body = value.get("body", "")
    if isinstance(body, dict):
        body = flask.jsonify(body)
    elif not isinstance(body, bytes | bytearray):
        body = str(body)
    headers = value.get("headers") or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    return body, status, headers
