"""One cgroup per instance: memory, CPU quota and process limits, OOM detection, kill, removal.

The supervisor (root) creates a group when it starts an instance, sets the function's limits,
moves the forked instance in, and after the instance is gone asks whether the kernel OOM-killed
it and removes the group. Every group lives under one root group, the *prefix* (``fissile``), so
a restarted supervisor can find and clean what a crashed one left behind.

Both kernel interfaces are supported, chosen by :func:`detect`:

* cgroup v1 (one hierarchy per controller, ``/sys/fs/cgroup/{memory,cpu,pids}``): a group is one
  directory ``<hierarchy>/<prefix>/<name>`` in each hierarchy whose controller is usable.
* cgroup v2 (unified, ``/sys/fs/cgroup/cgroup.controllers`` exists): a group is
  ``/sys/fs/cgroup/<prefix>/<name>``; the controllers are enabled in the ``cgroup.subtree_control``
  of the root and of the prefix, which holds no process itself (v2's "no internal processes"
  rule), so the groups below it are leaves that may hold processes and have limits.

Without root, on a read-only ``/sys/fs/cgroup`` or off Linux, :func:`detect` returns ``None`` and
nothing is enforced; it never raises for an environment it cannot use. All operations are a few
small writes to cgroupfs (tens of microseconds each); only :meth:`Group.kill_all` and
:meth:`Group.remove` may wait, briefly, for processes to exit.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CONTROLLERS",
    "CPU_PERIOD_US",
    "CgroupError",
    "Cgroups",
    "Group",
    "Limits",
    "cleanup_stale",
    "detect",
]

logger = logging.getLogger("fissile.sandbox.cgroups")

CONTROLLERS: tuple[str, ...] = ("memory", "cpu", "pids")
# A short period: a quota is spent in bursts of at most cpu x period, and a 100 ms period let a
# capped neighbour hold a core for 50 ms at a time (benchmarks/sandbox.py).
CPU_PERIOD_US = 10_000
# The kernel refuses CFS quotas under 1 ms per period.
_MIN_QUOTA_US = 1_000
# A group or prefix name: one path component that cannot be mistaken for an interface file
# ("cgroup.procs", "memory.max"...) only by starting with a dot; collisions are reported by mkdir.
_NAME = re.compile(r"^[A-Za-z0-9_@:-][A-Za-z0-9_.@:-]{0,199}$")
# What each controller's v1 directory must offer to be usable.
_V1_PROBE = {"memory": "memory.limit_in_bytes", "cpu": "cpu.cfs_quota_us", "pids": "pids.max"}
_V1_UNLIMITED = "-1"
# Waiting for processes to exit: SIGKILLed ones take a fraction of a millisecond.
_POLL_FIRST = 0.0002
_POLL_MAX = 0.01


class CgroupError(OSError):
    """A cgroup operation failed (the message names the file and the kernel's reason).

    An ``OSError``, so callers that already handle failing system calls handle it too."""


@dataclass(frozen=True)
class Limits:
    """What one instance may use; ``None`` means unlimited.

    ``memory`` in bytes (swap included: the instance cannot swap to dodge it), ``cpu`` in cores
    (``0.5`` is half of one CPU, ``2.0`` two CPUs, as a quota per 10 ms period), ``pids`` the
    number of processes and threads the group may hold at once, the instance included.
    """

    memory: int | None = None
    cpu: float | None = None
    pids: int | None = None

    def __post_init__(self) -> None:
        if self.memory is not None and (isinstance(self.memory, bool) or self.memory <= 0):
            raise ValueError(f"memory limit must be a positive number of bytes: {self.memory!r}")
        if self.cpu is not None and not (math.isfinite(self.cpu) and self.cpu > 0):
            raise ValueError(f"cpu limit must be a positive number of cores: {self.cpu!r}")
        if self.pids is not None and (isinstance(self.pids, bool) or self.pids < 1):
            raise ValueError(f"pids limit must be at least 1: {self.pids!r}")

    def cpu_quota_us(self) -> int | None:
        """The CFS quota per :data:`CPU_PERIOD_US` period, at least the kernel's 1 ms."""
        if self.cpu is None:
            return None
        return max(_MIN_QUOTA_US, round(self.cpu * CPU_PERIOD_US))


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ValueError(
            f"invalid cgroup {what} {name!r}: use letters, digits and _ - . @ : "
            "(not starting with a dot, at most 200 characters)"
        )


def _describe(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))


