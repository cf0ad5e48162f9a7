"""Code that runs inside an instance: the request and response types functions see, the loader
that finds the entrypoint, the contract adapters, and the tiny HTTP server."""

from fissile.runtime.context import Context
from fissile.runtime.request import Request
from fissile.runtime.response import Response

__all__ = ["Context", "Request", "Response"]
