"""The HTTP/1.1 server inside an instance: httptools on asyncio, no framework.

It listens on a unix socket handed over by the executor. Until specialized it only answers the
executor's control requests (authenticated by a per-instance token); afterwards every request
goes to the function.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import traceback
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any, NoReturn

import httptools

from fissile.runtime import logs, websocket
from fissile.runtime._flow import WriteFlow
from fissile.runtime._pages import release_zero_pages
from fissile.runtime.context import Context
from fissile.runtime.contracts import AUTO, Handler, bind, fission
from fissile.runtime.loader import LoadError, load_entry, load_entrypoint
from fissile.runtime.request import Request
from fissile.runtime.response import (
    BYTES_TYPE,
    JSON_TYPE,
    TEXT_TYPE,
    InvalidResponse,
    Response,
    Stream,
    encode_chunk,
)
from fissile.sandbox import enter_function

CONTROL_PREFIX = "/_fissile/"
CONTROL_HEADER = "x-fissile-control"
# Set by the server itself: a function's own copy would contradict it.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})
_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
# Fission's environments append the package to sys.path after their own site-packages: a
# package pinning an old Flask must not replace the runtime's.
_PACKAGE_LAST = frozenset({"fission", "fission-fastapi"})
# Images whose functions are programs, not Python (fissile.runtime.binary, .command).
_FOREIGN_IMAGES = frozenset({"binary", "command"})


class InstanceApp:
    """What an instance knows: its control token and, once specialized, its function."""

    def __init__(self, token: str, sandbox: dict[str, Any] | None = None) -> None:
        self.token = token
        self.sandbox = sandbox or {}
        self.handler: Handler | None = None
        self.function = ""
        self.timeout = 60.0
        self.threads: ThreadPoolExecutor | None = None
        self.logger = logging.getLogger("function")
        self.listener_fd = -1
        self.listener_path = ""
        # Image command: the program this instance becomes once it has answered, and where it
        # may bind a socket of its own.
        self.program: list[str] | None = None
        self.program_socket = ""

    def specialize(self, spec: dict[str, Any]) -> Response | Coroutine[Any, Any, Response]:
        if self.handler is not None:
            return _error(409, "already_specialized", f"instance already runs {self.function}")
        self.function = spec["function"]
        self.timeout = float(spec.get("timeout", 60.0))
        self.logger = logging.getLogger(self.function)
        sys.dont_write_bytecode = True  # packages are read-only, and shared by instances
        try:
            deploy_dir = enter_function(self.sandbox, spec)
        except Exception as exc:
            logs.error(f"fissile: cannot confine {self.function}: {exc}")
            return _error(500, "sandbox_failed", f"sandbox: {exc}")
        if spec.get("image") in _FOREIGN_IMAGES:
            return self._specialize_program(spec, deploy_dir)
        try:
            mark = _modules_mark()
            contract = spec.get("contract") or AUTO
            # Fission's functions are imported inside a Flask app (module-level current_app).
            load = fission.load if contract in (AUTO, "fission") else load_entry
            func, module = load(
                deploy_dir,
                spec.get("entrypoint") or "main",
                package_first=contract not in _PACKAGE_LAST,
            )
            options = {"memory": spec.get("memory")}  # Lambda's context.memory_limit_in_mb
            loaded = _modules_since(mark)
            handler = bind(func, self.function, deploy_dir, loaded, contract, module, options)
        except (LoadError, TypeError) as exc:
            logs.error(f"fissile: cannot load {self.function}: {exc}")
            return _error(500, "load_failed", str(exc))
        if not handler.is_async and int(spec.get("concurrency", 1)) > 1:
            self.threads = ThreadPoolExecutor(int(spec["concurrency"]), self.function)
        body = {"function": self.function, "contract": handler.contract, "async": handler.is_async}
        if handler.startup is not None:
            return self._start(handler, body)
        self.handler = handler
        return Response(body)

    async def _start(self, handler: Handler, body: dict[str, Any]) -> Response:
        """Run the function's startup (an ASGI app's lifespan) on the instance's loop before
        answering the specialization: a failure fails the load, like an import error."""
        assert handler.startup is not None
        try:
            await handler.startup()
        except SystemExit as exc:
            _exit(exc)
        except Exception as exc:
            logs.error(_user_traceback(exc) + f"fissile: cannot start {self.function}: {exc}")
            return _error(500, "load_failed", f"startup failed: {type(exc).__name__}: {exc}")
        self.handler = handler
        return Response(body)

    def _specialize_program(self, spec: dict[str, Any], deploy_dir: str) -> Response:
        """A function that is a program: run per request (binary), or exec'd (command)."""
        image = spec["image"]
        try:
            if image == "binary":
                from fissile.runtime import binary

                entrypoint = spec.get("entrypoint") or ""
                self.handler = binary.bind(deploy_dir, entrypoint, self.function)
            else:
                from fissile.runtime import command

                argv = command.resolve(spec.get("command") or "", deploy_dir)
                os.chdir(deploy_dir)
                private_tmp = bool(self.sandbox.get("filesystem"))
                self.program_socket = command.socket_path(private_tmp, self.listener_path)
                self.program = argv  # only now: a failed start answers, and stays Python
        except Exception as exc:
            logs.error(f"fissile: cannot load {self.function}: {exc}")
            return _error(500, "load_failed", f"{image}: {exc}")
        # A program serves requests concurrently (an HTTP server, a process per request).
        body = {"function": self.function, "contract": image, "async": True}
        if self.program is not None:
            body["socket"] = self.program_socket
        return Response(body)


_ModulesMark = tuple[int, str | None, object]


def _modules_mark() -> _ModulesMark:
    """Where ``sys.modules`` ends now: its size, and its newest entry."""
    newest = next(reversed(sys.modules), None)
    return len(sys.modules), newest, sys.modules.get(newest) if newest is not None else None


def _modules_since(mark: _ModulesMark) -> list[str]:
    """The modules imported since ``mark``, found from the end of ``sys.modules`` (a dict keeps
    insertion order). Iterating all of it (``set(sys.modules)``) writes the reference count of
    every module's name, and those strings lie scattered over the zygote's heap: that copied
    ~180 of its pages, 0.7 MiB of each specialized instance's 6.3 MiB of private memory,
    and cost ~0.9 ms of each cold start.
    Should the import have removed or re-added the newest entry, the walk goes on to the
    start: more names than needed, never fewer."""
    count, newest, module = mark
    added = len(sys.modules) - count
    names: list[str] = []
    for name in reversed(sys.modules):
        if name == newest and sys.modules[name] is module and len(names) >= added:
            break
        names.append(name)
    return names


class HttpConnection(WriteFlow):
    """One keep-alive connection from the router; requests are answered in order."""

    def __init__(self, app: InstanceApp) -> None:
        self.app = app
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.queue: deque[tuple[Request, bool]] = deque()
        self.busy = False
        self.upgrading: Request | None = None  # an upgrade request, parsed
        # Set while the router reads slower than a streamed body is produced.
        self.writable: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgrade(data[exc.args[0] :])
        except httptools.HttpParserError as exc:
            self.write(_error(400, "bad_request", f"malformed request: {exc}"), keep_alive=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.resume_writing()  # a paused stream wakes up to find the connection gone

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        url = self.url
        if url[:1] == b"/" and b"#" not in url:
            # The router's origin-form target: split here, as parse_url would (0.2 µs
            # instead of 0.4, timeit).
            path, _, query = url.decode("latin-1").partition("?")
        else:
            parsed = httptools.parse_url(url)
            path = parsed.path.decode("latin-1")
            query = parsed.query.decode("latin-1") if parsed.query else ""
        method = self.parser.get_method().decode("ascii")
        request = Request(method, path, query, self.headers, b"".join(self.body))
        # The header test first: a dict lookup is cheaper than asking the parser.
        if "upgrade" in self.headers and self.parser.should_upgrade():
            self.upgrading = request  # served when feed_data raises HttpParserUpgrade
            return
        self.queue.append((request, self.parser.should_keep_alive()))
        if not self.busy:
            self.next()

    def upgrade(self, rest: bytes) -> None:
        """A websocket takes the connection over (``fissile.runtime.websocket``); the router
        opens one connection per websocket, so nothing else is on it."""
        request, self.upgrading = self.upgrading, None
        transport, self.transport = self.transport, None
        if transport is None:
            return
        if request is None or self.busy or self.queue:
            self.transport = transport
            message = "an upgrade request must be alone on its connection"
            self.write(_error(400, "bad_request", message), keep_alive=False)
            return
        websocket.upgrade(transport, self.app.handler, self.app.function, request, rest)

    # -- dispatch -----------------------------------------------------------------------

    def next(self) -> None:
        while self.queue and self.transport is not None:
            request, keep_alive = self.queue.popleft()
            result = self.dispatch(request)
            if isinstance(result, Response):
                if self.respond(result, keep_alive):
                    continue
                return
            self.busy = True
            task = asyncio.ensure_future(result)
            task.add_done_callback(functools.partial(self._finished, keep_alive=keep_alive))
            return

    def _finished(self, task: asyncio.Future[Response], *, keep_alive: bool) -> None:
        self.busy = False
        if self.respond(task.result(), keep_alive):
            self.next()

    def respond(self, response: Response, keep_alive: bool) -> bool:
        """Write ``response``; False while its body streams on (``next`` runs when it ends)."""
        if response.stream is None:
            self.write(response, keep_alive)
            return True
        self.busy = True
        task = asyncio.ensure_future(self.stream(response, response.stream, keep_alive))
        task.add_done_callback(self._streamed)
        return False

    def _streamed(self, task: asyncio.Future[None]) -> None:
        self.busy = False
        self.next()

    async def stream(self, response: Response, body: Stream, keep_alive: bool) -> None:
        """A streamed body in chunked encoding, each item written as it is produced, and the
        next one asked for only while the router keeps up (its socket's flow control). An
        error after the head went out ends the connection without the chunked terminator:
        the client sees a broken body, not a complete one."""
        items = _Items(body, self.app.threads)
        try:
            try:
                first = await items.next()
            except SystemExit as exc:
                _exit(exc)
            except Exception as exc:
                self.write(_failed(self.app.function, exc), keep_alive)
                return
            headers = response.headers
            if first is not _END and not any(k.lower() == "content-type" for k, _ in headers):
                default = TEXT_TYPE if isinstance(first, str) else BYTES_TYPE
                headers = [*headers, ("content-type", default)]
            try:
                head = _head(headers)
                data = b"" if first is _END else encode_chunk(first)
            except (ValueError, TypeError) as exc:
                self.write(_failed(self.app.function, exc), keep_alive)
                return
            status = response.status
            lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown")), head]
            lines.append(b"transfer-encoding: chunked\r\n")
            if not keep_alive:
                lines.append(b"connection: close\r\n")
            lines.append(b"\r\n")
            while True:
                transport = self.transport
                if transport is None:
                    return  # the router left: the rest is not wanted
                if data:  # an empty chunk would end the body
                    lines += [b"%x\r\n" % len(data), data, b"\r\n"]
                transport.write(b"".join(lines))
                lines = []
                while self.writable is not None:
                    await self.writable
                if self.transport is None:
                    return
                try:
                    item = await items.next()
                except SystemExit as exc:
                    _exit(exc)
                except Exception as exc:
                    logs.error(_user_traceback(exc))
                    transport.close()
                    return
                if item is _END:
                    break
                try:
                    data = encode_chunk(item)
                except TypeError as exc:
                    logs.error(f"{self.app.function}: {exc}")
                    transport.close()
                    return
            if self.transport is not None:
                self.transport.write(b"0\r\n\r\n")
                if not keep_alive:
                    self.transport.close()
        finally:
            await items.close()

    def dispatch(self, request: Request) -> Response | asyncio.Future[Response] | Any:
        if request.path.startswith(CONTROL_PREFIX) and CONTROL_HEADER in request.headers:
            return self.control(request)
        handler = self.app.handler
        if handler is None:
            return _error(503, "not_specialized", "this instance has no function yet")
        headers = request.headers
        depth = headers.get("x-fissile-chain-depth", "0")
        context = Context(
            self.app.function,
            headers.get("x-fissile-invocation-id", ""),
            float(headers.get("x-fissile-timeout", self.app.timeout)),
            self.app.logger,
            headers.get("x-fissile-chain-id", ""),
            int(depth) if depth.isdigit() else 0,
            headers.get("traceparent", ""),
        )
        request.params = _params(request.headers)
        if handler.is_async:
            return self._guard_async(handler, request, context)
        if self.app.threads is not None:
            loop = asyncio.get_running_loop()
            return loop.run_in_executor(self.app.threads, _guard, handler, request, context)
        return _guard(handler, request, context)

    async def _guard_async(self, handler: Handler, request: Request, context: Context) -> Response:
        # This call's own task: its context, and those of the tasks it starts, keep the id.
        logs.invocation.set(logs.invocation_tag(context.invocation_id))
        try:
            return await handler.call_async(request, context)
        except SystemExit as exc:
            _exit(exc)
        except Exception as exc:
            return _failed(self.app.function, exc)

    def control(self, request: Request) -> Response | Coroutine[Any, Any, Response]:
        if request.headers.get(CONTROL_HEADER) != self.app.token:
            return _error(403, "forbidden", "bad control token")
        if request.path == "/_fissile/specialize" and request.method == "POST":
            response = self.app.specialize(json.loads(request.body))
            if self.app.program is not None and isinstance(response, Response):
                self._become_program(response)
            return response
        if request.path == "/_fissile/healthz":
            return Response({"pid": os.getpid(), "function": self.app.function or None})
        return _error(404, "not_found", f"no control endpoint {request.path}")

    def _become_program(self, response: Response) -> NoReturn:
        """Answer the specialization and exec the function's program (image command)."""
        from fissile.runtime import command

        assert self.transport is not None and self.app.program is not None
        status = response.status
        answer = b"".join(
            [
                b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown")),
                _head(response.headers),
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(response.body),
                response.body,
            ]
        )
        connection = self.transport.get_extra_info("socket").fileno()
        env = command.program_environment(self.app.function, self.app.program_socket)
        command.hand_over(connection, answer, self.app.listener_fd, self.app.program, env)

    def write(self, response: Response, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        try:
            head = _cached_head(response.headers)
        except ValueError as exc:
            response = _error(500, "invalid_response", f"{self.app.function}: {exc}")
            head = _head(response.headers)
        lines = [_status_line(response.status), head]
        lines.append(b"content-length: %d\r\n" % len(response.body))
        if not keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        lines.append(response.body)
        transport.write(b"".join(lines))
        if not keep_alive:
            transport.close()


_END = object()


class _Items:
    """A streamed body's items, from a sync or an async iterator; ``_END`` after them. A sync
    iterator runs on the loop, or in the function's threads when it has them."""

    def __init__(self, body: Stream, threads: ThreadPoolExecutor | None) -> None:
        self.body = body
        self.threads = threads

    async def next(self) -> Any:
        body = self.body
        if isinstance(body, AsyncIterator):
            try:
                return await body.__anext__()
            except StopAsyncIteration:
                return _END
        if self.threads is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.threads, next, body, _END)
        return next(body, _END)

    async def close(self) -> None:
        """Let a generator run its ``finally`` (it may hold files or connections)."""
        close = getattr(self.body, "aclose", None)
        try:
            if close is not None:
                await close()
            elif hasattr(self.body, "close"):
                self.body.close()
        except Exception:
            pass


_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in _REASONS.items()}
# Header blocks of the few headers most responses carry (a hello: its content type), by value.
_HEADS: dict[tuple[tuple[str, str], ...], bytes] = {}
_HEADS_MAX = 256


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))
    return line


