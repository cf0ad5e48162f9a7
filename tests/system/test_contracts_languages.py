"""Functions in other languages, through a real platform: a Node server under image
``command`` and shell scripts under image ``binary`` (Fission's), called over HTTP through the
router, sandboxed like Python functions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from syskit import Platform, descendants, error_of, is_alive, wait_for, wait_gone, write

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed on this machine")

SERVER_JS = """
const http = require("http");
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    if (req.url.startsWith("/function/node-hello/crash")) {
      process.exit(3);
    }
    if (req.url.startsWith("/function/node-hello/hang")) {
      return;  // never answers
    }
    if (req.url.startsWith("/function/node-hello/env")) {
      const seen = {
        GREETING: process.env.GREETING,
        FISSILE_PLATFORM_SOCKET: process.env.FISSILE_PLATFORM_SOCKET,
        FISSILE_FUNCTION: process.env.FISSILE_FUNCTION,
        HOME: process.env.HOME,
        pid: process.pid,
        uid: process.getuid(),
        cwd: process.cwd(),
        keys: Object.keys(process.env).sort(),
      };
      res.writeHead(200, {"content-type": "application/json"});
      res.end(JSON.stringify(seen));
      return;
    }
    console.log("served " + req.method + " " + req.url);
    res.writeHead(201, {"content-type": "application/octet-stream", "x-runtime": "node"});
    res.end(Buffer.concat([Buffer.from(req.method + " " + req.url + " "), body]));
  });
});
// The router keeps connections open between requests: so must the server.
server.keepAliveTimeout = 0;
server.listen({fd: Number(process.env.FISSILE_SOCKET_FD)});
"""


@pytest.fixture(scope="module")
def node_env(platform: Platform) -> str:
    platform.ok(
        "env", "create", "--name", "node", "--image", "command",
        "--command", "node server.js", "--poolsize", "1",
    )  # fmt: skip
    return "node"


@needs_node
def test_node_hello_answers_byte_for_byte(
    platform: Platform, node_env: str, tmp_path: Path
) -> None:
    write(tmp_path / "hello" / "server.js", SERVER_JS)
    platform.ok(
        "fn", "create", "--name", "node-hello", "--env", node_env,
        "--src", str(tmp_path / "hello"), "--env-var", "GREETING=hi there",
    )  # fmt: skip
    payload = bytes(range(256)) * 4
    response = platform.request("POST", "/function/node-hello/x?y=1", content=payload)
    assert response.status_code == 201, response.text
    assert response.headers["x-runtime"] == "node"
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == b"POST /function/node-hello/x?y=1 " + payload

    seen = platform.get("/function/node-hello/env").json()
    assert seen["GREETING"] == "hi there"
    assert seen["FISSILE_FUNCTION"] == "node-hello"
    assert seen["FISSILE_PLATFORM_SOCKET"].endswith("platform.sock")
    assert seen["HOME"] == "/tmp"
    # Nothing of the supervisor's environment: only the scrubbed base and the function's own.
    base = {"PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR", "HOME", "TMPDIR"}
    platform_given = {
        "FISSILE_PLATFORM_SOCKET",
        "FISSILE_FUNCTION",
        "FISSILE_SOCKET",
        "FISSILE_SOCKET_FD",
    }
    activation = {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"}
    assert set(seen["keys"]) <= base | platform_given | activation | {"GREETING"}, seen["keys"]
    wait_for(
        lambda: (
            "served POST /function/node-hello/x?y=1"
            in platform.ok("fn", "logs", "--name", "node-hello").out
        ),
        30,
        "the program's stdout in the function's log",
    )
    function = platform.json_of("fn", "get", "--name", "node-hello")
    assert function["status"]["contract"] == "command"
    env = platform.json_of("env", "get", "--name", node_env)
    assert env["image"] == "command" and env["command"] == "node server.js"


@needs_node
def test_node_crash_is_502_then_restarts(platform: Platform, node_env: str, tmp_path: Path) -> None:
    write(tmp_path / "crash" / "server.js", SERVER_JS.replace("node-hello", "node-crash"))
    platform.ok(
        "fn", "create", "--name", "node-crash", "--env", node_env, "--src", str(tmp_path / "crash")
    )
    first = platform.get("/function/node-crash/env").json()
    crashed = platform.get("/function/node-crash/crash")
    assert crashed.status_code == 502, crashed.text
    assert "exited with status 3" in error_of(crashed)["message"]
    second = platform.get("/function/node-crash/env")
    assert second.status_code == 200, second.text
    assert second.json()["pid"] == 1  # PID 1 of its own namespace, like any instance
    status = platform.json_of("fn", "get", "--name", "node-crash")["status"]
    assert status["restarts"] >= 1 and "exited with status 3" in status["last_exit_reason"]
    assert first["uid"] == second.json()["uid"] != 0


@needs_node
def test_command_that_exits_is_a_clear_load_error(
    platform: Platform, node_env: str, tmp_path: Path
) -> None:
    write(tmp_path / "broken" / "server.js", 'console.error("no config found"); process.exit(2);\n')
    platform.ok(
        "fn", "create", "--name", "node-broken", "--env", node_env,
        "--src", str(tmp_path / "broken"),
    )  # fmt: skip
    response = platform.get("/function/node-broken")
    assert response.status_code == 500, response.text
    error = error_of(response)
    assert error["code"] == "load_failed"
    assert "exited with status 2" in error["message"]
    assert "no config found" in error["message"]
    log = platform.ok("fn", "logs", "--name", "node-broken").out
    assert "no config found" in log


def test_binary_shell_script_uppercases_stdin(platform: Platform, tmp_path: Path) -> None:
    platform.ok("env", "create", "--name", "sh", "--image", "fission/binary-env")
    write(
        tmp_path / "upper.sh",
        """
        echo "method=$REQUEST_METHOD uri=$REQUEST_URI length=$CONTENT_LENGTH who=$HTTP_X_WHO"
        tr 'a-z' 'A-Z'
        """,
    )
    platform.ok(
        "fn", "create", "--name", "upper", "--env", "sh", "--code", str(tmp_path / "upper.sh")
    )
    response = platform.request(
        "POST", "/function/upper?q=1", content=b"hello, binary\n", headers={"x-who": "me"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == (
        "method=POST uri=/function/upper?q=1 length=14 who=me\nHELLO, BINARY\n"
    )

    write(tmp_path / "fails.sh", 'echo "disk on fire" >&2\nexit 3\n')
    platform.ok(
        "fn", "create", "--name", "fails", "--env", "sh", "--code", str(tmp_path / "fails.sh")
    )
    failed = platform.get("/function/fails")
    assert failed.status_code == 500, failed.text
    assert error_of(failed)["message"] == "fails.sh exited with status 3"
    wait_for(
        lambda: "disk on fire" in platform.ok("fn", "logs", "--name", "fails").out,
        30,
        "the script's stderr in the function's log",
    )
    # The instance stays: a failed run is a failed request, not a crash.
    assert platform.json_of("fn", "get", "--name", "fails")["status"]["restarts"] == 0


@needs_node
def test_node_timeout_and_idle_reaping_end_the_program(
    platform: Platform, node_env: str, tmp_path: Path
) -> None:
    write(tmp_path / "idle" / "server.js", SERVER_JS.replace("node-hello", "node-idle"))
    # Other tests' node functions share the platform: their programs are not this one's.
    others = {p.pid for p in descendants(platform.pid).values() if p.comm == "node"}
    platform.ok(
        "fn", "create", "--name", "node-idle", "--env", node_env, "--src", str(tmp_path / "idle"),
        "--timeout", "2s", "--idle-timeout", "1s",
    )  # fmt: skip
    hung = platform.get("/function/node-idle/hang")
    assert hung.status_code == 504, hung.text
    assert error_of(hung)["code"] == "timeout"
    assert platform.get("/function/node-idle/env").status_code == 200
    # Read from /proc at once: a CLI call takes longer than the 1 s idle timeout on a loaded
    # machine, and would find the instance reaped already.
    procs = [
        p
        for p in descendants(platform.pid).values()
        if p.comm == "node" and p.pid not in others and is_alive(p)
    ]
    assert procs, "no node program under the platform right after a call"
    wait_for(
        lambda: platform.json_of("fn", "get", "--name", "node-idle")["status"]["instances"] == 0,
        60,
        "the idle instance reaped",
    )
    assert not wait_gone(procs, 30)


@needs_node
def test_node_listening_on_the_path_it_is_given(
    platform: Platform, node_env: str, tmp_path: Path
) -> None:
    source = SERVER_JS.replace("node-hello", "node-path").replace(
        "server.listen({fd: Number(process.env.FISSILE_SOCKET_FD)});",
        "server.listen(process.env.FISSILE_SOCKET);",
    )
    assert "FISSILE_SOCKET)" in source
    write(tmp_path / "path" / "server.js", source)
    platform.ok(
        "fn", "create", "--name", "node-path", "--env", node_env, "--src", str(tmp_path / "path")
    )
    for _ in range(3):
        response = platform.request("POST", "/function/node-path", content=b"by path")
        assert response.status_code == 201, response.text
        assert response.content == b"POST /function/node-path by path"