def _write(path: Path, value: str) -> None:
    """Write ``value`` to a cgroupfs file in one ``write(2)``, as the kernel expects."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {_describe(exc)}") from exc


def _read(path: Path) -> str:
    with open(path, encoding="ascii") as file:
        return file.read()


def _keyed(path: Path, key: str) -> int | None:
    """The value of ``key`` in a flat-keyed file (``oom_kill 3``), ``None`` if absent."""
    try:
        text = _read(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CgroupError(f"cannot read {path}: {_describe(exc)}") from exc
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return None


def _number(path: Path) -> int | None:
    """The integer in a single-value file; ``None`` if the file is missing or says ``max``."""
    try:
        text = _read(path).strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CgroupError(f"cannot read {path}: {_describe(exc)}") from exc
    return None if text == "max" else int(text)


def _procs(directory: Path) -> set[int]:
    """The live processes in ``directory`` (zombies are not listed); none once it is gone."""
    try:
        text = _read(directory / "cgroup.procs")
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise CgroupError(f"cannot read {directory / 'cgroup.procs'}: {_describe(exc)}") from exc
    return {int(line) for line in text.split()}


def _rmdir_tree(directory: Path, deadline: float) -> None:
    """Remove ``directory`` and any groups below it, retrying while processes are exiting."""
    delay = _POLL_FIRST
    while True:
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise CgroupError(f"cannot remove {directory}: {_describe(exc)}") from exc
            busy = exc
        # Child groups (never made by fissile, but possible) keep the directory busy.
        try:
            children = [entry.path for entry in os.scandir(directory) if entry.is_dir()]
        except FileNotFoundError:
            return
        except OSError:
            children = []
        for child in children:
            _rmdir_tree(Path(child), deadline)
        if not children:
            if time.monotonic() > deadline:
                pids = sorted(_procs(directory))
                raise CgroupError(
                    f"cannot remove {directory}: {_describe(busy)} (processes inside: {pids})"
                ) from busy
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)


class Group(ABC):
    """One instance's cgroup. Made by :meth:`Cgroups.create` or :meth:`Cgroups.open`."""

    def __init__(self, name: str, dirs: dict[str, Path]) -> None:
        self.name = name
        # Each usable controller's directory of this group (v2: the same directory for all).
        self._dirs = dirs

    @property
    def paths(self) -> tuple[Path, ...]:
        """The group's directories: one per v1 hierarchy, one in v2."""
        return tuple(dict.fromkeys(self._dirs.values()))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {[str(p) for p in self.paths]}>"

    @abstractmethod
    def set_limits(self, limits: Limits) -> None:
        """Apply ``limits`` (``None`` fields lift a limit); limits can be lowered and raised.

        Limits whose controller is not available (see :meth:`Cgroups.available`) are skipped.
        Lowering memory below what the group uses makes the kernel reclaim; v1 refuses
        (``CgroupError``) when it cannot, v2 OOM-kills.
        """

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads; its future children are born inside)."""
        for directory in self.paths:
            _write(directory / "cgroup.procs", str(pid))

    @abstractmethod
    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this group since it was made."""

    @abstractmethod
    def memory_peak(self) -> int | None:
        """The highest memory use recorded in bytes, ``None`` when the kernel does not say."""

    def pids(self) -> list[int]:
        """The live processes still inside, sorted (exited ones are never listed)."""
        found: set[int] = set()
        for directory in self.paths:
            found |= _procs(directory)
        return sorted(found)

    def kill_all(self, timeout: float = 2.0) -> None:
        """SIGKILL every process inside, including ones forked meanwhile, and wait until none
        is left alive (zombies do not count); ``CgroupError`` after ``timeout`` seconds.

        ``timeout=0`` only sends the signals (for an event loop that must not wait; a process
        forked at that very moment may then survive until the next call, except with v2's
        ``cgroup.kill``). Exiting takes from a fraction of a millisecond to a few ms."""
        self._kill_signal()
        if timeout <= 0:
            return
        deadline = time.monotonic() + timeout
        delay = _POLL_FIRST
        while True:
            alive = self.pids()
            if not alive:
                return
            if time.monotonic() > deadline:
                raise CgroupError(f"processes {alive} of {self.name} survived SIGKILL")
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
            self._kill_listed(self.pids())  # any forked before the kill reached its parent

    def _kill_signal(self) -> None:
        """Ask the kernel to kill the whole group at once where it can (v2's cgroup.kill)."""
        self._kill_listed(self.pids())

    def _kill_listed(self, pids: Iterable[int]) -> None:
        """SIGKILL those of ``pids`` that are still in this group.

        Holding a pidfd while checking membership again means a pid that was reused by a
        process outside the group is never signalled."""
        handles: dict[int, int | None] = {}
        try:
            for pid in pids:
                try:
                    handles[pid] = os.pidfd_open(pid)
                except ProcessLookupError:
                    continue
                except OSError:  # kernels before 5.3
                    handles[pid] = None
            if not handles:
                return
            members = set(self.pids())
            for pid, fd in handles.items():
                if pid not in members:
                    continue
                try:
                    if fd is None:
                        os.kill(pid, signal.SIGKILL)
                    else:
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            for fd in handles.values():
                if fd is not None:
                    os.close(fd)

    def remove(self, timeout: float = 1.0) -> None:
        """Delete the group; waits up to ``timeout`` seconds for exiting processes to leave it
        (``CgroupError`` if some are still alive). Removing a removed group does nothing."""
        deadline = time.monotonic() + timeout
        for directory in self.paths:
            _rmdir_tree(directory, deadline)


