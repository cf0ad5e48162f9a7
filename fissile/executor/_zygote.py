"""The zygote: one process per environment, started once, that forks instances.

It imports the instance runtime and the environment's preload list, freezes the heap
(``gc.freeze()``, so forked children share those pages instead of copying them when the
collector touches them), and then waits on its control socket. It keeps no threads and no event
loop, so ``fork()`` is safe. Messages are JSON over a SOCK_SEQPACKET socket; file descriptors
(an instance's listening socket and its log pipe) travel with them as SCM_RIGHTS.

A zygote can also fork a *package zygote* (the import cache, ``importcache.py``): a child that
imports a function's dependencies on top of everything its parent has, freezes again, and then
serves its own control socket exactly like its parent, so the functions needing those modules
fork from it instead of importing them at every cold start.

Run as ``python -m fissile.executor._zygote --fd N --preload a,b``.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import gc
import importlib
import importlib.util
import io
import json
import os
import resource
import select
import signal
import socket
import sys
import tempfile
import traceback
from typing import Any

from fissile.executor._prctl import die_with_parent, set_process_name

_MAX_MESSAGE = 65536
# The sandbox's modules are imported here too: after pivot_root an instance may no longer see
# the directory they came from (an editable install, say).
_BUILTIN_PRELOAD = (
    "fissile.runtime.server",
    "fissile.sandbox.filesystem",
    "fissile.sandbox.namespaces",
    "fissile.sandbox.seccomp",
    "uvloop",
    "flask",
    # The contracts whose adapters need nothing the zygote lacks: imported per instance, each
    # cost 1-3 ms of a cold start (measured under load: a lambda hello 14 ms vs native 4 ms).
    # fission_fastapi needs Starlette: the import cache's package zygotes bring it
    # (importcache.COMPANIONS).
    "fissile.runtime.contracts.native",
    "fissile.runtime.contracts.aws_lambda",
    "fissile.runtime.contracts.gcf",
    "fissile.runtime.contracts.openfaas",
    "fissile.runtime.contracts.asgi",
    "fissile.runtime.contracts.wsgi",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fissile-zygote")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--env", default="python")
    parser.add_argument("--preload", default="")
    args = parser.parse_args(argv)

    # Whatever the supervisor had open without close-on-exec (its log, a pipe its own parent
    # passed down) arrives here too: uvloop's subprocess support does not close them
    # (close_fds is ignored; measured). Nothing of it is ours: closed before anything runs.
    close_fds_except({0, 1, 2, args.fd})
    die_with_parent()
    if os.getppid() != args.parent:
        sys.exit(0)  # the supervisor died before the death signal was armed
    set_process_name(f"fz-{args.env}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=args.fd)

    failures = _preload([*_BUILTIN_PRELOAD, *filter(None, args.preload.split(","))])
    _rehearse()
    gc.collect()
    _fill_heap()
    gc.freeze()
    # What the runtime opened for itself while starting (libuv's signal lock pipe): instances
    # keep those, and nothing else of the zygote's.
    runtime_fds = open_fds() - {0, 1, 2, args.fd}
    _send(control, _ready(failures))
    Zygote(control, runtime_fds).run()


def open_fds() -> set[int]:
    """This process's open file descriptors (without the one the listing itself used)."""
    if not _PROC_FD:
        return set()
    return {fd for fd in map(int, os.listdir("/proc/self/fd")) if _is_open(fd)}


def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True


_PROC_FD = os.path.isdir("/proc/self/fd")


