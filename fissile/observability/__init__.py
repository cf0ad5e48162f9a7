"""Logs (and, later, metrics) of functions and the platform."""

from fissile.observability.logs import LogBook

__all__ = ["LogBook"]
