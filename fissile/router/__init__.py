"""The public data plane: route table, proxy to instances, and the ASGI router."""

from fissile.router.app import Router
from fissile.router.routes import Route, RouteTable

__all__ = ["Route", "RouteTable", "Router"]
