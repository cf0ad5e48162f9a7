"""The public data plane: route table, proxy to instances, the router's HTTP protocol and its
ASGI app, the asynchronous front door, and calls into functions from inside the platform."""

from fissile.router.app import Router
from fissile.router.front_door import FrontDoor
from fissile.router.invoke import invoke
from fissile.router.protocol import RouterProtocol
from fissile.router.routes import Route, RouteTable

__all__ = ["FrontDoor", "Route", "RouteTable", "Router", "RouterProtocol", "invoke"]
