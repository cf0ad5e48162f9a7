"""fissile/runtime/contracts/detect.py: what ``auto`` picks, and what it refuses to guess."""

from __future__ import annotations

import types
from typing import Any

import fastapi
import flask
import pytest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest

from fissile.runtime.contracts import NAMES, bind, detect


def module(name: str) -> types.ModuleType:
    return types.ModuleType(name)


def test_a_fastapi_request_annotation_is_fission_fastapi() -> None:
    def main(request: fastapi.Request) -> Any:
        return None

    async def amain(request: StarletteRequest) -> Any:
        return None

    assert detect(main) == detect(amain) == "fission-fastapi"


def test_string_annotations_are_resolved() -> None:
    namespace: dict[str, Any] = {}
    exec(
        "from __future__ import annotations\nimport fastapi\n"
        "def main(request: fastapi.Request):\n    return None\n",
        namespace,
    )
    assert detect(namespace["main"]) == "fission-fastapi"


def test_an_annotation_spelled_with_its_module_counts_unresolved() -> None:
    namespace: dict[str, Any] = {}
    exec(
        "from __future__ import annotations\n"
        "def main(request: fastapi.Request):\n    import fastapi\n    return None\n"
        "def other(request: Request):\n    return None\n",
        namespace,
    )
    assert detect(namespace["main"]) == "fission-fastapi"
    assert detect(namespace["other"]) == "native"


def test_a_flask_request_annotation_is_gcf() -> None:
    def handler(request: flask.Request) -> Any:
        return None

    assert detect(handler) == "gcf"


def test_asgi_and_wsgi_callables() -> None:
    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        pass

    def wsgi(environ: Any, start_response: Any) -> list[bytes]:
        return []

    assert detect(Starlette()) == detect(asgi) == "asgi"
    assert detect(flask.Flask("x")) == detect(wsgi) == "wsgi"


def test_a_sync_scope_receive_send_function_is_not_asgi() -> None:
    def not_asgi(scope: Any, receive: Any, send: Any) -> None:
        pass

    assert detect(not_asgi) == "native"


def test_zero_arguments_is_fission() -> None:
    def main() -> str:
        return ""

    assert detect(main) == "fission"


def test_platform_default_names_with_exact_parameters() -> None:
    def lambda_handler(event: Any, context: Any) -> Any:
        return None

    def handle(event: Any, context: Any) -> Any:
        return None

    def handle_req(req: Any) -> Any:
        return None

    handle_req.__name__ = "handle"
    assert detect(lambda_handler, module("lambda_function")) == "lambda"
    assert detect(handle, module("handler")) == "openfaas-http"
    assert detect(handle_req, module("handler")) == "openfaas-flask"


@pytest.mark.parametrize(
    "source",
    [
        "def handler(event, context):\n    return None\n",  # Lambda or OpenFaaS: ambiguous
        "def handle(event, context):\n    return None\n",  # not in handler.py
        "def main(request, context):\n    return None\n",
        "def main(request):\n    return None\n",
    ],
)
def test_ambiguous_shapes_are_native(source: str) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    func = next(v for k, v in namespace.items() if not k.startswith("__"))
    assert detect(func, module("main")) == "native"


def test_an_uninspectable_callable_is_native() -> None:
    assert detect(len) == "native"


def test_an_unknown_contract_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown contract 'soap'"):
        bind(lambda request: None, "fn", contract="soap")
    assert "auto" in NAMES
