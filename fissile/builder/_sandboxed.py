"""Runs one build command in its sandbox: ``python -m fissile.builder._sandboxed CONFIG``.

Started by the supervisor (root) with the build's environment and ``CONFIG``, the JSON of
``BuildSandbox.helper_config``. This process joins the build's cgroup and starts a PID
namespace; its child, the namespace's PID 1, makes private mount/IPC/UTS namespaces and the
build's root, drops to the build uid, installs the seccomp filter and runs the command, reaping
what it leaves. When the command exits, PID 1 exits with its status and the kernel kills every
process left in the namespace: nothing a build starts outlives it. Both processes die with
their parent (a SIGKILLed supervisor takes its builds along).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import sys
import traceback
from typing import Any, NoReturn

from fissile.sandbox import _libc
from fissile.sandbox.filesystem import DEVICES, _bind, _tmpfs

# Exit statuses of the helper itself (a command's own status is passed through; a shell uses
# 125 for nothing, 126 and 127 for a command it cannot run).
SETUP_FAILED = 125
EXEC_FAILED = 127
OPEN_FILES = 4096
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_PR_SET_NO_NEW_PRIVS = 38


# prctl here rather than fissile.executor._prctl: importing the executor package (its models,
# pydantic) cost this short-lived process ~200 ms of every build.
def die_with_parent() -> None:
    _libc._lib().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def set_process_name(name: str) -> None:
    _libc._lib().prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def main(argv: list[str]) -> NoReturn:
    config: dict[str, Any] = json.loads(argv[1])
    die_with_parent()
    if os.getppid() != config["parent"]:
        os._exit(SETUP_FAILED)  # the supervisor died before the line above
    set_process_name("fissile-build")
    try:
        for procs in config["cgroup_procs"]:
            with open(procs, "w") as handle:
                handle.write("0")
        _limit_resources()
        _libc.unshare(_libc.CLONE_NEWPID)
    except OSError as exc:
        _fail(f"cannot set up the build sandbox: {exc}")
    # Held open by this process for its lifetime: PID 1 learns from its end whether this
    # process died before PID 1 asked the kernel to tell it (a fork does not inherit that
    # request, and getppid() in a new PID namespace is 0 whoever the parent is).
    alive, held = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(held)
        _init(config, alive)
    os.close(alive)
    _, status = os.waitpid(pid, 0)
    os._exit(_exit_code(status))


def _init(config: dict[str, Any], parent_alive: int) -> NoReturn:
    """PID 1 of the build's namespace."""
    try:
        die_with_parent()
        _exit_if_orphaned(parent_alive)
        _libc.unshare(_libc.CLONE_NEWNS | _libc.CLONE_NEWIPC | _libc.CLONE_NEWUTS)
        _libc.sethostname("build")
        _build_root(config["root"])
        uid = int(config["uid"])
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        die_with_parent()  # a change of credentials clears it
        _exit_if_orphaned(parent_alive)
        # Set-uid programs of the bound system directories must not raise it (seccomp sets
        # this too, where the host has it).
        if _libc._lib().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if config.get("seccomp"):
            from fissile.sandbox.seccomp import install_filter

            install_filter()
    except Exception:
        _fail(f"cannot set up the build sandbox:\n{traceback.format_exc()}")
    command: list[str] = config["command"]
    child = os.fork()
    if child == 0:
        try:
            os.chdir(config["cwd"])
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"cannot run {command[0]}: {exc.strerror}", flush=True)
        os._exit(EXEC_FAILED)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:  # pragma: no cover - the command is always waited for
            os._exit(SETUP_FAILED)
        if pid == child:
            os._exit(_exit_code(status))


def _exit_if_orphaned(parent_alive: int) -> None:
    """Exit if the parent died before the last ``die_with_parent``: its signal would never
    come, and a SIGKILLed supervisor's build would run on (seen on a loaded machine)."""
    readable, _, _ = select.select([parent_alive], [], [], 0)
    if readable:  # end of file: the only writer is gone
        os._exit(SETUP_FAILED)


def _build_root(plan: dict[str, Any]) -> None:
    """A fresh tmpfs root: the system and Python read-only, ``/tmp`` and ``/build`` (with the
    source at ``/build/src``) the build's, ``/proc`` of its PID namespace, a minimal ``/dev``;
    the data dir masked where a system bind would show it."""
    root = plan["staging"]
    _libc.mount(None, "/", None, _libc.MS_REC | _libc.MS_PRIVATE, None)
    _tmpfs(root, 1 << 20, "755")
    os.makedirs(root + "/proc")
    flags = _libc.MS_NOSUID | _libc.MS_NODEV | _libc.MS_NOEXEC
    _libc.mount("proc", root + "/proc", "proc", flags, None)
    dev = root + "/dev"
    os.makedirs(dev)
    _tmpfs(dev, 65536, "755")
    for name in DEVICES:
        with open(f"{dev}/{name}", "w"):
            pass
        _libc.mount(f"/dev/{name}", f"{dev}/{name}", None, _libc.MS_BIND, None)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0")):
        os.symlink(target, f"{dev}/{name}")
    os.symlink("/proc/self/fd/1", f"{dev}/stdout")
    os.symlink("/proc/self/fd/2", f"{dev}/stderr")
    os.makedirs(dev + "/shm")
    _tmpfs(dev + "/shm", 64 << 20, "1777", _libc.MS_NOEXEC)
    # /tmp before the system binds, so that a Python installation below /tmp lands on top.
    os.makedirs(root + "/tmp")
    _bind(plan["tmp"], root + "/tmp", writable=True)
    for path in plan["binds"]:
        target = root + path
        if os.path.islink(path):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.lexists(target):
                os.symlink(os.readlink(path), target)
        elif os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
            _bind(path, target)
    for path in plan["masks"]:
        if os.path.isdir(root + path):
            _tmpfs(root + path, 4096, "000", _libc.MS_RDONLY | _libc.MS_NOEXEC)
    os.makedirs(root + "/build", exist_ok=True)
    _bind(plan["build"], root + "/build", writable=True)
    _mount_source(plan, root + "/build/src")
    os.makedirs(root + "/.old")
    _libc.pivot_root(root, root + "/.old")
    os.chdir("/")
    _libc.umount("/.old", _libc.MNT_DETACH)
    os.rmdir("/.old")
    flags = _libc.MS_REMOUNT | _libc.MS_RDONLY | _libc.MS_NOSUID | _libc.MS_NODEV
    _libc.mount(None, "/", None, flags, None)


def _mount_source(plan: dict[str, Any], target: str) -> None:
    """The source through an overlay (writable, the source itself untouched); read-only where
    the kernel has no overlayfs."""
    options = f"lowerdir={plan['src']},upperdir={plan['upper']},workdir={plan['overlay']}"
    try:
        _libc.mount("overlay", target, "overlay", _libc.MS_NOSUID | _libc.MS_NODEV, options)
    except OSError:
        _bind(plan["src"], target)


def _limit_resources() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _fail(message: str) -> NoReturn:
    print(message, flush=True)
    os._exit(SETUP_FAILED)


if __name__ == "__main__":
    main(sys.argv)
