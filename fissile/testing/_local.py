"""A function run by the real instance runtime in a subprocess, without a platform: the same
loader, contract binding and response encoding as on ``fissile up``, over a unix socket."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from fissile.runtime.context import SOCKET_ENV
from fissile.runtime.loader import LoadError
from fissile.runtime.request import Request
from fissile.testing._context import Invocation, Published, Scripted
from fissile.testing._fakeplatform import FakePlatform
from fissile.testing._requests import make_request
from fissile.testing._result import Result

STOP_TIMEOUT = 10.0
_CONTROL_HEADER = "x-fissile-control"
# What the router adds to every request; a test's own values win.
_ROUTER_HEADERS = ("x-fissile-function", "x-fissile-timeout", "x-fissile-invocation-id")


class LocalInstance:
    """One instance of one function (see ``local_instance``): ``request``/``get``/``post``
    send it requests, ``output()`` is what it printed. Its ``context.invoke`` and
    ``context.publish`` reach a fake platform in the test's process: ``replies`` scripts the
    answers (as ``make_context``'s do), ``invocations`` and ``published`` record the calls."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        contract: str = "auto",
        entrypoint: str = "",
        env: Mapping[str, str] | None = None,
        function: str | None = None,
        timeout: float = 60.0,
        concurrency: int = 1,
        replies: dict[str, Scripted] | None = None,
    ) -> None:
        source = Path(path).resolve()
        if not source.exists():
            raise FileNotFoundError(f"no function code at {source}")
        if source.is_file():
            self.deploy_dir = source.parent
            # A file among others (a tests directory) is named, not guessed.
            entrypoint = f"{source.stem}.{entrypoint or 'main'}"
        else:
            self.deploy_dir = source
        self.entrypoint = entrypoint or "main"
        self.contract = contract
        self.env = dict(env or {})
        self.function = function or (source.stem if source.is_file() else source.name)
        self.timeout = timeout
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="fissile-local-"))
        self._log = self._dir / "output.log"
        self._socket = str(self._dir / "instance.sock")
        self._token = secrets.token_hex(16)
        self._http: httpx.Client | None = None
        self._ids = count(1)
        self.bound: dict[str, Any] = {}
        self.replies: dict[str, Scripted] = dict(replies or {})
        self._platform = FakePlatform(str(self._dir / "platform.sock"), self.replies)

    @property
    def invocations(self) -> list[Invocation]:
        """The function's ``context.invoke`` calls so far (``body`` is what it sent)."""
        return self._platform.invocations

    @property
    def published(self) -> list[Published]:
        """The function's ``context.publish`` calls so far."""
        return self._platform.published

    # -- life --------------------------------------------------------------------------

    def start(self) -> LocalInstance:
        """Start the instance and load the function into it; raises ``LoadError`` (with the
        instance's output) when the function cannot be loaded."""
        self._platform.start()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self._socket)
            listener.listen(64)
            env = dict(os.environ)
            env.update(self.env)
            env[SOCKET_ENV] = self._platform.path
            with self._log.open("ab") as log:
                self.process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "fissile.testing._serve",
                        str(listener.fileno()),
                        self._token,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                    pass_fds=(listener.fileno(),),
                )
        finally:
            listener.close()  # the instance has its copy; connections queue on it meanwhile
        transport = httpx.HTTPTransport(uds=self._socket)
        self._http = httpx.Client(
            transport=transport, base_url="http://instance", timeout=self.timeout + 30.0
        )
        spec = {
            "function": self.function,
            "deploy_dir": str(self.deploy_dir),
            "entrypoint": self.entrypoint,
            "contract": self.contract,
            "timeout": self.timeout,
            "concurrency": self.concurrency,
            "env_vars": self.env,
        }
        try:
            answer = self._http.post(
                "/_fissile/specialize",
                content=json.dumps(spec).encode(),
                headers={_CONTROL_HEADER: self._token, "content-type": "application/json"},
            )
        except httpx.HTTPError as exc:
            self.stop()
            raise LoadError(f"the instance did not answer ({exc}):\n{self.output()}") from None
        if answer.status_code != 200:
            self.stop()
            message = answer.json().get("error", {}).get("message", answer.text)
            raise LoadError(f"{message}\n{self.output()}".rstrip())
        self.bound = answer.json()
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``; removes the temporary directory."""
        if self._http is not None:
            self._http.close()
            self._http = None
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._platform.running:
            self._platform.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LocalInstance:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- use ---------------------------------------------------------------------------

    @property
    def contract_bound(self) -> str:
        """The contract the instance bound the function to (what ``auto`` detected)."""
        return str(self.bound.get("contract", ""))

    def send(self, request: Request) -> Result:
        """Send ``request`` (e.g. from ``make_request``) as the router would: its method,
        path, query, headers and body, plus the router's ``x-fissile-*`` metadata."""
        if self._http is None:
            raise RuntimeError("the instance is not running (use it in a `with` block)")
        headers = dict(request.headers)
        headers.pop("content-length", None)  # httpx sets it
        defaults = (self.function, f"{self.timeout:g}", f"local-{next(self._ids):08x}")
        for name, value in zip(_ROUTER_HEADERS, defaults, strict=True):
            headers.setdefault(name, value)
        if request.params:
            headers["x-fissile-params"] = json.dumps(request.params)
        target = request.path + (f"?{request.query_string}" if request.query_string else "")
        answer = self._http.request(request.method, target, content=request.body, headers=headers)
        pairs = [(k.lower(), v) for k, v in answer.headers.multi_items()]
        return Result(answer.status_code, pairs, answer.content)

    def request(self, method: str = "GET", path: str = "/", **options: Any) -> Result:
        """``send(make_request(method, path, **options))``."""
        return self.send(make_request(method, path, **options))

    def get(self, path: str = "/", **options: Any) -> Result:
        return self.request("GET", path, **options)

    def post(self, path: str = "/", **options: Any) -> Result:
        return self.request("POST", path, **options)

    def output(self) -> str:
        """What the instance printed so far (its stdout and stderr: prints, logs, tracebacks)."""
        try:
            return self._log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"<LocalInstance {self.function} {self.deploy_dir}>"


@contextmanager
def local_instance(
    path: str | os.PathLike[str],
    *,
    contract: str = "auto",
    entrypoint: str = "",
    env: Mapping[str, str] | None = None,
    function: str | None = None,
    timeout: float = 60.0,
    concurrency: int = 1,
    replies: dict[str, Scripted] | None = None,
) -> Iterator[LocalInstance]:
    """Run the function at ``path`` (a ``.py`` file, or a package directory with
    ``entrypoint`` as on ``fn create``) in an instance of its own for the block's requests."""
    instance = LocalInstance(
        path,
        contract=contract,
        entrypoint=entrypoint,
        env=env,
        function=function,
        timeout=timeout,
        concurrency=concurrency,
        replies=replies,
    )
    with instance:
        yield instance


def invoke_local(
    path: str | os.PathLike[str],
    request: Request | None = None,
    *,
    contract: str = "auto",
    entrypoint: str = "",
    env: Mapping[str, str] | None = None,
    function: str | None = None,
    timeout: float = 60.0,
    replies: dict[str, Scripted] | None = None,
) -> Result:
    """Start an instance of the function at ``path``, send it ``request`` (``GET /`` by
    default), stop it, and return its response."""
    with local_instance(
        path,
        contract=contract,
        entrypoint=entrypoint,
        env=env,
        function=function,
        timeout=timeout,
        replies=replies,
    ) as instance:
        return instance.send(request if request is not None else make_request())
