"""Image ``command``: the instance becomes the function's own program.

The instance is specialized like any other (the sandbox's specialization half, as the
function's uid), answers the executor, then ``execve``s the environment's command in the
function's package. The program inherits the instance's listening unix socket as fd 3 and
serves HTTP/1.1 on it, or on one it binds at ``FISSILE_SOCKET`` (a server that takes a path
only); it keeps the pid, the process group, the cgroup, the namespaces,
the seccomp filter, the parent-death signal and the output pipe, so the platform treats it as
it treats a Python instance.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from typing import NoReturn

from fissile._commandline import split_command

#: The listening socket's descriptor in the program, as systemd's socket activation passes
#: it (``LISTEN_FDS``), which several languages' libraries accept as they are.
LISTEN_FD = 3
#: The path a program may bind instead, inside its sandbox.
PRIVATE_SOCKET = "/tmp/.fissile-http.sock"
# Python ignores SIGPIPE and SIGXFSZ, which an exec keeps, and the runtime handles the others:
# a program expects the defaults of them all.
_RESET = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class CommandError(Exception):
    """The command cannot be run (not found, not executable); shown to the caller."""


def resolve(command: str, deploy_dir: str) -> list[str]:
    """The argv to exec: a program named with a ``/`` is the package's (relative to
    ``deploy_dir``, its working directory); a bare name is looked up on ``PATH``."""
    try:
        argv = split_command(command)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    program = argv[0]
    if "/" in program:
        path = os.path.join(deploy_dir, program)
        if not os.path.isfile(path):
            where = "" if os.path.isabs(program) else " of the package"
            raise CommandError(f"{program!r} is not a file{where}")
        if not os.access(path, os.X_OK):
            raise CommandError(f"{program!r} is not executable (chmod +x, or run it with sh)")
    else:
        found = shutil.which(program, path=os.environ.get("PATH"))
        if found is None:
            raise CommandError(f"{program!r} is not on PATH ({os.environ.get('PATH', '')})")
        path = found
    return [path, *argv[1:]]


def socket_path(private_tmp: bool, listener_path: str) -> str:
    """Where the program may bind a socket of its own instead of using fd 3 (for servers that
    take a path only): in its private /tmp, or without one next to the instance's socket."""
    if private_tmp:
        return PRIVATE_SOCKET
    return os.path.splitext(listener_path)[0] + ".http.sock"


def program_environment(function: str, path: str) -> dict[str, str]:
    """The instance's environment (scrubbed, plus the function's variables), and where the
    socket is."""
    env = dict(os.environ)
    env.update(
        FISSILE_FUNCTION=function,
        FISSILE_SOCKET=path,
        FISSILE_SOCKET_FD=str(LISTEN_FD),
        LISTEN_FDS="1",
        LISTEN_FDNAMES="http",
        LISTEN_PID=str(os.getpid()),
    )
    return env


def hand_over(
    connection_fd: int, answer: bytes, listener_fd: int, argv: list[str], env: dict[str, str]
) -> NoReturn:
    """Send the specialization's answer, then become the program. Called synchronously from
    the request's callback: the event loop never runs again, so no other connection is
    accepted here; those waiting in the socket's backlog are the program's."""
    os.set_blocking(connection_fd, True)
    view = memoryview(answer)
    while view:
        view = view[os.write(connection_fd, view) :]
    if listener_fd != LISTEN_FD:
        os.dup2(listener_fd, LISTEN_FD)
    os.set_inheritable(LISTEN_FD, True)
    os.set_blocking(LISTEN_FD, True)
    # Everything else (the connection, libuv's signal pipe, the event loop's epoll) stays
    # behind; stdin, stdout and stderr are the instance's.
    os.closerange(LISTEN_FD + 1, os.sysconf("SC_OPEN_MAX"))
    for number in _RESET:
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(argv[0], argv, env)
    except OSError as exc:
        # The answer has gone: the exit status and this line are how the executor hears.
        os.write(2, f"fissile: cannot run {argv[0]}: {exc}\n".encode(errors="replace"))
        os._exit(127)
