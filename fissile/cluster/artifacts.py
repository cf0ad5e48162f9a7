"""Builds shared between nodes: each package is built once, by the node whose API received it,
and the others fetch its deploy directory from a node that holds it.

The node that built (or fetched) a build packs its deploy directory once into
``artifacts/<sha256>.tar`` and records in PostgreSQL that it holds that build key with that
sha256 (``fissile_artifacts``). A node that must start an instance on a build it lacks reads
the holders of the key, fetches the archive from a live one over its router's internal,
token-protected endpoint (``GET /_fissile/cluster/artifacts/<sha256>``), checks the sha256
against the store's record (a peer can neither corrupt nor substitute a build), unpacks it next
to the deploy root and moves it into place in one rename, then records itself as a holder too
(so the build survives the death of the node that made it).

A build freed on a node (its revisions pruned, ``--keep-revisions``, or its function deleted)
takes its archive and the node's holder row with it (``forget``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import psycopg

log = logging.getLogger("fissile.cluster")

WAIT_FOR_HOLDER = 60.0  # how long a node waits for a build's first holder to record it

_TABLE = """
CREATE TABLE IF NOT EXISTS fissile_artifacts (
    key TEXT NOT NULL,
    node TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (key, node)
)
"""

# Holders whose heartbeat is recent (nodes.DEAD_AFTER), the freshest first.
_HOLDERS = """
SELECT a.sha256, a.size, n.name, n.address FROM fissile_artifacts a
JOIN fissile_nodes n ON n.name = a.node
WHERE a.key = %s AND n.state != 'stopped' AND now() - n.heartbeat_at < make_interval(secs => %s)
ORDER BY n.heartbeat_at DESC
"""


# Source archives are recorded in the same table under this prefix and their sha256
# (``cluster/sources.py``); build keys are bare sha256s.
SOURCE_PREFIX = "source:"


class ArtifactError(Exception):
    pass


def pack(source: Path, target: Path) -> tuple[str, int]:
    """Tar ``source``'s contents into ``target``; its sha256 and size."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w") as tar:
            tar.add(source, arcname=".")
        digest = hashlib.sha256()
        with open(tmp, "rb") as archive:
            while chunk := archive.read(1 << 20):
                digest.update(chunk)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest(), target.stat().st_size