def _cached_head(headers: list[tuple[str, str]]) -> bytes:
    """``_head``, remembered for lists of up to two headers (checking and encoding a hello's
    one header cost ~0.7 µs per response, a look-up ~0.15 µs; timeit)."""
    if len(headers) > 2:
        return _head(headers)
    key = tuple(headers)
    head = _HEADS.get(key)
    if head is None:
        head = _head(headers)
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()  # values without end (a cookie per response): start over
        _HEADS[key] = head
    return head


def _head(headers: list[tuple[str, str]]) -> bytes:
    """Header lines, refusing what would corrupt the response (CR/LF, non-latin-1)."""
    lines = []
    for key, value in headers:
        if key.lower() in _FRAMING:
            continue
        line = f"{key}: {value}"
        if "\r" in line or "\n" in line or ":" in key or not key:
            raise ValueError(f"invalid header {key!r}")
        try:
            lines.append(line.encode("latin-1") + b"\r\n")
        except UnicodeEncodeError:
            raise ValueError(f"header {key!r} is not latin-1; encode its value") from None
    return b"".join(lines)


def _guard(handler: Handler, request: Request, context: Context) -> Response:
    # On the loop's thread or a pool's: set for this call only, and put back after.
    token = logs.invocation.set(logs.invocation_tag(context.invocation_id))
    try:
        return handler.call(request, context)
    except SystemExit as exc:
        _exit(exc)
    except Exception as exc:
        return _failed(context.function, exc)
    finally:
        logs.invocation.reset(token)


