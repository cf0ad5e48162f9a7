"""Source archives shared between nodes, so that any node's builder can build any package.

A source archive is kept by its sha256 (``<data>/archives/<sha256>.zip``,
``builder/storage.py``). In a cluster the node that stores one — an upload through its API, or
a package created or updated through it whose source was uploaded through another node —
records in ``fissile_artifacts`` that it holds ``source:<sha256>``, beside the builds. Every
other node copies it as soon as a package names it (the store's change, or at its start): from
a live holder, over the same token-protected endpoint as builds, checked against the sha256 it
is named by and by the upload's own checks (``check_archive``: no path or link out of the tree,
no absolute path, bounded entries and size), then renamed into place, and records itself as a
holder. So a package outlives the node that received it; a node that must build before its copy
arrived fetches the source first (``Builder.fetch_source``).

Sources that no package and no kept revision names any longer are removed, file and row, by
each node's sweep (``cluster/service.py``), once its row is older than ``GRACE``: an upload
waits a while for the package that will name it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Iterable

import httpx

from fissile.builder.archive import MAX_ARCHIVE_BYTES, ArchiveError, check_archive
from fissile.builder.storage import ArchiveStore
from fissile.cluster.artifacts import SOURCE_PREFIX, WAIT_FOR_HOLDER, ArtifactError, Artifacts

log = logging.getLogger("fissile.cluster")

GRACE = 600.0  # seconds an unused source is kept after this node stored it
RETRY = 0.25  # seconds between two looks for a holder while none is recorded yet
FETCHES = 4  # sources downloaded at once (a node joining copies every package's)

_DIGEST = re.compile(r"[0-9a-f]{64}")

# The sources the kept revisions of every function name (a rollback restores its package).
_KEPT = """
SELECT DISTINCT data::jsonb #>> '{package,source}' FROM revisions
WHERE NOT pruned AND data::jsonb #>> '{package,source}' IS NOT NULL
"""


class Sources:
    def __init__(self, artifacts: Artifacts, archives: ArchiveStore) -> None:
        self.artifacts = artifacts
        self.archives = archives
        self.grace = GRACE
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._published: set[str] = set()
        self._slots = asyncio.Semaphore(FETCHES)
        self.fetched = 0  # sources copied from peers (for tests)

    @property
    def node(self) -> str:
        return self.artifacts.node

    async def aclose(self) -> None:
        for task in self._fetching.values():
            task.cancel()
        await asyncio.gather(*self._fetching.values(), return_exceptions=True)

    async def publish(self, digest: str, uploaded: bool = False) -> None:
        """Record that this node holds source ``digest`` (if it does). ``uploaded``: it was
        uploaded again just now, so its grace starts again."""
        if digest in self._published and not uploaded:
            return
        path = self.archives.path(digest)
        if not _DIGEST.fullmatch(digest) or not path.is_file():
            return
        again = "UPDATE SET created_at = now()" if uploaded else "NOTHING"
        await self.artifacts.execute(
            "INSERT INTO fissile_artifacts (key, node, sha256, size) VALUES (%s, %s, %s, %s)"
            f" ON CONFLICT (key, node) DO {again}",
            (SOURCE_PREFIX + digest, self.node, digest, path.stat().st_size),
        )
        self._published.add(digest)

    async def ensure(self, digest: str, wait: float = WAIT_FOR_HOLDER) -> None:
        """Make source ``digest`` exist here, fetching it from a holder if need be (waiting up
        to ``wait`` seconds for one to be recorded), and offer it; concurrent callers share
        one fetch."""
        if not _DIGEST.fullmatch(digest):
            raise ArtifactError(f"{digest[:64]!r} is not a sha256")
        if not self.archives.exists(digest):
            task = self._fetching.get(digest)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._fetch(digest, wait))
                self._fetching[digest] = task
                task.add_done_callback(lambda _: self._fetching.pop(digest, None))
            await asyncio.shield(task)
        await self.publish(digest)

    async def _fetch(self, digest: str, wait: float) -> None:
        deadline = time.monotonic() + wait
        failures: list[str] = []
        while True:
            for _, size, name, address in await self.artifacts.holders(SOURCE_PREFIX + digest):
                try:
                    async with self._slots:
                        await self._download(digest, address)
                except (ArtifactError, ArchiveError, httpx.HTTPError, OSError) as exc:
                    failures.append(f"{name}: {exc}")
                    log.warning(
                        "cluster: fetching source %s from %s failed: %s", digest[:12], name, exc
                    )
                    continue
                self.fetched += 1
                log.info("cluster: source %s fetched from %s (%d bytes)", digest[:12], name, size)
                return
            if time.monotonic() >= deadline:
                detail = "; ".join(failures[-3:]) or "no live node holds it"
                raise ArtifactError(
                    f"cannot fetch source archive {digest[:12]} from the cluster: {detail}"
                )
            await asyncio.sleep(RETRY)

    async def _download(self, digest: str, address: str) -> None:
        # Checked by the sha256 it is named by (not only the row's), then as an upload is.
        tmp = await self.artifacts.download(digest, address, self.archives.root, MAX_ARCHIVE_BYTES)
        try:
            await asyncio.to_thread(check_archive, tmp)
            os.replace(tmp, self.archives.path(digest))
        finally:
            tmp.unlink(missing_ok=True)

    async def held(self) -> dict[str, float]:
        """The sources this node is recorded as holding, each with its row's age (seconds)."""
        rows = await self.artifacts.execute(
            "SELECT sha256, extract(epoch FROM now() - created_at) FROM fissile_artifacts"
            " WHERE node = %s AND key LIKE %s",
            (self.node, SOURCE_PREFIX + "%"),
        )
        return {str(digest): float(age) for digest, age in rows}

    async def kept(self) -> set[str]:
        """The sources the cluster's kept revisions name."""
        return {str(row[0]) for row in await self.artifacts.execute(_KEPT, ())}

    async def sweep(self, packages: Iterable[str]) -> set[str]:
        """Remove the sources held here that neither ``packages`` (the sources packages name)
        nor a kept revision names, and that were stored more than ``grace`` ago; those it
        removed."""
        held = await self.held()
        if not held:
            return set()
        used = set(packages) | await self.kept()
        unused = {d for d, age in held.items() if d not in used and age >= self.grace}
        return await self.forget(unused, self.grace)

    async def forget(self, digests: Iterable[str], older: float = 0.0) -> set[str]:
        """This node no longer offers those of these sources it stored at least ``older``
        seconds ago (an upload since restarted the grace), and their files go; those gone."""
        digests = sorted(set(digests))
        if not digests:
            return set()
        rows = await self.artifacts.execute(
            "DELETE FROM fissile_artifacts WHERE node = %s AND key = ANY(%s)"
            " AND now() - created_at >= make_interval(secs => %s) RETURNING sha256",
            (self.node, [SOURCE_PREFIX + d for d in digests], older),
        )
        gone = {str(row[0]) for row in rows}
        self._published.difference_update(gone)
        for digest in sorted(gone):
            self.archives.path(digest).unlink(missing_ok=True)
            log.info("cluster: source %s no longer used: removed", digest[:12])
        return gone


def referenced(packages: Iterable[dict[str, object]]) -> set[str]:
    """The sources ``packages`` (their records' data) name."""
    return {s for p in packages if isinstance(s := p.get("source"), str)}