def unpack(archive: Path, target: Path) -> None:
    """Unpack into a scratch directory beside ``target``, then rename it into place: a
    concurrent reader sees no build or the whole build."""
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".fetch-"))
    try:
        with tarfile.open(archive) as tar:
            # The data filter refuses links out of the tree, devices and absolute paths.
            tar.extractall(scratch, filter="data")
        scratch.chmod(0o755)
        try:
            os.rename(scratch, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(scratch)  # another fetch got there first
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


class Artifacts:
    def __init__(
        self,
        url: str,
        node: str,
        root: Path,
        deploy_root: Path,
        token: str,
        timeout: float,
        archives: Path | None = None,
    ) -> None:
        """``archives``: where the node keeps source archives (``<sha256>.zip``), which its
        endpoint serves too (``cluster/sources.py``)."""
        self.url = url
        self.node = node
        self.root = root
        self.deploy_root = deploy_root
        self.archives = archives
        self.token = token
        self.timeout = timeout
        root.mkdir(parents=True, exist_ok=True)
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._published: set[str] = set()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self.fetched = 0  # builds fetched from peers (for tests and metrics)
        self.transport: httpx.AsyncBaseTransport | None = None  # tests: a fake peer

    async def execute(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=5
                )
            try:
                cursor = await self._conn.execute(query, params)
                return await cursor.fetchall() if cursor.description else []
            except (psycopg.OperationalError, OSError):
                await self._conn.close()
                self._conn = None
                raise

    async def start(self) -> None:
        await self.execute(_TABLE, ())

    async def aclose(self) -> None:
        for task in self._fetching.values():
            task.cancel()
        if self._conn is not None:
            await self._conn.close()

    def local(self, digest: str) -> Path | None:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            return None
        path = self.root / f"{digest}.tar"
        if path.is_file():
            return path
        # Content-addressed like packed builds: a digest names one content, whichever it is.
        if self.archives is not None:
            path = self.archives / f"{digest}.zip"
            if path.is_file():
                return path
        return None

    async def publish(self, key: str) -> None:
        """Record that this node holds build ``key`` (packing it first)."""
        if key in self._published:
            return
        source = self.deploy_root / key
        if not source.is_dir():
            return
        scratch = self.root / f"{key}.tar"
        digest, size = await asyncio.to_thread(pack, source, scratch)
        final = self.root / f"{digest}.tar"
        os.replace(scratch, final)
        await self.execute(
            "INSERT INTO fissile_artifacts (key, node, sha256, size) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (key, node) DO UPDATE SET sha256 = EXCLUDED.sha256,"
            " size = EXCLUDED.size",
            (key, self.node, digest, size),
        )
        self._published.add(key)
        log.info("cluster: build %s published (%d bytes, sha256 %s)", key[:12], size, digest)

    async def held(self) -> list[str]:
        """The build keys this node is recorded as holding."""
        rows = await self.execute(
            "SELECT key FROM fissile_artifacts WHERE node = %s AND key NOT LIKE %s",
            (self.node, SOURCE_PREFIX + "%"),
        )
        return [str(row[0]) for row in rows]

    async def forget(self, keys: Iterable[str]) -> None:
        """Builds freed here: this node no longer offers them, and their archives go (unless
        another build held here packed to the same bytes)."""
        keys = sorted(set(keys))
        if not keys:
            return
        self._published.difference_update(keys)
        rows = await self.execute(
            "DELETE FROM fissile_artifacts WHERE node = %s AND key = ANY(%s) RETURNING key, sha256",
            (self.node, keys),
        )
        digests = {str(row[1]) for row in rows}
        if not digests:
            return
        shared = await self.execute(
            "SELECT sha256 FROM fissile_artifacts WHERE node = %s AND sha256 = ANY(%s)",
            (self.node, sorted(digests)),
        )
        for digest in digests - {str(row[0]) for row in shared}:
            (self.root / f"{digest}.tar").unlink(missing_ok=True)
        for key, digest in rows:
            log.info("cluster: build %s freed: archive %s deleted", str(key)[:12], digest)

    async def ensure(self, deploy_dir: str) -> None:
        """Make ``deploy_dir`` (a build under the deploy root) exist here, fetching it from a
        peer if need be; concurrent callers share one fetch."""
        path = Path(deploy_dir)
        if path.is_dir() or path.parent != self.deploy_root:
            return
        key = path.name
        task = self._fetching.get(key)
        if task is None:
            task = self._fetching[key] = asyncio.get_running_loop().create_task(self._fetch(key))
            task.add_done_callback(lambda _: self._fetching.pop(key, None))
        await asyncio.shield(task)

    async def _fetch(self, key: str) -> None:
        deadline = time.monotonic() + WAIT_FOR_HOLDER
        failures: list[str] = []
        while True:
            for digest, size, name, address in await self.holders(key):
                try:
                    await self._download(key, digest, address)
                except (ArtifactError, httpx.HTTPError, OSError, tarfile.TarError) as exc:
                    failures.append(f"{name}: {exc}")
                    log.warning(
                        "cluster: fetching build %s from %s failed: %s", key[:12], name, exc
                    )
                    continue
                self.fetched += 1
                log.info("cluster: build %s fetched from %s (%d bytes)", key[:12], name, size)
                with contextlib.suppress(psycopg.Error, OSError):
                    await self.publish(key)
                return
            if time.monotonic() > deadline:
                detail = "; ".join(failures[-3:]) or "no live node holds it"
                raise ArtifactError(f"cannot fetch build {key[:12]} from the cluster: {detail}")
            # The builder records its build a moment after the store says it succeeded.
            await asyncio.sleep(0.1)

    async def _download(self, key: str, digest: str, address: str) -> None:
        target = self.root / f"{digest}.tar"
        tmp = await self.download(digest, address, self.root)
        try:
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        await asyncio.to_thread(unpack, target, self.deploy_root / key)

    async def holders(self, key: str) -> list[tuple[str, int, str, str]]:
        """The live peers recorded as holding ``key``: (sha256, size, name, address) each,
        the freshest heartbeat first."""
        from fissile.cluster.nodes import DEAD_AFTER

        rows = await self.execute(_HOLDERS, (key, DEAD_AFTER))
        return [(str(d), int(s), str(n), str(a)) for d, s, n, a in rows if n != self.node]

    async def download(
        self, digest: str, address: str, directory: Path, limit: int | None = None
    ) -> Path:
        """Fetch the archive ``digest`` from the peer at ``address`` into a scratch file of
        ``directory``, checked against its sha256 (and cut off past ``limit`` bytes); the
        caller moves or removes the file."""
        fd, name = tempfile.mkstemp(dir=directory, suffix=".part")
        os.close(fd)
        tmp = Path(name)
        try:
            hasher = hashlib.sha256()
            received = 0
            url = f"http://{address}/_fissile/cluster/artifacts/{digest}"
            headers = {"authorization": f"Bearer {self.token}"}
            # Peers speak plain HTTP: no TLS context, whose CA bundle took ~50 ms a client.
            client = httpx.AsyncClient(timeout=self.timeout, transport=self.transport, verify=False)
            async with (
                client,
                client.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code != 200:
                    raise ArtifactError(f"HTTP {response.status_code}")
                with open(tmp, "wb") as out:
                    async for chunk in response.aiter_bytes():
                        received += len(chunk)
                        if limit is not None and received > limit:
                            raise ArtifactError(f"larger than {limit} bytes")
                        hasher.update(chunk)
                        out.write(chunk)
            if hasher.hexdigest() != digest:
                raise ArtifactError(
                    f"sha256 mismatch: got {hasher.hexdigest()}, the store says {digest}"
                )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp
