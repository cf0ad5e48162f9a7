"""Image ``binary`` (Fission's binary environment): each request runs an executable of the
function's package, its body on stdin, the request in environment variables; what it writes
to stdout is the response's body. Its stderr is the instance's, so the function's log."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from typing import IO, Any

from fissile.runtime.context import Context
from fissile.runtime.contracts import Handler
from fissile.runtime.loader import LoadError
from fissile.runtime.request import Request
from fissile.runtime.response import BYTES_TYPE, TEXT_TYPE, Response

CONTRACT = "binary"
DEFAULT_ENTRYPOINT = "main"


def find_executable(deploy_dir: str, entrypoint: str) -> str:
    """The file ``entrypoint`` names at the top of the package; with the default (``main``)
    and no such file, the package's only file (a function made with ``--code script.sh``)."""
    path = os.path.join(deploy_dir, entrypoint)
    if os.path.isfile(path):
        return path
    if entrypoint in ("", DEFAULT_ENTRYPOINT):
        files = [
            name
            for name in sorted(os.listdir(deploy_dir))
            if not name.startswith(".") and os.path.isfile(os.path.join(deploy_dir, name))
        ]
        if len(files) == 1:
            return os.path.join(deploy_dir, files[0])
        raise LoadError(
            f"the package has {len(files)} files; name the executable with --entrypoint"
        )
    raise LoadError(f"no file {entrypoint!r} at the top of the package")


def request_environment(base: dict[str, str], request: Request) -> dict[str, str]:
    """``base`` plus the request, the way Fission's binary environment passes it
    (``REQUEST_METHOD``, ``REQUEST_URI``, ``CONTENT_LENGTH``, each header as ``HTTP_<NAME>``
    upper-cased), and each header's CGI spelling too (dashes as underscores), which a shell
    can read as ``$HTTP_X_NAME``."""
    env = dict(base)
    uri = f"{request.path}?{request.query_string}" if request.query_string else request.path
    env["REQUEST_METHOD"] = request.method
    env["REQUEST_URI"] = uri
    env["QUERY_STRING"] = request.query_string
    env["CONTENT_LENGTH"] = str(len(request.body))
    for name, value in request.headers.items():
        if "\0" in value or "=" in name:
            continue
        upper = name.upper()
        env[f"HTTP_{upper}"] = value
        env[f"HTTP_{upper.replace('-', '_')}"] = value
    return env


async def run(argv: list[str], cwd: str, env: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """Run ``argv`` with ``body`` on its stdin; its exit status (negative: the signal) and
    stdout. Started with ``subprocess`` (vfork and exec: ~0.8 ms) rather than the event loop's
    own subprocess support (uvloop forks the whole instance: ~3 ms and more as it grows), then
    followed on the loop: its pipes non-blocking, its exit through a pidfd."""
    loop = asyncio.get_running_loop()
    process = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd, env=env, close_fds=True
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        output, _ = await asyncio.gather(
            _read_all(loop, process.stdout.fileno()), _write_all(loop, process.stdin, body)
        )
        await _exited(loop, process.pid)
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        process.stdin.close()
        process.stdout.close()
    return process.wait(), output


async def _read_all(loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            await _ready(loop, fd, loop.add_reader, loop.remove_reader)
            continue
        if not data:
            return b"".join(chunks)
        chunks.append(data)


async def _write_all(loop: asyncio.AbstractEventLoop, stdin: IO[bytes], body: bytes) -> None:
    """Write the body and close stdin (the program's end of input); a program may exit
    without reading it all."""
    fd = stdin.fileno()
    os.set_blocking(fd, False)
    view = memoryview(body)
    try:
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                await _ready(loop, fd, loop.add_writer, loop.remove_writer)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        stdin.close()


async def _exited(loop: asyncio.AbstractEventLoop, pid: int) -> None:
    pidfd = os.pidfd_open(pid)
    try:
        await _ready(loop, pidfd, loop.add_reader, loop.remove_reader)
    finally:
        os.close(pidfd)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, add: Any, remove: Any) -> None:
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    add(fd, wake)
    try:
        await waiter
    finally:
        remove(fd)


def describe(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = "unknown"
        return f"killed by signal {-status} ({name})"
    return f"exited with status {status}"


def bind(deploy_dir: str, entrypoint: str, function: str) -> Handler:
    path = find_executable(deploy_dir, entrypoint)
    # Fission runs every file with /bin/sh; an executable (a compiled program, a script
    # with its #! line) runs as it is, anything else with sh as there.
    argv = [path] if os.access(path, os.X_OK) else ["/bin/sh", path]
    name = os.path.basename(path)
    # As in Fission, the package's own executables are found by name.
    base = dict(os.environ)
    base["PATH"] = f"{base.get('PATH', '')}:{deploy_dir}"

    async def invoke(request: Request, context: Context) -> Response:
        env = request_environment(base, request)
        status, output = await run(argv, deploy_dir, env, request.body)
        if status != 0:
            message = f"{name} {describe(status)}"
            os.write(2, f"fissile: {message}\n".encode(errors="replace"))
            error = {"code": "function_error", "type": "exit", "message": message}
            return Response({"error": {**error, "function": function}}, 500)
        try:
            output.decode("utf-8")
            content_type = TEXT_TYPE
        except UnicodeDecodeError:
            content_type = BYTES_TYPE
        return Response(output, content_type=content_type)

    return Handler(path, CONTRACT, invoke, is_async=True)
