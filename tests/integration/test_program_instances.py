"""Image command with a real executor, zygote and sandbox (``--sandbox auto``: all of it as
root): the function's program is exec'd in the instance, confined like a Python function, and
serves on the socket it inherits; programs that exit or never listen fail with a clear error."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from intkit import SOURCE_SHA, Harness, until

from fissile.executor.connection import InstanceResponse
from fissile.models import BuildState, BuildStatus, EnvironmentSpec, FunctionSpec
from fissile.router.proxy import Answer, forward

PYTHON = shutil.which("python3")
pytestmark = pytest.mark.skipif(PYTHON is None, reason="no python3 on PATH to run as a program")

# A program in another language, as far as fissile knows: the standard library's HTTP server
# on the inherited socket, reporting what it sees of its sandbox.
SERVER = """
import http.server, json, os, socket, socketserver, time

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if "sleep=" in self.path:
            time.sleep(float(self.path.rsplit("sleep=", 1)[1]))
        package = None
        if os.getcwd() == "/function":  # sandboxed: its own root and /tmp, nothing of the host
            try:
                open("/function/written", "w").close()
                package = "writable"
            except OSError as exc:
                package = exc.strerror
            with open("/tmp/scratch", "w") as scratch:
                scratch.write("ok")
        status = dict(
            line.split(":", 1) for line in open("/proc/self/status") if ":" in line
        )
        seen = {
            "pid": os.getpid(),
            "uid": os.getuid(),
            "cwd": os.getcwd(),
            "root": sorted(os.listdir("/")),
            "cgroup": open("/proc/self/cgroup").read(),
            "seccomp": status["Seccomp"].strip(),
            "no_new_privs": status["NoNewPrivs"].strip(),
            "greeting": os.environ.get("GREETING"),
            "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
            "path": self.path,
            "probe": self.headers.get("x-fissile-probe"),
            "package": package,
        }
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

if os.environ.get("BIND_PATH"):  # a server that takes a path only
    server = Server(os.environ["FISSILE_SOCKET"], Handler)
else:
    server = Server("", Handler, bind_and_activate=False)
    server.socket = socket.socket(fileno=int(os.environ["FISSILE_SOCKET_FD"]))