class _V1Group(Group):
    def set_limits(self, limits: Limits) -> None:
        memory = self._dirs.get("memory")
        if memory is not None:
            self._set_memory(memory, limits.memory)
        cpu = self._dirs.get("cpu")
        if cpu is not None:
            quota = limits.cpu_quota_us()
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", _V1_UNLIMITED if quota is None else str(quota))
        pids = self._dirs.get("pids")
        if pids is not None:
            _write(pids / "pids.max", "max" if limits.pids is None else str(limits.pids))

    @staticmethod
    def _set_memory(directory: Path, limit: int | None) -> None:
        value = _V1_UNLIMITED if limit is None else str(limit)
        memory = directory / "memory.limit_in_bytes"
        memsw = directory / "memory.memsw.limit_in_bytes"
        if not memsw.exists():  # no swap accounting: swap is not charged, nothing to close
            _write(memory, value)
            return
        # The kernel keeps memsw (memory + swap) >= memory: when raising, memsw goes first;
        # when lowering, memory goes first. Setting both to the same value leaves no swap.
        current = _number(memory)
        raising = limit is None or current is None or limit >= current
        for path in (memsw, memory) if raising else (memory, memsw):
            _write(path, value)

    def oom_killed(self) -> bool:
        memory = self._dirs.get("memory")
        if memory is None:
            return False
        kills = _keyed(memory / "memory.oom_control", "oom_kill")
        if kills is not None:
            return kills > 0
        # Kernels before 4.13 do not count kills: hitting the limit is the best sign left.
        failures = _number(memory / "memory.failcnt")
        return failures is not None and failures > 0

    def memory_peak(self) -> int | None:
        memory = self._dirs.get("memory")
        return None if memory is None else _number(memory / "memory.max_usage_in_bytes")


class _V2Group(Group):
    def __init__(self, name: str, directory: Path, controllers: frozenset[str]) -> None:
        super().__init__(name, {"cgroup": directory})
        self._dir = directory
        self._controllers = controllers

    def set_limits(self, limits: Limits) -> None:
        directory = self._dir
        if "memory" in self._controllers:
            _write(directory / "memory.max", "max" if limits.memory is None else str(limits.memory))
            swap = directory / "memory.swap.max"  # only with swap accounting
            if swap.exists():
                _write(swap, "max" if limits.memory is None else "0")
            group = directory / "memory.oom.group"  # an OOM kills the whole instance, not a part
            if group.exists():
                _write(group, "1")
        if "cpu" in self._controllers:
            quota = limits.cpu_quota_us()
            _write(directory / "cpu.max", f"{'max' if quota is None else quota} {CPU_PERIOD_US}")
        if "pids" in self._controllers:
            _write(directory / "pids.max", "max" if limits.pids is None else str(limits.pids))

    def oom_killed(self) -> bool:
        if "memory" not in self._controllers:
            return False
        kills = _keyed(self._dir / "memory.events", "oom_kill")
        return kills is not None and kills > 0

    def memory_peak(self) -> int | None:
        if "memory" not in self._controllers:
            return None
        return _number(self._dir / "memory.peak")  # Linux 5.19+

    def _kill_signal(self) -> None:
        kill = self._dir / "cgroup.kill"  # Linux 5.14+: atomic against concurrent forks
        if kill.exists():
            _write(kill, "1")
        else:
            super()._kill_signal()


