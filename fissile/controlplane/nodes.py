"""``/v1/nodes``: the nodes of a cluster (``fissile node list|drain|resume|forget``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from fissile.controlplane.errors import ApiError, error_responses

if TYPE_CHECKING:  # imported by cluster mode only: a single node never loads psycopg for it
    from fissile.cluster.nodes import Nodes

_ERRORS = error_responses(401, 404, 409)


def add_node_routes(app: FastAPI, nodes: Nodes | None) -> None:
    """The routes exist on every platform; one not in cluster mode answers 409 ``not_cluster``
    (a clearer answer to ``fissile node list`` than a 404)."""

    def cluster() -> Nodes:
        if nodes is None:
            raise ApiError(
                409, "not_cluster", "this platform is a single node (see fissile up --cluster)"
            )
        return nodes

    async def unavailable(exc: Exception) -> ApiError:
        return ApiError(503, "store_unavailable", f"the cluster's database is away: {exc}")

    @app.get("/v1/nodes", tags=["cluster"], responses=_ERRORS)
    async def list_nodes() -> list[dict[str, Any]]:
        """Every node that joined the cluster, with its last heartbeat."""
        nodes = cluster()
        import psycopg

        try:
            return [node.as_json() for node in await nodes.list()]
        except (psycopg.Error, OSError) as exc:
            raise await unavailable(exc) from None

    async def set_state(name: str, state: str) -> dict[str, Any]:
        nodes = cluster()
        import psycopg

        from fissile.cluster.nodes import NodeNotFound

        try:
            return (await nodes.set_state(name, state)).as_json()
        except NodeNotFound:
            raise ApiError(404, "not_found", f"node {name!r} not found") from None
        except (psycopg.Error, OSError) as exc:
            raise await unavailable(exc) from None

    @app.post("/v1/nodes/{name}/drain", tags=["cluster"], responses=_ERRORS)
    async def drain_node(name: str) -> dict[str, Any]:
        """Stop sending new work to the node: its router forwards new requests to the peers,
        while requests in flight there finish."""
        return await set_state(name, "draining")

    @app.post("/v1/nodes/{name}/resume", tags=["cluster"], responses=_ERRORS)
    async def resume_node(name: str) -> dict[str, Any]:
        """Put a drained node back to work (a stopped one: when it starts again)."""
        return await set_state(name, "active")

    @app.delete("/v1/nodes/{name}", status_code=204, tags=["cluster"], responses=_ERRORS)
    async def forget_node(name: str) -> None:
        """Delete the row of a node retired for good (stopped, or dead): it leaves ``node
        list``. A live node is refused with 409 ``node_alive``."""
        nodes = cluster()
        import psycopg

        from fissile.cluster.nodes import NodeAlive, NodeNotFound

        try:
            await nodes.forget(name)
        except NodeNotFound:
            raise ApiError(404, "not_found", f"node {name!r} not found") from None
        except NodeAlive:
            raise ApiError(
                409,
                "node_alive",
                f"node {name!r} is running: stop it first (drain it, then stop its fissile up)",
            ) from None
        except (psycopg.Error, OSError) as exc:
            raise await unavailable(exc) from None
