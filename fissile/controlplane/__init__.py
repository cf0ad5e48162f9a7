"""The control API, the rules of the resource graph, and their errors."""

from fissile.controlplane.app import create_api
from fissile.controlplane.errors import ApiError
from fissile.controlplane.resources import Resources

__all__ = ["ApiError", "Resources", "create_api"]