class Cgroups(ABC):
    """The cgroup hierarchy fissile may use, as found by :func:`detect`."""

    version: int

    def __init__(self, root: Path, prefix: str) -> None:
        self.root = root
        self.prefix = prefix

    @abstractmethod
    def available(self) -> dict[str, bool]:
        """Which of ``memory``, ``cpu`` and ``pids`` can be limited."""

    @property
    @abstractmethod
    def paths(self) -> tuple[Path, ...]:
        """The prefix group's directories (one per v1 hierarchy, one in v2)."""

    @abstractmethod
    def create(self, name: str) -> Group:
        """Make the group ``name`` below the prefix (``CgroupError`` if it exists)."""

    @abstractmethod
    def open(self, name: str) -> Group:
        """The existing group ``name`` (e.g. one a previous run left behind)."""

    def names(self) -> list[str]:
        """The groups below the prefix, sorted."""
        found: set[str] = set()
        for base in self.paths:
            try:
                found.update(entry.name for entry in os.scandir(base) if entry.is_dir())
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise CgroupError(f"cannot list {base}: {_describe(exc)}") from exc
        return sorted(found)

    def __repr__(self) -> str:
        usable = [name for name, ok in self.available().items() if ok]
        return f"<{type(self).__name__} v{self.version} {self.prefix} {usable}>"


def _mkdir(path: Path) -> None:
    try:
        os.mkdir(path)
    except FileExistsError as exc:
        raise CgroupError(f"cgroup {path} already exists") from exc
    except OSError as exc:
        raise CgroupError(f"cannot create {path}: {_describe(exc)}") from exc


class _V1(Cgroups):
    version = 1

    def __init__(self, root: Path, prefix: str, bases: dict[str, Path]) -> None:
        super().__init__(root, prefix)
        self._bases = bases  # usable controller -> <hierarchy>/<prefix>

    @classmethod
    def probe(cls, root: Path, prefix: str) -> _V1:
        bases: dict[str, Path] = {}
        for controller in CONTROLLERS:
            hierarchy = _v1_hierarchy(root, controller)
            if hierarchy is None:
                continue
            base = hierarchy / prefix
            made = False
            try:
                os.mkdir(base)
                made = True
            except FileExistsError:
                pass
            except OSError as exc:  # not root, read-only mount...
                logger.debug("cgroup v1 %s unusable: %s: %s", controller, base, exc)
                continue
            probe = base / _V1_PROBE[controller]
            if probe.exists() and os.access(probe, os.W_OK):
                bases[controller] = base
            elif made:
                try:
                    os.rmdir(base)
                except OSError:
                    pass
        return cls(root, prefix, bases)

    def available(self) -> dict[str, bool]:
        return {controller: controller in self._bases for controller in CONTROLLERS}

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(self._bases.values())

    def create(self, name: str) -> Group:
        _check_name(name, "name")
        dirs: dict[str, Path] = {}
        try:
            for controller, base in self._bases.items():
                _mkdir(base / name)
                dirs[controller] = base / name
        except CgroupError:
            for made in dirs.values():
                try:
                    os.rmdir(made)
                except OSError:
                    pass
            raise
        return _V1Group(name, dirs)

    def open(self, name: str) -> Group:
        _check_name(name, "name")
        dirs = {c: base / name for c, base in self._bases.items() if (base / name).is_dir()}
        if not dirs:
            raise CgroupError(f"no cgroup {name!r} under {self.prefix}")
        return _V1Group(name, dirs)


def _v1_hierarchy(root: Path, controller: str) -> Path | None:
    """The v1 hierarchy of ``controller`` below ``root``: ``root/cpu``, or a co-mount such as
    ``root/cpu,cpuacct``."""
    candidates = [root / controller]
    try:
        candidates += [
            Path(entry.path)
            for entry in os.scandir(root)
            if controller in entry.name.split(",") and entry.name != controller
        ]
    except OSError:
        return None
    for candidate in candidates:
        if (candidate / "cgroup.procs").is_file() and not (
            candidate / "cgroup.controllers"
        ).exists():
            return candidate
    return None