def _exit(exc: SystemExit) -> NoReturn:
    """``sys.exit()`` in a function ends its instance, as it would end a program; the caller
    gets a 502 naming the exit status."""
    code = exc.code
    if code is not None and not isinstance(code, int):
        logs.error(str(code))
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def _failed(function: str, exc: BaseException) -> Response:
    if isinstance(exc, InvalidResponse):
        logs.error(f"{function}: {exc}")
        return _error(500, "invalid_response", f"{function}: {exc}")
    logs.error(_user_traceback(exc))
    return Response(
        {
            "error": {
                "code": "function_error",
                "type": type(exc).__name__,
                "message": str(exc),
                "function": function,
            }
        },
        500,
    )


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the function's first frame on: the runtime's frames are noise."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_RUNTIME_DIR):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _error(status: int, code: str, message: str) -> Response:
    return Response({"error": {"code": code, "message": message}}, status, content_type=JSON_TYPE)


def _params(headers: dict[str, str]) -> dict[str, str]:
    # One JSON header keeps the parameter names' case, which header names lose.
    raw = headers.get("x-fissile-params")
    if not raw:
        return {}
    try:
        params = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {}


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop = uvloop.new_event_loop()
    # A uvloop loop carries its 256 kB read buffer inside the object, and allocating it zeroes
    # it all: 61 private pages of zeros, of which a request's read then touches the first.
    release_zero_pages(id(loop), type(loop).__basicsize__)
    return loop


