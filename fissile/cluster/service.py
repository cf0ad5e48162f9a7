"""This node's part in a cluster: membership, forwarding and shared builds, started and
stopped with the platform (``fissile/platform.py``)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import psycopg

from fissile.cluster.artifacts import Artifacts
from fissile.cluster.nodes import Nodes
from fissile.cluster.peers import Peers
from fissile.cluster.placement import warm_share
from fissile.executor import Executor
from fissile.store import Change, Store

log = logging.getLogger("fissile.cluster")


class ClusterUnavailable(Exception):
    pass


class Cluster:
    def __init__(
        self,
        store_url: str,
        name: str,
        address: str,
        data_dir: Path,
        deploy_root: Path,
        token: str,
        executor: Executor,
        timeout: float,
    ) -> None:
        self.nodes = Nodes(store_url, name, address, executor)
        self.artifacts = Artifacts(
            store_url, name, data_dir / "artifacts", deploy_root, token, timeout
        )
        self.peers = Peers(self.nodes, token, self.artifacts, timeout)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, store: Store) -> None:
        try:
            await self.nodes.start()
            await self.artifacts.start()
        except (psycopg.Error, OSError) as exc:
            raise ClusterUnavailable(f"cannot join the cluster: {exc}") from None
        # Builds made here (before this start or from now on) are offered to the peers.
        for record in store.list("packages"):
            self._offer(record.data)
        store.subscribe(self._changed)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.peers.aclose()
        await self.artifacts.aclose()
        await self.nodes.stop()

    def warm_share(self, function: str, min_scale: int, memory: int) -> int:
        """This node's share of the instances a function keeps warm, by its current view."""
        return warm_share(
            function,
            min_scale=min_scale,
            memory=memory,
            draining=self.nodes.draining,
            peers=self.nodes.peers,
        )

    def _changed(self, change: Change) -> None:
        if change.record.kind == "packages" and change.action != "deleted":
            self._offer(change.record.data)

    def _offer(self, package: dict[str, object]) -> None:
        status = package.get("status")
        key = status.get("deploy") if isinstance(status, dict) else None
        if not isinstance(key, str) or not (self.artifacts.deploy_root / key).is_dir():
            return
        task = asyncio.get_running_loop().create_task(self._publish(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, key: str) -> None:
        try:
            await self.artifacts.publish(key)
        except (psycopg.Error, OSError) as exc:
            log.warning("cluster: cannot publish build %s: %s", key[:12], exc)