class _V2(Cgroups):
    version = 2

    def __init__(self, root: Path, prefix: str, controllers: frozenset[str]) -> None:
        super().__init__(root, prefix)
        self._base = root / prefix
        self._controllers = controllers

    @classmethod
    def probe(cls, root: Path, prefix: str) -> _V2 | None:
        base = root / prefix
        try:
            os.mkdir(base)
        except FileExistsError:
            pass
        except OSError as exc:
            logger.debug("cgroup v2 unusable: cannot create %s: %s", base, exc)
            return None
        # The controllers must be enabled on the way down: in root (the kernel's root cgroup is
        # exempt from the no-internal-processes rule; a delegated or namespaced root holding
        # processes is not, and is left as it is) and in the prefix, which never holds any.
        if _owns_subtree(root):
            _enable(root, CONTROLLERS)
        _enable(base, CONTROLLERS)
        try:
            enabled = frozenset(_read(base / "cgroup.subtree_control").split())
        except OSError:
            enabled = frozenset()
        return cls(root, prefix, enabled & frozenset(CONTROLLERS))

    def available(self) -> dict[str, bool]:
        return {controller: controller in self._controllers for controller in CONTROLLERS}

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self._base,)

    def create(self, name: str) -> Group:
        _check_name(name, "name")
        _mkdir(self._base / name)
        return _V2Group(name, self._base / name, self._controllers)

    def open(self, name: str) -> Group:
        _check_name(name, "name")
        if not (self._base / name).is_dir():
            raise CgroupError(f"no cgroup {name!r} under {self.prefix}")
        return _V2Group(name, self._base / name, self._controllers)


def _owns_subtree(directory: Path) -> bool:
    """Whether controllers may be enabled in ``directory``: it is the kernel's root cgroup (no
    ``cgroup.type``) or holds no process of its own."""
    if not (directory / "cgroup.type").exists():
        return True
    try:
        return not _read(directory / "cgroup.procs").split()
    except OSError:
        return False


def _enable(directory: Path, controllers: Iterable[str]) -> None:
    """Enable what it can of ``controllers`` in ``directory``'s subtree_control, one at a time
    so that one refusal (a busy parent, real-time tasks and ``cpu``) does not stop the others."""
    try:
        offered = set(_read(directory / "cgroup.controllers").split())
        enabled = set(_read(directory / "cgroup.subtree_control").split())
    except OSError:
        return
    for controller in controllers:
        if controller in offered and controller not in enabled:
            try:
                _write(directory / "cgroup.subtree_control", f"+{controller}")
            except CgroupError as exc:
                logger.debug("cannot enable %s: %s", controller, exc)


def detect(
    root: str | os.PathLike[str] = "/sys/fs/cgroup", prefix: str = "fissile"
) -> Cgroups | None:
    """The usable cgroup hierarchy below ``root``, with the prefix group made; ``None`` when
    none is (not root, read-only or missing cgroupfs, not Linux).

    v2 is chosen when ``root/cgroup.controllers`` exists, else v1. A v1 result has at least one
    usable controller; a v2 result may have none (see :meth:`Cgroups.available`) and still
    tracks and kills an instance's processes. Raises only ``ValueError`` for an invalid prefix.
    """
    _check_name(prefix, "prefix")
    path = Path(root)
    found: Cgroups | None
    try:
        if (path / "cgroup.controllers").is_file():
            found = _V2.probe(path, prefix)
        else:
            found = _V1.probe(path, prefix)
            if found is not None and not any(found.available().values()):
                found = None
    except (OSError, ValueError, CgroupError) as exc:
        logger.debug("cgroups unusable below %s: %s", path, exc)
        return None
    if found is None:
        logger.debug("no writable cgroup hierarchy below %s", path)
    return found


def cleanup_stale(cgroups: Cgroups, *, remove_root: bool = False) -> list[str]:
    """Kill the processes of every group below the prefix and remove the groups (what a crashed
    run left behind); the names removed. With ``remove_root`` the prefix group goes too.
    A group that cannot be removed is logged and skipped."""
    removed: list[str] = []
    for name in cgroups.names():
        try:
            group = cgroups.open(name)
            group.kill_all()
            group.remove()
        except (CgroupError, ValueError) as exc:
            logger.warning("cannot remove stale cgroup %s: %s", name, exc)
            continue
        removed.append(name)
    if remove_root:
        for base in cgroups.paths:
            try:
                os.rmdir(base)
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("cannot remove %s: %s", base, exc)
    return removed