def serve(listener: socket.socket, token: str, sandbox: dict[str, Any] | None = None) -> None:
    """Run the instance server on ``listener`` until SIGTERM; called in the forked child."""
    logs.install()
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    app = InstanceApp(token, sandbox)
    app.listener_fd = listener.fileno()
    app.listener_path = listener.getsockname()
    listener.setblocking(False)
    loop.run_until_complete(loop.create_unix_server(lambda: HttpConnection(app), sock=listener))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.call_soon(rehearse, app)
    loop.run_forever()


def rehearse_serving(rounds: int = 16) -> None:
    """Serve requests the way an instance does (a new event loop, a unix server, an accepted
    connection; control requests with the rehearsal, then a Fission-style and a native
    function, then the native one in a thread pool), then close it all; for the zygote, before
    it freezes its heap. What that path creates or fills once per process (uvloop's and
    asyncio's lazily built objects, caches) is then the zygote's, shared, instead of written by
    each instance. ``rounds`` times each, because CPython 3.11 rewrites a function's bytecode
    in place (quickening) once it has run 8 times: done here, that write is not repeated in
    each instance's copy of the page. Measured: ~0.3 MiB of every instance's private memory,
    and 0.15 MiB more for a sync function with concurrency > 1. Leaves no thread (the pool's
    is joined), no loop, and no file descriptor but libuv's signal pipe (which a forked child
    makes anew)."""
    directory = tempfile.mkdtemp(prefix="fissile-rehearsal-")
    path = os.path.join(directory, "s")
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        app = InstanceApp("rehearsal")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(path)
            listener.listen()
            listener.setblocking(False)
            server = loop.run_until_complete(
                loop.create_unix_server(lambda: HttpConnection(app), sock=listener)
            )
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(path)
                client.setblocking(False)

                async def exchange(request: bytes) -> None:
                    # Pipelined: one write, ``rounds`` answers.
                    await loop.sock_sendall(client, request * rounds)
                    answers = b""
                    while answers.count(b"HTTP/1.1 ") < rounds:
                        answers += await loop.sock_recv(client, 65536)

                for _ in range(rounds):
                    rehearse(app)
                loop.run_until_complete(asyncio.wait_for(exchange(_REHEARSAL_CONTROL), 5))
                app.function = "rehearsal"
                for func in (_rehearsal_fission, _rehearsal_native):
                    app.handler = bind(func, app.function, directory)
                    loop.run_until_complete(asyncio.wait_for(exchange(_REHEARSAL_REQUEST), 5))
                app.threads = ThreadPoolExecutor(1, "rehearsal")
                try:
                    loop.run_until_complete(asyncio.wait_for(exchange(_REHEARSAL_REQUEST), 5))
                finally:
                    app.threads.shutdown(wait=True)
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.run_until_complete(asyncio.sleep(0))
    finally:
        asyncio.set_event_loop(None)
        loop.close()
        shutil.rmtree(directory, ignore_errors=True)


