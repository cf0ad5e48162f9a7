"""The import cache (SOCK's generalized zygotes): package zygotes that have a function's
dependencies imported, so its cold starts fork from them instead of importing those again.

A function's dependencies are the top-level modules its package's source imports (tokenized,
no code runs, every read bounded: fissile/executor/importscan.py), less the standard library,
less what its environment's zygote has already imported (the runtime and the ``preload`` list:
every function has those), less what the package itself provides. What remains is the cache
key: functions with the same key share one package zygote, forked from the environment's
zygote, which imports them and freezes its heap again.

Only modules of the environment's own Python installation are imported there, never anything
from a function's package: a zygote runs outside the sandbox (it forks sandboxed instances), so
a package's code (its own modules, or libraries pip installed into it) must only ever run inside
an instance. Such a dependency is imported by each instance, as without the cache.

The cache is bounded in count and in private memory; past either bound it stops the least
recently used package zygote that no function instance depends on (its instances are its
children, and die with it).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from fissile.executor.importscan import ScanError, scan_package
from fissile.executor.pools import EnvironmentPool
from fissile.executor.zygote import Zygote

if TYPE_CHECKING:
    from fissile.executor.executor import Executor

logger = logging.getLogger("fissile.executor")

MAX_ZYGOTES = 8
MAX_MEMORY = 1024 * 1024 * 1024  # private bytes of all package zygotes together
POOLSIZE = 1  # warm instances kept forked from each package zygote

Key = tuple[str, ...]
#: Runtime modules a package zygote imports along with a key's library: the contract adapter
#: that a function importing it most likely runs under (it would otherwise be imported by
#: each instance, ~2 ms of a fission-fastapi cold start).
COMPANIONS: dict[str, tuple[str, ...]] = {
    "fastapi": ("fissile.runtime.contracts.fission_fastapi",),
    "starlette": ("fissile.runtime.contracts.fission_fastapi",),
}


class PackagePool(EnvironmentPool):
    """A package zygote and its warm instances: an environment pool whose zygote is forked
    from the environment's, with the key's modules imported."""

    def __init__(self, env: EnvironmentPool, key: Key, number: int) -> None:
        super().__init__(env.spec.model_copy(update={"poolsize": POOLSIZE}), env.executor)
        self.env = env
        self.key = key
        self.id = f"{env.name[:8]}-z{number}"
        self.private_memory = 0
        self.failed = False

    async def _start_zygote(self) -> None:
        parent = self.env.zygote
        if parent is None or not parent.alive:
            await self.env.start()
            parent = self.env.zygote
        assert parent is not None
        companions = {m for name in self.key for m in COMPANIONS.get(name, ())}
        zygote = await parent.fork_zygote(self.id, [*self.key, *sorted(companions)])
        zygote.on_death = self._zygote_died
        if self._stopped:  # stopped while it was forked: ``stop`` saw none to stop
            await zygote.stop()
            self.executor.zygote_lost(self.name, zygote, reaped=True)
            return
        self.zygote = zygote
        if not zygote.imported:
            return  # nothing the environment has: the caller falls back to the environment
        self.private_memory = await asyncio.to_thread(private_memory, zygote.pid or 0)
        self.refill()

    def _zygote_died(self, zygote: Zygote) -> None:
        # Not restarted: the cache forgets it, and the next cold start makes a new one.
        self.executor.zygote_lost(self.name, zygote)
        if zygote is self.zygote:
            self.zygote = None
            self.failed = True
            self._stopped = True
            for instance in self.warm:
                self.executor.retire(instance)
            self.warm.clear()

    def in_use(self) -> bool:
        """Whether a function instance (not a warm one) was forked from this zygote."""
        zygote = self.zygote
        return zygote is not None and any(
            instance.zygote is zygote and instance.function is not None and instance.alive
            for instance in self.executor.instances()
        )


class ImportCache:
    def __init__(
        self, executor: Executor, max_zygotes: int = MAX_ZYGOTES, max_memory: int = MAX_MEMORY
    ) -> None:
        self.executor = executor
        self.max_zygotes = max_zygotes
        self.max_memory = max_memory
        self.pools: OrderedDict[tuple[str, Key], PackagePool] = OrderedDict()
        self._scans: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self._useless: set[tuple[str, Key]] = set()  # keys whose zygote imported nothing
        self._counter = 0

    async def source(self, env: EnvironmentPool, deploy_dir: str) -> EnvironmentPool:
        """Where a function on ``deploy_dir`` gets its instances: a package zygote's pool when
        its dependencies call for one (made now if need be), else the environment's."""
        if self.max_zygotes <= 0 or env.zygote is None:
            return env
        key = await self.key(env, deploy_dir)
        if not key or (env.name, key) in self._useless:
            return env
        pool = self.pools.get((env.name, key))
        if pool is None or pool.failed:
            self._counter += 1
            pool = PackagePool(env, key, self._counter)
            self.pools[(env.name, key)] = pool
            self.executor.spawn(self._log_start(pool))
        self.pools.move_to_end((env.name, key))
        try:
            # Waiting for a zygote still importing costs at most what importing in the instance
            # would, and every later cold start gains.
            await pool.start()
        except Exception as exc:
            logger.warning("import cache: zygote for %s failed: %s", ", ".join(key), exc)
            self.pools.pop((env.name, key), None)
            self._useless.add((env.name, key))
            return env
        if pool.zygote is None:  # stopped as it started (its environment deleted)
            return env
        if not pool.zygote.imported:
            self._useless.add((env.name, key))
            self.pools.pop((env.name, key), None)
            self.executor.spawn(pool.stop())
            return env
        self._evict(spare=pool)
        return pool

    async def key(self, env: EnvironmentPool, deploy_dir: str) -> Key:
        scan = self._scans.get(deploy_dir)
        if scan is None:
            try:
                scan = await asyncio.to_thread(scan_package, deploy_dir)
            except ScanError as exc:
                # Deploy dirs never change: past a bound once, past it for good.
                logger.warning("import cache: %s not scanned: %s", deploy_dir, exc)
                self._scans[deploy_dir] = (frozenset(), frozenset())
                return ()
            except Exception as exc:
                # The cache only saves time: a package it cannot read loads without it.
                logger.warning("import cache: cannot scan %s: %s", deploy_dir, exc)
                return ()
            # Deploy dirs are content-addressed and immutable: scanned once each.
            self._scans[deploy_dir] = scan
        imports, provided = scan
        loaded = env.zygote.modules if env.zygote is not None else frozenset()
        stdlib = sys.stdlib_module_names
        return tuple(
            sorted(
                name
                for name in imports
                if name not in loaded and name not in stdlib and name not in provided
            )
        )

    async def _log_start(self, pool: PackagePool) -> None:
        try:
            await pool.start()
        except Exception:
            return  # reported by source()
        zygote = pool.zygote
        if zygote is None or not zygote.imported:
            return
        logger.info(
            "import cache: zygote %s (pid %s) imported %s; %.1f MiB private",
            pool.id,
            zygote.pid,
            ", ".join(zygote.imported),
            pool.private_memory / 2**20,
        )

    def _evict(self, spare: PackagePool) -> None:
        """Stop least recently used zygotes past the bounds, sparing those in use (and the one
        about to fork an instance)."""
        while len(self.pools) > self.max_zygotes or self.memory() > self.max_memory:
            victim = next(
                (
                    k
                    for k, p in self.pools.items()
                    if p is not spare and p.zygote is not None and not p.in_use()
                ),
                None,
            )
            if victim is None:
                return  # everything left serves functions: over the bound until they go
            pool = self.pools.pop(victim)
            logger.info("import cache: evicting zygote %s (%s)", pool.id, ", ".join(pool.key))
            self.executor.spawn(pool.stop())

    def memory(self) -> int:
        return sum(pool.private_memory for pool in self.pools.values())

    def forget_environment(self, env: str) -> list[PackagePool]:
        """An environment changed or went: its package zygotes (forked from its zygote) go
        with it."""
        gone = [key for key in self.pools if key[0] == env]
        self._useless = {key for key in self._useless if key[0] != env}
        return [self.pools.pop(key) for key in gone]

    async def stop(self) -> None:
        pools = list(self.pools.values())
        self.pools.clear()
        await asyncio.gather(*(pool.stop() for pool in pools), return_exceptions=True)


def private_memory(pid: int) -> int:
    """Bytes only this process maps (Private_Clean + Private_Dirty), 0 if unknown."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    total = 0
    for line in text.splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total
