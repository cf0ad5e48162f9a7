"""The files of a function's secrets and config maps, made by the supervisor for its instances.

Each function that uses any gets a directory of its own under the values root (kept in memory,
``/dev/shm``, where the host has it): ``<root>/<function>.<n>/secrets/<namespace>/<name>/<key>``
and ``.../configs/...``, owned by the function's uid (read-only: 0500 directories, 0400 files)
when instances run as uids of their own. A strict sandbox binds its two halves read-only at
``/secrets`` and ``/configs`` in the instance (``fissile.sandbox.filesystem.mount_values``);
without mount namespaces the instance is told where they are (``FISSILE_SECRETS_DIR``,
``FISSILE_CONFIGS_DIR``). A change of a value makes a new directory, ``.<n+1>``: instances
that still serve with the old one keep it until the next change.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fissile.models import FunctionSpec
from fissile.store import Store
from fissile.values import refs
from fissile.values.records import values_of
from fissile.values.sealing import Sealer, SealError

SECRETS_DIR = "/secrets"
CONFIGS_DIR = "/configs"
SECRETS_ENV = "FISSILE_SECRETS_DIR"
CONFIGS_ENV = "FISSILE_CONFIGS_DIR"


class ValuesUnavailable(Exception):
    """A function's secret or config map is missing (deleted, or a key gone), or cannot be
    opened; its instances cannot start."""


@dataclass
class Prepared:
    """What an instance of a function gets: its values directory and its resolved env vars."""

    directory: str | None = None
    env_vars: dict[str, str] = field(default_factory=dict)


def values_root(base: Path | None = None) -> Path:
    """A fresh private directory for the values, in memory when the host has ``/dev/shm``:
    opened secrets are never written to a disk. Those of platforms that died without cleaning
    up (killed outright) are removed first: their opened secrets would stay there until a
    reboot."""
    if base is None:
        shm = Path("/dev/shm")
        usable = shm.is_dir() and os.access(shm, os.W_OK | os.X_OK)
        base = shm if usable else Path(tempfile.gettempdir())
    _prune_dead(base)
    root = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=str(base)))
    # Traversable by functions' uids (without mount namespaces they read their own directory
    # here); each directory below is its function's alone.
    root.chmod(0o711)
    return root


_PREFIX = "fissile-values-"


def _prune_dead(base: Path) -> None:
    for path in base.glob(f"{_PREFIX}*-*"):
        pid = path.name[len(_PREFIX) :].partition("-")[0]
        if not pid.isdigit() or not path.is_dir() or path.is_symlink():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # that platform is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, someone else's
        if path.stat().st_uid == os.getuid():
            _remove(path)


class ValueMounts:
    def __init__(self, store: Store, root: Path, sealer: Sealer | None) -> None:
        self.store = store
        self.root = root
        self.sealer = sealer
        self._prepared: dict[str, Prepared] = {}
        self._serial = 0

    def prepare(self, spec: FunctionSpec, uid: int | None, mounted: bool) -> Prepared:
        """The function's values, written once per change (cached until ``forget``).
        ``uid``: who must read them (None: this process's user); ``mounted``: instances see
        them at /secrets and /configs (a strict sandbox) rather than here."""
        if not refs.used(spec):
            return Prepared(env_vars=dict(spec.env_vars))
        cached = self._prepared.get(spec.name)
        if cached is not None:
            return cached
        opened: dict[tuple[str, str], dict[str, str]] = {}
        for kind, name in sorted(refs.used(spec)):
            opened[(kind, name)] = self._open(kind, name, spec.name)

        def lookup(kind: str, name: str, key: str) -> str:
            values = opened[(kind, name)]
            if key not in values:
                singular = "secret" if kind == "secrets" else "config map"
                raise ValuesUnavailable(f"{singular} {name!r} has no key {key!r}")
            return values[key]

        env_vars = {k: refs.expand(v, lookup) for k, v in spec.env_vars.items()}
        self._serial += 1
        directory = self.root / f"{spec.name}.{self._serial}"
        partial = self.root / f".{spec.name}.{self._serial}"
        try:
            for subdir, kind, references in (
                ("secrets", "secrets", spec.secrets),
                ("configs", "configmaps", spec.configmaps),
            ):
                (partial / subdir).mkdir(parents=True)
                for namespace, name in dict.fromkeys((r.namespace, r.name) for r in references):
                    place = partial / subdir / namespace / name
                    place.mkdir(parents=True)
                    for key, value in opened[(kind, name)].items():
                        _write(place / key, value)
            _own(partial, uid)
            partial.rename(directory)
        except BaseException:
            _remove(partial)
            raise
        self._drop_old(spec.name, keep=directory)
        if mounted:
            env_vars.update({SECRETS_ENV: SECRETS_DIR, CONFIGS_ENV: CONFIGS_DIR})
        else:
            env_vars.update(
                {SECRETS_ENV: str(directory / "secrets"), CONFIGS_ENV: str(directory / "configs")}
            )
        prepared = Prepared(str(directory), env_vars)
        self._prepared[spec.name] = prepared
        return prepared

    def _open(self, kind: str, name: str, function: str) -> dict[str, str]:
        record = self.store.find(kind, name)
        singular = "secret" if kind == "secrets" else "config map"
        if record is None:
            raise ValuesUnavailable(f"{singular} {name!r} of function {function!r} does not exist")
        if self.sealer is None:
            raise ValuesUnavailable("this platform has no secrets key")
        try:
            return values_of(kind, record.data, self.sealer)
        except SealError as exc:
            raise ValuesUnavailable(str(exc)) from None

    def forget(self, function: str) -> None:
        """The function changed: its next instance gets its values written afresh."""
        self._prepared.pop(function, None)

    def remove(self, function: str) -> None:
        """The function is gone: so are its files."""
        self._prepared.pop(function, None)
        self._drop_old(function, keep=None, keep_previous=False)

    def _drop_old(self, function: str, keep: Path | None, keep_previous: bool = True) -> None:
        # The newest older one stays: instances rolled out just now may still be draining on it.
        older = sorted(
            (p for p in self.root.glob(f"{function}.*") if p != keep and _serial(p) is not None),
            key=lambda p: _serial(p) or 0,
        )
        for path in older[:-1] if keep_previous else older:
            _remove(path)

    def close(self) -> None:
        _remove(self.root)


def _serial(path: Path) -> int | None:
    suffix = path.name.rpartition(".")[2]
    return int(suffix) if suffix.isdigit() else None


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o400)
    with os.fdopen(fd, "wb") as handle:
        handle.write(value.encode())


def _remove(top: Path) -> None:
    # Directories were made read-only (0500): writable again first, or an unprivileged
    # supervisor could not empty them.
    for dirpath, _dirnames, _filenames in os.walk(top):
        try:
            os.chmod(dirpath, 0o700)
        except OSError:
            pass
    shutil.rmtree(top, ignore_errors=True)


def _own(top: Path, uid: int | None) -> None:
    """Read-only for the one user that must read it: the function's uid, or ours."""
    for dirpath, _dirnames, filenames in os.walk(top):
        for name in filenames:
            if uid is not None:
                os.chown(os.path.join(dirpath, name), uid, uid)
        if uid is not None:
            os.chown(dirpath, uid, uid)
        os.chmod(dirpath, 0o500)
