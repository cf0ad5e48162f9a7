"""What the CLI ships as a function's source: ``--code`` is one regular file, and a ``--src``
tree is zipped without its sockets, pipes and devices (fissile/cli/fn.py, zip_path)."""

from __future__ import annotations

import io
import os
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fissile.builder.archive import zip_path
from fissile.cli import cli


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    """A source directory holding a socket and a named pipe besides its code."""
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    (root / "main.py").write_text("def main(request):\n    return 'hi'\n")
    (root / "pkg" / "util.py").write_text("X = 1\n")
    os.mkfifo(root / "pkg" / "pipe")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(root / "app.sock"))
    (root / "link.py").symlink_to("main.py")
    yield root
    listener.close()


@pytest.mark.parametrize("command", ["create", "update"])
@pytest.mark.parametrize("spec", [False, True])
def test_code_refuses_a_directory(
    tree: Path, command: str, spec: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FISSILE_API", "http://127.0.0.1:9")  # never reached
    args = ["fn", command, "--name", "x", "--code", str(tree)]
    if spec and command == "create":
        args += ["--spec", "--specdir", str(tree.parent / "specs")]
    result = CliRunner().invoke(cli, args, prog_name="fissile")
    assert result.exit_code == 2, result.output
    assert f"Invalid value for --code: {tree} is a directory; use --src for one" in result.stderr
    assert not (tree.parent / "specs").exists()


def test_code_refuses_a_socket(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FISSILE_API", "http://127.0.0.1:9")
    sock = tree / "app.sock"
    result = CliRunner().invoke(
        cli, ["fn", "create", "--name", "x", "--code", str(sock)], prog_name="fissile"
    )
    assert result.exit_code == 2, result.output
    assert f"Invalid value for --code: {sock} is not a regular file" in result.stderr


def test_src_skips_sockets_and_pipes(tree: Path) -> None:
    # Reading the pipe would block forever; the socket cannot be read at all.
    with zipfile.ZipFile(io.BytesIO(zip_path(tree))) as archive:
        assert sorted(archive.namelist()) == ["link.py", "main.py", "pkg/util.py"]
