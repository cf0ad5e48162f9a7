"""Running a platform's Flask-based function: a request context built from fissile's request,
under the path the platform's own URL would show, and Flask's reading of what it returns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from fissile.runtime.contracts._calls import split_path
from fissile.runtime.contracts.fission import _environ, _from_flask
from fissile.runtime.request import Request
from fissile.runtime.response import Response


class FlaskCall:
    """One Flask app per function, its views being the function's calls."""

    def __init__(self, function: str) -> None:
        self.function = function
        self.app = flask.Flask(function)

    def run(self, request: Request, view: Callable[[], Any]) -> Response:
        """``view()`` inside a request context; its return value, or the ``HTTPException`` it
        raised (``abort(400)``), through Flask's ``make_response``. Other exceptions are the
        platform's ``function_error``."""
        environ = _environ(request)
        environ["SCRIPT_NAME"], environ["PATH_INFO"] = split_path(request, self.function)
        with self.app.request_context(environ):
            try:
                value = view()
            except HTTPException as exc:
                value = exc.get_response(environ)
            return _from_flask(self.app.make_response(value))
