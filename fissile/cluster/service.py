"""This node's part in a cluster: membership, forwarding, shared builds and sources, started
and stopped with the platform (``fissile/platform.py``).

Builds are freed where revisions are pruned: by the node whose API (or build follower) made the
change (``controlplane/revisions.py``), which also drops their archives. The other nodes free
the builds they fetched by a sweep: a moment after any function changes (a new revision, hence
maybe pruned ones, or a deletion) and at start, each frees the builds it holds that no kept
revision, package or instance of its own uses any longer, and removes the source archives it
holds that no package or kept revision names (``cluster/sources.py``).

Every node copies the source of every package as soon as it sees the package (and at start),
so that its builder can build any package whichever node received it. A package's build runs
on the node whose API asked for it (its status names that node); every second each node
adopts the unfinished builds whose node is gone (``Builder.adopt``), one node per build.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

import psycopg

from fissile.builder.storage import ArchiveStore
from fissile.cluster.artifacts import ArtifactError, Artifacts
from fissile.cluster.nodes import Nodes
from fissile.cluster.peers import Peers
from fissile.cluster.placement import warm_share
from fissile.cluster.sources import Sources, referenced
from fissile.executor import Executor
from fissile.store import Change, Store

log = logging.getLogger("fissile.cluster")

SWEEP_DELAY = 2.0  # seconds after a function's change before this node sweeps its builds
SWEEP_RETRY = 10.0  # seconds before sweeping again builds kept only for instances draining
ADOPT_EVERY = 1.0  # seconds between two looks for builds left by a node that is gone


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
        archives: Path | None = None,
    ) -> None:
        """``archives``: the node's source archives (default ``<data_dir>/archives``)."""
        archives = archives or data_dir / "archives"
        self.nodes = Nodes(store_url, name, address, executor)
        self.artifacts = Artifacts(
            store_url, name, data_dir / "artifacts", deploy_root, token, timeout, archives
        )
        self.sources = Sources(self.artifacts, ArchiveStore(archives))
        self._store: Store | None = None
        self.peers = Peers(self.nodes, token, self.artifacts, timeout)
        # Frees those of the builds given that nothing uses (``Revisions.free``): set by the
        # platform, with ``forget_builds`` as what it calls back for the builds it freed.
        self.free: Callable[[Iterable[str]], set[str]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeping: asyncio.Task[None] | None = None
        self._sweep_again = False
        # Takes over the unfinished builds of nodes that are gone (``Builder.adopt``): set by
        # the platform.
        self.adopt: Callable[[Callable[[str], bool], bool], list[str]] | None = None
        self._adopting: asyncio.Task[None] | None = None

    async def start(self, store: Store) -> None:
        try:
            await self.nodes.start()
            await self.artifacts.start()
        except (psycopg.Error, OSError) as exc:
            raise ClusterUnavailable(f"cannot join the cluster: {exc}") from None
        self._store = store
        # Builds made here (before this start or from now on) are offered to the peers, and
        # every package's source is copied here (or offered, if it is here already).
        for record in store.list("packages"):
            self._offer(record.data)
            self._copy(record.data)
        store.subscribe(self._changed)
        self._schedule_sweep()  # builds pruned while this node was away
        if self.adopt is not None:
            self._adopting = asyncio.get_running_loop().create_task(self._adopt_forever())

    async def stop(self) -> None:
        for task in (self._sweeping, self._adopting):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sources.aclose()
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

    def alive(self, node: str) -> bool:
        """Whether ``node`` is this node or a live peer, by this node's view."""
        if node == self.nodes.name:
            return True
        return any(peer.name == node and peer.alive for peer in self.nodes.peers)

    async def _adopt_forever(self) -> None:
        """Builds left unfinished by a node that stopped or died (or by this node's previous
        run) are built here, by the first node to take each."""
        from fissile.cluster.nodes import DEAD_AFTER

        assert self.adopt is not None
        while True:
            # An old view (the heartbeats fail) cannot tell who is gone: wait for a new one.
            if time.monotonic() - self.nodes.viewed_at < DEAD_AFTER:
                try:
                    # A drained node is on its way out: it resumes only its own builds.
                    self.adopt(self.alive, not self.nodes.draining)
                except Exception as exc:  # the store away: next time
                    log.warning("cluster: cannot look for builds to take over: %s", exc)
            await asyncio.sleep(ADOPT_EVERY)

    def _changed(self, change: Change) -> None:
        if change.record.kind == "packages":
            if change.action != "deleted":
                self._offer(change.record.data)
                self._copy(change.record.data)
            self._schedule_sweep()  # a source (or a build) may be unused now
        elif change.record.kind == "functions":
            self._schedule_sweep()

    def _offer(self, package: dict[str, object]) -> None:
        status = package.get("status")
        key = status.get("deploy") if isinstance(status, dict) else None
        if not isinstance(key, str) or not (self.artifacts.deploy_root / key).is_dir():
            return
        self._spawn(self._publish(key))

    def _copy(self, package: dict[str, object]) -> None:
        source = package.get("source")
        if isinstance(source, str):
            self._spawn(self._ensure_source(source))

    async def _ensure_source(self, digest: str) -> None:
        try:
            await self.sources.ensure(digest)
        except (ArtifactError, psycopg.Error, OSError) as exc:
            log.warning("cluster: cannot copy source %s here: %s", digest[:12], exc)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget_builds(self, keys: set[str]) -> None:
        """Builds freed on this node (``Revisions.free``): their archives and rows go too."""
        self._spawn(self._forget(keys))

    async def _forget(self, keys: set[str]) -> None:
        try:
            await self.artifacts.forget(keys)
        except (psycopg.Error, OSError) as exc:
            log.warning("cluster: cannot drop the archives of freed builds: %s", exc)

    def _schedule_sweep(self) -> None:
        """Sweep once changes settle: one sweep for a burst of them, and another if some come
        while it runs."""
        if self.free is None:
            return
        if self._sweeping is None or self._sweeping.done():
            self._sweeping = asyncio.get_running_loop().create_task(self._sweep_later())
        else:
            self._sweep_again = True

    async def _sweep_later(self) -> None:
        delay = SWEEP_DELAY
        while True:
            await asyncio.sleep(delay)
            self._sweep_again = False
            busy: set[str] = set()
            try:
                busy = await self.sweep()
            except Exception as exc:  # the database away (here or in the store): next change
                log.warning("cluster: cannot sweep this node's builds: %s", exc)
            if self._sweep_again:
                delay = SWEEP_DELAY
            elif busy:  # pruned, but an instance here still runs it: again once it is gone
                delay = SWEEP_RETRY
            else:
                return

    async def sweep(self) -> set[str]:
        """Free the builds this node holds that nothing uses any longer; the ones pruned but
        still run by an instance of this node."""
        if self.free is None:
            return set()
        busy = self.free(await self.artifacts.held())
        if self._store is not None:
            packages = referenced(r.data for r in self._store.list("packages"))
            try:
                await self.sources.sweep(packages)
            except (psycopg.Error, OSError) as exc:  # the builds' sweep stands; next change
                log.warning("cluster: cannot sweep this node's sources: %s", exc)
        return busy

    async def _publish(self, key: str) -> None:
        try:
            await self.artifacts.publish(key)
        except (psycopg.Error, OSError) as exc:
            log.warning("cluster: cannot publish build %s: %s", key[:12], exc)