def _fd_limit() -> int:
    """Past the highest descriptor this process can have: its hard RLIMIT_NOFILE. With
    close_range(2) (Linux 5.9+; os.closerange uses it) the span costs nothing; without it
    os.closerange closes one number at a time, so an unbounded span would not end."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 2**31 - 1 if hard == resource.RLIM_INFINITY else min(hard, 2**31 - 1)


def close_fds_except(keep: set[int]) -> None:
    """Close every file descriptor but ``keep``."""
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, max(low, _fd_limit()))


def _rehearse() -> None:
    """Run an instance's serving path once here, before freezing: the caches it fills
    (method lookups, compiled patterns, the import system's, uvloop's) are then the zygote's,
    shared by every instance instead of written by each."""
    try:
        from fissile.runtime.server import rehearse_serving

        rehearse_serving()
    except Exception:
        pass


# What fills the holes of the heap for the zygote's lifetime (see _fill_heap): objects in the
# free blocks of pymalloc's pools, and malloc's free chunks (their addresses).
_PLUGS: list[object] = []
_CHUNKS: list[int] = []
_MALLINFO2_FIELDS = (
    "arena",
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",
    "usmblks",
    "fsmblks",
    "uordblks",
    "fordblks",
    "keepcost",  # the top chunk's size
)


def _fill_heap() -> None:
    """Take up the free space scattered through the zygote's heap, for good, right before
    ``gc.freeze()``.

    Allocators reuse free space first: pymalloc a free block in a partly used pool of the
    object's size, glibc's malloc a freed chunk (its per-thread cache, then its bins). After a
    fork, each such allocation (the instance's, and the zygote's own while it goes on serving)
    writes to a page of the shared heap that holds other objects, and copies it. With the holes
    filled, new objects are packed into fresh pages nobody shares. Measured by driving a zygote
    directly: pymalloc's ~3,000 free blocks took 0.3 MiB off each specialized instance (0.25
    off a warm one), malloc's ~0.4 MiB of free chunks another 0.25 MiB (0.15), for 0.5 MiB
    more RSS in the zygote and ~6 ms of its start. Does nothing where pymalloc is off or
    malloc is not glibc's."""
    try:
        _fill_pools()
        _fill_malloc()  # second: growing _PLUGS frees malloc'd arrays
    except Exception:  # only memory is at stake, never the zygote's start
        pass


def _fill_malloc() -> None:
    """Allocate glibc's free chunks (and empty its per-thread cache) from its main arena."""
    try:
        libc = ctypes.CDLL(None)
        malloc, free, sbrk = libc.malloc, libc.free, libc.sbrk
        mallinfo2 = libc.mallinfo2  # glibc >= 2.33
    except (OSError, AttributeError):
        return

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS]

    mallinfo2.restype = Mallinfo2
    malloc.restype = sbrk.restype = ctypes.c_void_p
    malloc.argtypes = (ctypes.c_size_t,)
    free.argtypes = (ctypes.c_void_p,)
    sbrk.argtypes = (ctypes.c_ssize_t,)
    # The per-thread cache: up to 7 chunks of each size up to 1,032 bytes, served first.
    for size in range(24, 1033, 16):
        _CHUNKS.extend(malloc(size) for _ in range(7))
    # Then the free chunks, the large ones first, each size until malloc carves from the top
    # of the heap (fresh memory): that one is given back, it merges with the top again. Never
    # more in all than the arena had free.
    budget = mallinfo2().fordblks
    # Twice: growing _CHUNKS frees its old arrays.
    for size in (65536, 16384, 4096, 1024, 256, 64, 24) * 2:
        while budget >= size:
            top = sbrk(0) - mallinfo2().keepcost
            chunk = malloc(size)
            if not chunk:
                return
            if chunk >= top:
                free(chunk)
                break
            _CHUNKS.append(chunk)
            budget -= size


def _fill_pools() -> None:
    """Fill the free blocks of pymalloc's partly used pools with objects never freed."""
    for _ in range(2):  # the first round's own temporaries leave a few holes
        for size, free in _free_blocks().items():
            if size == 16:
                _PLUGS.extend([object() for _ in range(free)])
            elif size == 32:
                _PLUGS.extend([2**29 + i for i in range(free)])  # a one-digit int: 28 bytes
            elif size > 32:
                _PLUGS.extend([bytes(size - 33) for _ in range(free)])  # 33 bytes + length