_REHEARSAL_CONTROL = (
    b"POST /_fissile/healthz HTTP/1.1\r\nx-fissile-control: rehearsal\r\n"
    b"content-length: 2\r\n\r\n{}"
)
_REHEARSAL_REQUEST = (
    b"GET /function/rehearsal HTTP/1.1\r\nhost: instance\r\nx-fissile-params: {}\r\n"
    b"x-fissile-invocation-id: rehearsal\r\ncontent-length: 0\r\n\r\n"
)


def _rehearsal_fission() -> str:
    return "Hello, world!"


def _rehearsal_native(request: Request) -> dict[str, bool]:
    return {"ok": True}


class _Discard(asyncio.Transport):
    def write(self, data: Any) -> None:
        pass

    def close(self) -> None:
        pass


_REHEARSAL = "def main(request):\n    return {'ok': True}\n"


def rehearse(app: InstanceApp) -> None:
    """Walk the paths of a cold start once (a control request; loading, binding and calling a
    function; writing its answer) on throwaway objects, while the instance waits in the warm
    pool. After fork() the first touch of each page of the zygote's heap copies it, and the
    first run of each path is slow on cold caches: measured on a hello, this moves ~1-2 ms out
    of the first request's way."""
    try:
        conn = HttpConnection(app)
        conn.connection_made(_Discard())
        conn.data_received(
            b"POST /_fissile/healthz HTTP/1.1\r\nx-fissile-control: -\r\n"
            b"content-length: 2\r\n\r\n{}"
        )
        handler = bind(_load_rehearsal(), "rehearsal")
        request = Request("GET", "/", "", {"x-fissile-params": "{}"}, b"")
        context = Context("rehearsal", "", 1.0, app.logger)
        conn.write(_guard(handler, request, context), keep_alive=True)
    except Exception:  # a rehearsal only: a real request reports its own errors
        pass


def _load_rehearsal() -> Any:
    """Load a throwaway module the way a function is loaded (a new sys.path entry, a path
    finder, compiling from source) from the instance's private /tmp, then forget it."""
    directory = f"/tmp/.fissile-rehearsal-{os.getpid()}"
    path = os.path.join(directory, "fissile_rehearsal.py")
    cwd = os.getcwd()
    os.mkdir(directory, 0o700)
    try:
        with open(path, "w") as file:
            file.write(_REHEARSAL)
        return load_entrypoint(directory, "main")
    finally:
        os.chdir(cwd)
        sys.modules.pop("fissile_rehearsal", None)
        while directory in sys.path:
            sys.path.remove(directory)
        sys.path_importer_cache.pop(directory, None)
        os.unlink(path)
        os.rmdir(directory)
