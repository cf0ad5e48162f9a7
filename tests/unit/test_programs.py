"""Images command and binary: the command line, the models' rules, finding the program
(fissile/runtime/command.py) and running an executable per request (fissile/runtime/binary.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from fissile._commandline import split_command
from fissile.models import EnvironmentSpec
from fissile.runtime import binary, command
from fissile.runtime.context import Context
from fissile.runtime.contracts import Handler
from fissile.runtime.loader import LoadError
from fissile.runtime.request import Request
from fissile.runtime.response import Response

# --- the command line ------------------------------------------------------------------------


def test_command_line_is_split_like_a_shell_without_running_one() -> None:
    assert split_command("node server.js") == ["node", "server.js"]
    assert split_command("""sh -c 'exec node "my server.js" --port=$X'""") == [
        "sh",
        "-c",
        'exec node "my server.js" --port=$X',
    ]
    assert split_command("a | b") == ["a", "|", "b"]  # no pipes: sh -c '...' for that


@pytest.mark.parametrize("line", ["", "   ", "node 'server.js", "node a\0b"])
def test_malformed_command_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError):
        split_command(line)


# --- the models ------------------------------------------------------------------------------


def test_image_command_needs_a_valid_command() -> None:
    env = EnvironmentSpec(name="node", image="command", command="node server.js")
    assert (env.image, env.command) == ("command", "node server.js")
    with pytest.raises(ValidationError, match="needs a command"):
        EnvironmentSpec(name="node", image="command")
    with pytest.raises(ValidationError, match="cannot split"):
        EnvironmentSpec(name="node", image="command", command="node 'server.js")


def test_command_and_preload_belong_to_their_images() -> None:
    with pytest.raises(ValidationError, match="image command only"):
        EnvironmentSpec(name="py", image="python", command="node server.js")
    with pytest.raises(ValidationError, match="image python only"):
        EnvironmentSpec(name="sh", image="binary", preload=["json"])


def test_fission_binary_image_is_binary() -> None:
    assert EnvironmentSpec(name="sh", image="fission/binary-env:1.2").image == "binary"
    assert EnvironmentSpec(name="sh", image="ghcr.io/fission/binary-env").image == "binary"
    with pytest.raises(ValidationError, match="unsupported image"):
        EnvironmentSpec(name="go", image="fission/go-env")


# --- finding the program (image command) -------------------------------------------------------


def executable(path: Path, text: str = "#!/bin/sh\n") -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_program_with_a_slash_is_the_packages(tmp_path: Path) -> None:
    executable(tmp_path / "serve")
    assert command.resolve("./serve --fast", str(tmp_path)) == [f"{tmp_path}/./serve", "--fast"]
    (tmp_path / "plain").write_text("not executable")
    with pytest.raises(command.CommandError, match="not executable"):
        command.resolve("./plain", str(tmp_path))
    with pytest.raises(command.CommandError, match="not a file of the package"):
        command.resolve("bin/missing", str(tmp_path))


def test_a_bare_program_is_found_on_path(tmp_path: Path) -> None:
    assert command.resolve("sh -c 'exit 0'", str(tmp_path))[1:] == ["-c", "exit 0"]
    assert os.path.isabs(command.resolve("sh", str(tmp_path))[0])
    with pytest.raises(command.CommandError, match="not on PATH"):
        command.resolve("no-such-program-anywhere", str(tmp_path))


def test_the_program_is_told_where_its_socket_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREETING", "hi")
    env = command.program_environment("hello", "/tmp/.fissile-http.sock")
    assert env["GREETING"] == "hi"
    assert env["FISSILE_FUNCTION"] == "hello"
    assert env["FISSILE_SOCKET"] == "/tmp/.fissile-http.sock"
    assert (env["FISSILE_SOCKET_FD"], env["LISTEN_FDS"]) == ("3", "1")
    assert env["LISTEN_PID"] == str(os.getpid())


def test_the_path_a_program_may_bind_is_private_or_next_to_its_socket() -> None:
    assert command.socket_path(True, "/run/x/i7.sock") == "/tmp/.fissile-http.sock"
    assert command.socket_path(False, "/run/x/i7.sock") == "/run/x/i7.http.sock"


# --- image binary ------------------------------------------------------------------------------


def test_the_executable_is_the_entrypoint_or_the_only_file(tmp_path: Path) -> None:
    (tmp_path / "echo.sh").write_text("cat\n")
    assert binary.find_executable(str(tmp_path), "main") == f"{tmp_path}/echo.sh"
    assert binary.find_executable(str(tmp_path), "") == f"{tmp_path}/echo.sh"
    (tmp_path / "other.sh").write_text("true\n")
    assert binary.find_executable(str(tmp_path), "other.sh") == f"{tmp_path}/other.sh"
    with pytest.raises(LoadError, match="2 files"):
        binary.find_executable(str(tmp_path), "main")
    with pytest.raises(LoadError, match=r"no file 'gone\.sh'"):
        binary.find_executable(str(tmp_path), "gone.sh")


def test_the_request_is_passed_as_fission_does_and_as_cgi_does() -> None:
    request = Request("PUT", "/f/x", "a=1", {"x-who": "me", "content-type": "text/plain"}, b"abc")
    env = binary.request_environment({"PATH": "/bin"}, request)
    assert env["REQUEST_METHOD"] == "PUT"
    assert env["REQUEST_URI"] == "/f/x?a=1"
    assert env["QUERY_STRING"] == "a=1"
    assert env["CONTENT_LENGTH"] == "3"
    assert env["HTTP_X-WHO"] == env["HTTP_X_WHO"] == "me"  # Fission's spelling, and CGI's
    assert env["HTTP_CONTENT_TYPE"] == "text/plain"
    assert env["PATH"] == "/bin"


def call(handler: Handler, body: bytes = b"") -> Response:
    request = Request("POST", "/function/f", "", {"x-who": "me"}, body)
    context = Context("f", "id", 5.0, logging.getLogger("f"))
    return asyncio.run(handler.call_async(request, context))


def test_stdout_is_the_body_and_stdin_the_request(tmp_path: Path) -> None:
    (tmp_path / "upper.sh").write_text("printf '%s:' \"$HTTP_X_WHO\"; tr a-z A-Z\n")
    handler = binary.bind(str(tmp_path), "main", "f")
    assert handler.contract == "binary" and handler.is_async
    response = call(handler, b"hello")
    assert (response.status, response.body) == (200, b"me:HELLO")
    assert ("content-type", "text/plain; charset=utf-8") in response.headers


def test_output_that_is_not_text_is_octet_stream(tmp_path: Path) -> None:
    executable(tmp_path / "bytes", "#!/bin/sh\nprintf '\\377\\376'\n")
    response = call(binary.bind(str(tmp_path), "bytes", "f"))
    assert response.body == b"\xff\xfe"
    assert ("content-type", "application/octet-stream") in response.headers


def test_a_failing_executable_is_a_500_naming_its_exit(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fails.sh").write_text("echo partial; echo why >&2; exit 3\n")
    response = call(binary.bind(str(tmp_path), "main", "f"))
    assert response.status == 500
    assert b'"message": "fails.sh exited with status 3"' in response.body
    err = capfd.readouterr().err
    assert "why" in err and "fails.sh exited with status 3" in err
    (tmp_path / "fails.sh").write_text("kill -9 $$\n")
    response = call(binary.bind(str(tmp_path), "main", "f"))
    assert b"killed by signal 9 (SIGKILL)" in response.body


def test_an_executable_that_ignores_its_stdin(tmp_path: Path) -> None:
    (tmp_path / "deaf.sh").write_text("echo done\n")
    response = call(binary.bind(str(tmp_path), "main", "f"), b"x" * (4 * 1024 * 1024))
    assert (response.status, response.body) == (200, b"done\n")


def test_the_packages_executables_are_on_path(tmp_path: Path) -> None:
    executable(tmp_path / "helper", "#!/bin/sh\necho helped\n")
    (tmp_path / "main.sh").write_text("helper\n")
    response = call(binary.bind(str(tmp_path), "main.sh", "f"))
    assert response.body == b"helped\n"


def test_large_bodies_stream_both_ways_without_deadlock(tmp_path: Path) -> None:
    # Larger than both pipes' buffers: the body is written while the output is read.
    (tmp_path / "cat.sh").write_text("cat\n")
    body = os.urandom(3 * 1024 * 1024)
    response = call(binary.bind(str(tmp_path), "main", "f"), body)
    assert (response.status, response.body) == (200, body)