server.serve_forever()
"""


@pytest.fixture(params=["auto", "off"])
async def sandboxed(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """An executor with every sandbox layer this host allows (all of them as root), or none."""
    started = Harness(tmp_path, sandbox_mode=request.param)
    for env in (
        EnvironmentSpec(name="python", poolsize=0),
        EnvironmentSpec(name="prog", image="command", command="python3 server.py", poolsize=1),
    ):
        started.store.create("environments", env.name, env.model_dump(mode="json"))
    try:
        await started.executor.start()
        yield started
    finally:
        await started.stop()
        started.logs.close()
        started.store.close()


def deploy(harness: Harness, name: str, files: dict[str, str], **fields: Any) -> None:
    # Named like the builder's content addresses, which the sandbox checks.
    key = hashlib.sha256(name.encode()).hexdigest()
    target = harness.deploy_root / key
    target.mkdir()
    target.chmod(0o755)
    for relative, text in files.items():
        (target / relative).write_text(text)
        (target / relative).chmod(0o644)
    status = BuildStatus(state=BuildState.succeeded, deploy=key)
    package = {"name": name, "env": "prog", "source": SOURCE_SHA, "buildcmd": None}
    package["status"] = status.model_dump(mode="json")
    harness.store.create("packages", name, package)
    spec = FunctionSpec(name=name, env="prog", package=name, **fields)
    harness.store.create("functions", name, spec.model_dump(mode="json"))


def update_env(harness: Harness, command: str) -> None:
    spec = EnvironmentSpec(name="prog", image="command", command=command, poolsize=1)
    harness.store.update("environments", "prog", spec.model_dump(mode="json"))


async def call(harness: Harness, name: str, target: str = "/") -> Any:
    request = f"GET {target} HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n".encode()
    return await forward(harness.executor, harness.executor.function(name), request)


def load_error(answer: Any) -> str:
    assert isinstance(answer, Answer), f"expected the platform's answer, got {answer!r}"
    error = json.loads(answer.body)["error"]
    assert (answer.status, error["code"]) == (500, "load_failed"), error
    message: str = error["message"]
    return message


async def test_program_serves_confined_like_a_python_function(sandboxed: Harness) -> None:
    deploy(sandboxed, "seer", {"server.py": SERVER}, env_vars={"GREETING": "hi"})
    response = await call(sandboxed, "seer", "/function/seer?x=1")
    assert isinstance(response, InstanceResponse), response
    assert response.status == 200, response.body
    seen = json.loads(response.body)
    assert seen["path"] == "/function/seer?x=1" and seen["probe"] is None
    assert seen["greeting"] == "hi"
    assert seen["fds"][:4] == [0, 1, 2, 3]  # the socket is fd 3; nothing of the runtime's
    pool = sandboxed.executor.function("seer")
    [instance] = pool.instances
    assert pool.contract == "command"
    executor = sandboxed.executor
    if executor.sandbox.mode == "off" or not executor.sandbox.capabilities.full:
        assert seen["pid"] == instance.pid  # exec'd in place: the instance's own process
        return
    assert seen["pid"] == 1  # its own PID namespace
    assert seen["uid"] == executor.uid_of("seer")
    assert seen["cwd"] == "/function"
    assert seen["package"] == "Read-only file system"  # while its private /tmp is writable
    assert str(sandboxed.root) not in seen["root"] and "function" in seen["root"]
    assert seen["seccomp"] == "2" and seen["no_new_privs"] == "1"
    assert instance.id in seen["cgroup"]
    # The program's output pipe is the function's log, like a Python instance's.
    assert instance.pid not in (0, 1)


async def test_program_that_exits_at_once_names_its_exit_and_output(sandboxed: Harness) -> None:
    update_env(sandboxed, "sh -c 'echo missing DATABASE_URL >&2; exit 4'")
    deploy(sandboxed, "quitter", {"server.py": SERVER})
    message = load_error(await call(sandboxed, "quitter"))
    assert "exited with status 4 before it answered on its socket" in message
    assert "missing DATABASE_URL" in message
    assert sandboxed.executor.function("quitter").instances == []


async def test_program_that_never_listens_fails_at_the_functions_timeout(
    sandboxed: Harness,
) -> None:
    update_env(sandboxed, "sh -c 'echo starting; exec sleep 600'")
    # A caller waiting longer than the start may take hears why it failed (with the default,
    # the function's timeout, the wait ends first: 503 queue_timeout).
    deploy(sandboxed, "mute", {"server.py": SERVER}, timeout=1.5, queue_timeout=60)
    message = load_error(await call(sandboxed, "mute"))
    assert "did not answer on its socket within 1.5s" in message
    assert "starting" in message
    # Not left running: the instance is stopped with its program.
    pool = sandboxed.executor.function("mute")
    assert pool.instances == []
    await until(lambda: not [i for i in sandboxed.executor.instances() if i.function == "mute"], 30)


async def test_program_not_found_is_a_load_error(sandboxed: Harness) -> None:
    update_env(sandboxed, "no-such-server --port 0")
    deploy(sandboxed, "ghost", {"server.py": SERVER})
    message = load_error(await call(sandboxed, "ghost"))
    assert "command: 'no-such-server' is not on PATH" in message


async def test_program_that_keeps_failing_backs_off(sandboxed: Harness) -> None:
    update_env(sandboxed, "sh -c 'exit 1'")
    deploy(sandboxed, "looper", {"server.py": SERVER})
    assert "exited with status 1" in load_error(await call(sandboxed, "looper"))
    # A program dying as it starts is one failed start (not also a dead instance): the third
    # in a row arms the crash loop, as for a Python instance that dies while loading.
    codes = []
    for _ in range(3):
        answer = await call(sandboxed, "looper")
        assert isinstance(answer, Answer)
        codes.append((answer.status, json.loads(answer.body)["error"]["code"]))
        if codes[-1][1] == "crash_loop":
            break
    assert codes[-1] == (503, "crash_loop"), codes
    assert set(codes[:-1]) <= {(500, "load_failed")}, codes


async def test_program_may_bind_the_path_it_is_given(sandboxed: Harness) -> None:
    deploy(sandboxed, "binder", {"server.py": SERVER}, env_vars={"BIND_PATH": "1"})
    response = await call(sandboxed, "binder", "/function/binder")
    assert isinstance(response, InstanceResponse), response
    assert response.status == 200, response.body
    assert json.loads(response.body)["path"] == "/function/binder"
    [instance] = sandboxed.executor.function("binder").instances
    assert instance.connect_path.startswith("/proc/self/fd/")
    second = await call(sandboxed, "binder", "/function/binder/again")
    assert isinstance(second, InstanceResponse) and second.status == 200


DECOY_LINK = """
import os, time
os.symlink(os.environ["DECOY"], os.environ["FISSILE_SOCKET"])
print("linked", flush=True)
time.sleep(600)
"""


async def test_a_link_at_the_path_is_never_followed(sandboxed: Harness, tmp_path: Path) -> None:
    # The program points its path at a socket of the host's; the supervisor must not connect
    # there (a symbolic link resolves in the root of whoever follows it).
    decoy_path = str(tmp_path / "decoy.sock")
    decoy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    decoy.bind(decoy_path)
    decoy.listen()
    decoy.setblocking(False)
    try:
        deploy(
            sandboxed, "linker", {"server.py": DECOY_LINK}, env_vars={"DECOY": decoy_path},
            timeout=1.5, queue_timeout=60,
        )  # fmt: skip
        message = load_error(await call(sandboxed, "linker"))
        assert "did not answer on its socket within 1.5s" in message
        assert "linked" in message
        with pytest.raises(BlockingIOError):
            decoy.accept()
    finally:
        decoy.close()


async def test_max_scale_and_concurrency_hold_for_programs(sandboxed: Harness) -> None:
    deploy(sandboxed, "single", {"server.py": SERVER}, max_scale=1, concurrency=1)
    answers = await asyncio.gather(
        *(call(sandboxed, "single", "/function/single?sleep=0.3") for _ in range(3))
    )
    assert all(isinstance(a, InstanceResponse) and a.status == 200 for a in answers), answers
    pool = sandboxed.executor.function("single")
    assert len(pool.instances) == 1
    # The three took turns on one instance: none was started beside it.
    assert pool.status().restarts == 0 and pool.inflight == 0
