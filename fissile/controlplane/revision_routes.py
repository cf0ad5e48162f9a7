"""``/v1/functions/{name}/revisions`` and ``/rollback``: a function's history, and returning
to an earlier point of it (controlplane/revisions.py)."""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from fissile.controlplane.resources import Resources
from fissile.models import Function, FunctionRevision, RollbackRequest

# No ``from __future__ import annotations``: FastAPI reads the request models from the
# annotations.


def add_revision_routes(
    app: FastAPI,
    resources: Resources,
    errors: Callable[..., dict[int | str, dict[str, Any]]],
) -> None:
    @app.get(
        "/v1/functions/{name}/revisions",
        response_model=list[FunctionRevision],
        tags=["functions"],
        responses=errors(404, 422),
    )
    async def function_revisions(name: str) -> Any:
        """The function's revisions, oldest first: what changed in each, the build it runs,
        and whether it was pruned (its build freed: no rollback to it)."""
        return resources.function_revisions(name)

    @app.post(
        "/v1/functions/{name}/rollback",
        response_model=Function,
        tags=["functions"],
        responses=errors(404, 409, 422, 507),
    )
    async def rollback(name: str, request: RollbackRequest | None = None) -> Any:
        """Return the function to an earlier revision (default: the one before its current)
        without building anything; it becomes a new revision, pre-flighted like any change."""
        return await resources.rollback(name, None if request is None else request.to)