def _free_blocks() -> dict[int, int]:
    """pymalloc's free blocks in partly used pools, by block size (sys._debugmallocstats, which
    writes to file descriptor 2; none without one)."""
    try:
        saved = os.dup(2)
    except OSError:
        return {}
    try:
        with tempfile.TemporaryFile() as out:
            os.dup2(out.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
            out.seek(0)
            text = out.read()
    finally:
        os.close(saved)
    free: dict[int, int] = {}
    # "class   size   num pools   blocks in use  avail blocks", one line per size class.
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 5 and all(field.isdigit() for field in fields):
            free[int(fields[1])] = int(fields[4])
    return free


def _ready(failures: dict[str, str], imported: list[str] | None = None) -> dict[str, Any]:
    # The top-level modules already imported: the supervisor leaves them out of the import
    # cache's keys, since every child of this zygote has them anyway.
    modules = sorted({name.partition(".")[0] for name in sys.modules})
    return {
        "op": "ready",
        "pid": os.getpid(),
        "preload_failures": failures,
        "imported": imported or [],
        "modules": modules,
    }


def _import_available(modules: list[str]) -> tuple[list[str], dict[str, str]]:
    """Import those of ``modules`` the environment's Python has (on this process's sys.path,
    which never holds a function's package: its code must only run in a sandbox)."""
    imported: list[str] = []
    failures: dict[str, str] = {}
    for module in modules:
        if module in sys.modules:
            continue
        try:
            if importlib.util.find_spec(module) is None:
                failures[module] = "not installed in the environment"
                continue
            importlib.import_module(module)
            imported.append(module)
        except BaseException as exc:
            failures[module] = f"{type(exc).__name__}: {exc}"
    return imported, failures


def _preload(modules: list[str]) -> dict[str, str]:
    failures: dict[str, str] = {}
    for module in modules:
        try:
            importlib.import_module(module)
        except BaseException as exc:  # a broken preload must not take the environment down
            failures[module] = f"{type(exc).__name__}: {exc}"
    return failures


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    control.send(json.dumps(message).encode())


class Zygote:
    def __init__(self, control: socket.socket, runtime_fds: set[int] | None = None) -> None:
        self.control = control
        self.runtime_fds = runtime_fds or set()
        self.children: set[int] = set()
        self.pid_forker: Any = None
        # Instances arm a parent-death signal after fork; if the zygote died before that, the
        # signal never comes. A pidfd of the zygote tells them: it turns readable when the
        # zygote exits, and (unlike getppid) it works from inside a PID namespace too.
        self.pid = os.getpid()
        self.pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(self.pid)
            except OSError:
                pass
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, lambda signum, frame: None)

    def run(self) -> None:
        while True:
            try:
                readable, _, _ = select.select([self.control.fileno(), self.wake_r], [], [], 1.0)
            except InterruptedError:
                readable = []
            if self.wake_r in readable:
                while True:
                    try:
                        if not os.read(self.wake_r, 512):
                            break
                    except BlockingIOError:
                        break
            self.reap()
            if self.control.fileno() in readable and not self.receive():
                self.shutdown()
                return

    def receive(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.control, _MAX_MESSAGE, 8)
        except OSError:
            return False
        if not data:
            return False
        message = json.loads(data)
        op = message.get("op")
        if op == "fork":
            self.fork(message, fds)
        elif op == "zygote":
            self.fork_zygote(message, fds)
        elif op == "shutdown":
            return False
        else:
            for fd in fds:
                os.close(fd)
        return True

    def fork(self, message: dict[str, Any], fds: list[int]) -> None:
        listener_fd, log_fd = fds
        pid_namespace = bool((message.get("sandbox") or {}).get("pid_namespace"))
        before_fork: set[int] = set()

        def child() -> None:
            try:
                self.become_instance(message, listener_fd, log_fd, before_fork)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(70)

        try:
            if pid_namespace and self.pid_forker is None:
                from fissile.sandbox.namespaces import PidNamespaceForker

                self.pid_forker = PidNamespaceForker()
            # The instance closes all of these but its own; what the fork itself creates
            # (libuv makes its signal lock pipe anew in a child, at whatever numbers are free)
            # it keeps.
            before_fork |= open_fds()
            if pid_namespace:
                pid = self.pid_forker.fork(child)
            else:
                pid = os.fork()
                if pid == 0:
                    child()
        except OSError as exc:
            os.close(listener_fd)
            os.close(log_fd)
            _send(self.control, {"op": "fork_failed", "id": message["id"], "error": str(exc)})
            return
        os.close(listener_fd)
        os.close(log_fd)
        self.children.add(pid)
        _send(self.control, {"op": "forked", "id": message["id"], "pid": pid})

    def fork_zygote(self, message: dict[str, Any], fds: list[int]) -> None:
        """Fork a package zygote: a plain fork (same namespaces as this zygote, so it can fork
        sandboxed instances the same way), given its own control socket."""
        (control_fd,) = fds
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(control_fd)
            _send(self.control, {"op": "fork_failed", "id": message["id"], "error": str(exc)})
            return
        if pid == 0:
            try:
                self.become_zygote(message, control_fd)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(70)
        os.close(control_fd)
        self.children.add(pid)
        _send(self.control, {"op": "forked", "id": message["id"], "pid": pid})

    def become_zygote(self, message: dict[str, Any], control_fd: int) -> None:
        signal.set_wakeup_fd(-1)
        self.control.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        if self.pid_forker is not None:
            self.pid_forker.close()
        die_with_parent()
        if self.pidfd is not None:
            orphaned = bool(select.select([self.pidfd], [], [], 0)[0])
            os.close(self.pidfd)
        else:
            orphaned = os.getppid() != self.pid
        if orphaned:
            os._exit(0)
        set_process_name(f"fz-{message['id']}")
        control = socket.socket(fileno=control_fd)
        imported, failures = _import_available(list(message.get("modules") or []))
        # The parent's heap is still frozen (shared with it); this freezes what was added.
        gc.collect()
        _fill_heap()
        gc.freeze()
        runtime_fds = open_fds() - {0, 1, 2, control_fd}
        _send(control, _ready(failures, imported))
        Zygote(control, runtime_fds).run()
        os._exit(0)

    def become_instance(
        self, message: dict[str, Any], listener_fd: int, log_fd: int, before_fork: set[int]
    ) -> None:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        self.control.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        # A process group of its own (killpg ends everything it starts), but not a session:
        # with sched autogroup each session weighs as much as the router's, so a session per
        # instance let a crowd of instances starve the router (benchmarks/warm.py, p99 x100).
        os.setpgid(0, 0)
        die_with_parent()
        if self.pidfd is not None:
            orphaned = bool(select.select([self.pidfd], [], [], 0)[0])
            os.close(self.pidfd)
        else:
            # From inside a PID namespace the parent shows as 0: only a changed parent counts.
            orphaned = os.getppid() not in (self.pid, 0)
        if orphaned:
            os._exit(0)  # the zygote died before the parent-death signal was armed
        set_process_name(f"fi-{message['id']}")
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        # Before any of the function's code: only its socket, its output (1, 2), /dev/null (0)
        # and the runtime's own descriptors stay; a pid namespace's forker, a sibling's
        # descriptors in flight, anything the zygote was handed are gone.
        made_by_fork = open_fds() - before_fork
        close_fds_except({0, 1, 2, listener_fd} | self.runtime_fds | made_by_fork)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)

        from fissile.runtime.server import serve
        from fissile.sandbox import apply_sandbox

        sandbox = message.get("sandbox") or {}
        apply_sandbox(sandbox)
        serve(socket.socket(fileno=listener_fd), message["token"], sandbox)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            try:
                _send(self.control, {"op": "exit", "pid": pid, "status": status})
            except OSError:
                pass

    def shutdown(self) -> None:
        for pid in self.children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for _ in list(self.children):
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break


if __name__ == "__main__":
    main()
