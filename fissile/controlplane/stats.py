"""Live statistics in the control API: ``GET /v1/stats`` and ``GET /v1/functions/{name}/stats``
(``fissile top``, ``fissile fn stats`` and the dashboard read them).

No ``from __future__ import annotations``: FastAPI reads the routes' annotations.
"""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from fissile.controlplane.errors import ApiError
from fissile.controlplane.resources import Resources
from fissile.observability.crashes import CrashLog
from fissile.observability.stats import BadSince, Stats, parse_since

Errors = Callable[..., dict[int | str, dict[str, Any]]]


def window(since: str) -> float:
    """``since`` as seconds, or the API's 422."""
    try:
        return parse_since(since)
    except BadSince as exc:
        raise ApiError(422, "invalid", str(exc), [{"path": "since", "message": str(exc)}]) from None


def gatherer(app: FastAPI, node: str | None) -> Any:
    """In a cluster, what gathers every node's stats (``fissile/cluster/stats.py``); None on a
    single node, where ``node`` can name nothing."""
    gathered = getattr(app.state, "cluster_stats", None)
    if gathered is None and node is not None:
        raise ApiError(404, "not_found", f"no node {node!r}: this platform is not a cluster")
    return gathered


def add_stats_routes(
    app: FastAPI, resources: Resources, stats: Stats, crashes: CrashLog | None, errors: Errors
) -> None:
    @app.get("/v1/stats", tags=["observability"], responses=errors(404, 422))
    async def all_stats(
        since: str = "1m", series: bool = False, node: str | None = None
    ) -> dict[str, Any]:
        """Every function over the last ``since`` (``30s``, ``10m``, ``1h``; at most 1h):
        requests, rate, error rate, p50/p99, cold starts and crashes, with its instances and
        queue now; ``series``: also the last 5 minutes' rate and p99 per interval. In a cluster,
        every live node's numbers merged (``nodes``: who answered, ``warnings``: who did not);
        ``node``: one node's alone."""
        seconds = window(since)
        # The store says which functions exist; one not counted yet is listed with zeros.
        names = sorted(record.name for record in resources.store.list("functions"))
        gathered = gatherer(app, node)
        if gathered is not None:
            # A node that is not live: the 404 of cluster.stats.UnknownNode.
            merged: dict[str, Any] = await gathered.all(names, seconds, series, node)
            return merged
        return {"since": seconds, "functions": [stats.function(n, seconds, series) for n in names]}

    @app.get("/v1/functions/{name}/stats", tags=["observability"], responses=errors(404, 422))
    async def function_stats(
        name: str, since: str = "10m", node: str | None = None
    ) -> dict[str, Any]:
        """One function over the last ``since``, with its series and its recent crashes. In a
        cluster, merged over the live nodes, with ``nodes``: each node's share; ``node``: one
        node's alone."""
        seconds = window(since)
        resources.get("functions", name)
        gathered = gatherer(app, node)
        if gathered is not None:
            # A node that is not live: the 404 of cluster.stats.UnknownNode.
            merged: dict[str, Any] = await gathered.function(name, seconds, node)
            return merged
        document = stats.function(name, seconds, series=True)
        document["recent_crashes"] = crashes.of(name) if crashes is not None else []
        return document
