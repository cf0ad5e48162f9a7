"""The CLI's argument errors and its one-line API errors (fissile/cli/), through click's
CliRunner; nothing here reaches a running platform."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import fissile
from fissile.cli import cli


@pytest.fixture
def closed_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """FISSILE_API pointing at a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("FISSILE_API", url)
    yield url


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="fissile")


def assert_usage_error(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


@pytest.mark.usefixtures("closed_api")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fn", "create", "--name", "x"], "give exactly one of --code, --src or --pkg"),
        (
            ["fn", "create", "--name", "x", "--code", "a.py", "--pkg", "p"],
            "give exactly one of --code, --src or --pkg",
        ),
        (
            ["fn", "update", "--name", "x", "--code", "a.py", "--src", "d"],
            "give at most one of --code, --src or --pkg",
        ),
        (["fn", "create", "--code", "a.py"], "Missing option '--name'"),
        (["fn", "create", "--name", "x", "--pkg", "p", "--timeout", "soon"], "invalid duration"),
        (["fn", "create", "--name", "x", "--pkg", "p", "--memory", "lots"], "invalid memory size"),
        (
            ["fn", "create", "--name", "x", "--pkg", "p", "--env-var", "NOEQUALS"],
            "is not KEY=VALUE",
        ),
        (["fn", "create", "--name", "x", "--code", "/nonexistent/f.py"], "does not exist"),
        (["pkg", "create", "--name", "p", "--env", "python"], "--src is required"),
        (["route", "create", "--function", "f"], "give exactly one of --url or --prefix"),
        (
            ["route", "create", "--function", "f", "--url", "/a", "--prefix", "/b"],
            "give exactly one of --url or --prefix",
        ),
        (["fn", "test", "--name", "x", "-H", "no-colon"], "is not 'Name: value'"),
        (["fn", "list", "-o", "xml"], "'xml' is not one of"),
        (["env", "create", "--name", "e", "--poolsize", "many"], "is not a valid integer"),
        (["nosuchgroup"], "No such command 'nosuchgroup'"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    assert_usage_error(run(*args), message)


def test_body_and_body_file_are_exclusive(tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("x")
    result = run("fn", "test", "--name", "x", "--body", "a", "--body-file", str(body))
    assert_usage_error(result, "give --body or --body-file, not both")


@pytest.mark.parametrize(
    "args",
    [
        ["env", "list"],
        ["env", "create", "--name", "e"],
        ["fn", "get", "--name", "hello"],
        ["fn", "list", "-o", "json"],
        ["fn", "create", "--name", "x", "--pkg", "p"],
        ["pkg", "info", "--name", "p"],
        ["route", "list"],
        ["fn", "logs", "--name", "hello"],
    ],
)
def test_unreachable_api_is_one_line_and_exit_1(closed_api: str, args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot reach the fissile API at {closed_api}")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_unreachable_api_while_uploading_code(closed_api: str, tmp_path: Path) -> None:
    code = tmp_path / "hello.py"
    code.write_text("def main(request):\n    return 'hi'\n")
    result = run("fn", "create", "--name", "hello", "--code", str(code))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot reach the fissile API")
    assert result.stderr.count("\n") == 1


@pytest.fixture
def hanging_up_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """FISSILE_API pointing at a loopback server that closes every connection unanswered."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"

    def hang_up() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    monkeypatch.setenv("FISSILE_API", url)
    yield url
    server.shutdown(socket.SHUT_RDWR)
    server.close()
    thread.join(10)


@pytest.mark.parametrize("args", [["fn", "list"], ["fn", "logs", "--name", "hello"]])
def test_a_connection_closed_mid_answer_is_one_line(hanging_up_api: str, args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"Error: the connection to the fissile API at {hanging_up_api} failed:"
        " Server disconnected without sending a response.\n"
    )
    assert result.stdout == ""


def test_unreachable_api_from_the_real_command(closed_api: str) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "fissile", "fn", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert process.returncode == 1
    assert process.stderr.startswith(f"Error: cannot reach the fissile API at {closed_api}")
    assert process.stderr.count("\n") == 1
    assert process.stdout == ""


def test_version_and_help() -> None:
    version = run("--version")
    assert version.exit_code == 0
    assert version.stdout == f"fissile, version {fissile.__version__}\n"
    helped = run("-h")
    assert helped.exit_code == 0
    for group in ["env", "fn", "pkg", "route", "up"]:
        assert f"  {group} " in helped.stdout


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("function", "fn"), ("package", "pkg"), ("httptrigger", "route"), ("ht", "route")],
)
def test_aliases(alias: str, canonical: str) -> None:
    assert (
        run(alias, "--help").stdout.split("\n", 1)[1]
        == run(canonical, "--help").stdout.split("\n", 1)[1]
    )


def test_up_reports_a_busy_port_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("up", "--data-dir", str(tmp_path / "data"), "--port", str(port))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: cannot listen for the router on 127.0.0.1:{port}: Address already in use\n"
    )
    assert not (tmp_path / "data").exists()


def test_up_rejects_bad_ports() -> None:
    assert_usage_error(run("up", "--port", "70000"), "70000 is not in the range 0<=x<=65535")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--header-timeout", "0s"], "Invalid value for --header-timeout: must be at least 0.1s"),
        (["--keep-alive-timeout", "0.01s"], "--keep-alive-timeout: must be at least 0.1s"),
        (["--max-header-bytes", "100"], "--max-header-bytes: must be at least 1Ki"),
        (["--max-headers", "0"], "0 is not in the range x>=1"),
        (["--access-log-max-bytes", "1Ki"], "--access-log-max-bytes: must be at least 64Ki"),
        (["--access-log-backups", "-1"], "-1 is not in the range 0<=x<=1000"),
        (["--max-connections", "0"], "0 is not in the range x>=1"),
        (["--otlp-endpoint", "127.0.0.1:4318"], "--otlp-endpoint: must be an http:// or https://"),
    ],
)
def test_up_rejects_unusable_limits(args: list[str], message: str, tmp_path: Path) -> None:
    assert_usage_error(run("up", "--data-dir", str(tmp_path / "data"), *args), message)
    assert not (tmp_path / "data").exists()
