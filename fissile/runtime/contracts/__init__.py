"""Adapters between the instance server and the ways a function can be written.

Each contract is a module with ``bind(target) -> Handler``, imported on first use so that an
instance pays only for the contract it runs (uvicorn's habit for its pluggable parts). ``auto``
picks one from unambiguous signals only (``detect``) and otherwise ``native``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from fissile.runtime.contracts._handler import Handler, Invoke, Target, required_positional
from fissile.runtime.contracts.detect import detect

#: contract name -> module under ``fissile.runtime.contracts``
CONTRACTS: dict[str, str] = {
    "native": "native",
    "fission": "fission",
    "fission-fastapi": "fission_fastapi",
    "lambda": "aws_lambda",
    "lambda-v1": "aws_lambda",
    "gcf": "gcf",
    "openfaas-http": "openfaas",
    "openfaas-flask": "openfaas",
    "asgi": "asgi",
    "wsgi": "wsgi",
}
AUTO = "auto"
NAMES = (AUTO, *CONTRACTS)

__all__ = [
    "AUTO",
    "CONTRACTS",
    "NAMES",
    "Handler",
    "Invoke",
    "Target",
    "bind",
    "detect",
    "required_positional",
]


def bind(
    func: Any,
    function_name: str,
    deploy_dir: str | None = None,
    loaded: Iterable[str] = (),
    contract: str = AUTO,
    module: ModuleType | None = None,
    options: dict[str, Any] | None = None,
) -> Handler:
    """Bind ``func`` (the object at the function's entrypoint) to ``contract``. ``loaded``
    names the modules its import brought in."""
    name = detect(func, module) if contract == AUTO else contract
    if name not in CONTRACTS:
        raise TypeError(f"unknown contract {contract!r}; known: {', '.join(NAMES)}")
    adapter = importlib.import_module(f"{__name__}.{CONTRACTS[name]}")
    target = Target(func, function_name, name, deploy_dir, tuple(loaded), module, options or {})
    handler: Handler = adapter.bind(target)
    return handler
