"""Packages: source directories with dependencies, zips, builds, and ``fn test``."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from syskit import Platform, write

# A PEP 517 backend with no build requirements, kept inside the library's directory, so pip
# builds the library without fetching setuptools (the platform runs with PIP_NO_INDEX=1).
TINY_BACKEND = """
import base64
import hashlib
import os
import zipfile

NAME, VERSION = "mylib", "0.1"
DIST = f"{NAME}-{VERSION}.dist-info"


def _record(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    here = os.path.dirname(os.path.abspath(__file__))
    files = {}
    for name in sorted(os.listdir(os.path.join(here, NAME))):
        if name.endswith(".py"):
            with open(os.path.join(here, NAME, name), "rb") as handle:
                files[f"{NAME}/{name}"] = handle.read()
    metadata = f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n"
    files[f"{DIST}/METADATA"] = metadata.encode()
    files[f"{DIST}/WHEEL"] = (
        b"Wheel-Version: 1.0\\nGenerator: tiny\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    )
    record = [_record(path, data) for path, data in files.items()] + [f"{DIST}/RECORD,,"]
    files[f"{DIST}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    wheel = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel
"""

HANDLER = """
import mylib


def main(request):
    return {"greeting": mylib.greet(request.query.get("name", "nobody")), "lib": mylib.__file__}
"""


def make_source(root: Path, lib_dir: str) -> Path:
    """A source directory: handler.py, and the local library ``mylib`` at ``lib_dir``."""
    lib = root / lib_dir
    write(
        lib / "pyproject.toml",
        """
        [build-system]
        requires = []
        build-backend = "tiny_backend"
        backend-path = ["."]

        [project]
        name = "mylib"
        version = "0.1"
        """,
    )
    write(lib / "tiny_backend.py", TINY_BACKEND)
    write(lib / "mylib" / "__init__.py", 'def greet(name):\n    return f"greetings, {name}"\n')
    write(root / "requirements.txt", f"./{lib_dir}\n")
    write(root / "handler.py", HANDLER)
    return root


def check_greeting(platform: Platform, function: str) -> None:
    response = platform.get(f"/function/{function}?name=ann")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["greeting"] == "greetings, ann"
    # The installed copy (in the deploy dir's top level), not the library's source tree.
    assert Path(body["lib"]).parent.name == "mylib"
    assert Path(body["lib"]).parent.parent.name != "mylib"


def test_fn_create_from_source_dir_installs_local_dependency(
    platform: Platform, tmp_path: Path
) -> None:
    source = make_source(tmp_path / "src", "libs/mylib")
    result = platform.ok(
        "fn", "create", "--name", "deps-dir", "--src", str(source), "--entrypoint", "handler.main"
    )
    assert "deps-dir" in result.out
    check_greeting(platform, "deps-dir")


def test_local_dependency_dir_named_like_its_package(platform: Platform, tmp_path: Path) -> None:
    source = make_source(tmp_path / "src", "mylib")
    platform.ok(
        "fn", "create", "--name", "deps-samename", "--src", str(source), "--entrypoint",
        "handler.main",
    )  # fmt: skip
    check_greeting(platform, "deps-samename")


def test_pkg_create_info_list_and_fn_from_pkg(platform: Platform, tmp_path: Path) -> None:
    source = make_source(tmp_path / "src", "vendor/mylib")
    # A distinct handler so this build is not a reuse of another test's identical source.
    write(source / "handler.py", HANDLER + "\nPKG_TEST = True\n")

    created = platform.ok(
        "pkg", "create", "--name", "p-deps", "--env", "python", "--src", str(source), "--wait"
    )
    assert "p-deps" in created.out
    assert "succeeded" in created.out

    info = platform.ok("pkg", "info", "--name", "p-deps")
    assert "Status:   succeeded" in info.out, info
    assert "pip install" in info.out
    assert "Successfully installed mylib-0.1" in info.out
    assert "build succeeded" in info.out

    listing = platform.ok("pkg", "list")
    rows = [line.split() for line in listing.out.splitlines()]
    assert rows[0][:3] == ["NAME", "ENV", "STATUS"]
    assert ["p-deps", "python", "succeeded"] in [row[:3] for row in rows[1:]]

    platform.ok(
        "fn", "create", "--name", "from-pkg", "--pkg", "p-deps", "--entrypoint", "handler.main"
    )
    check_greeting(platform, "from-pkg")

    # A package in use cannot be deleted; the function's deletion leaves it (not owned) alone.
    refused = platform.cli("pkg", "delete", "--name", "p-deps")
    assert refused.rc == 1, refused
    assert "in use" in refused.err
    platform.ok("fn", "delete", "--name", "from-pkg")
    names = [p["name"] for p in platform.json_of("pkg", "list")]
    assert "p-deps" in names
    platform.ok("pkg", "delete", "--name", "p-deps")
    assert "p-deps" not in [p["name"] for p in platform.json_of("pkg", "list")]


def test_fn_create_from_zip(platform: Platform, tmp_path: Path) -> None:
    archive = tmp_path / "app.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(
            "main.py",
            "import helper\n\ndef main(request):\n    return helper.shout(request.text)\n",
        )
        zf.writestr("helper.py", "def shout(text):\n    return text.upper() + '!'\n")
        zf.writestr("data/words.txt", "unused\n")
    platform.ok("fn", "create", "--name", "zipped", "--src", str(archive))

    response = platform.request("POST", "/function/zipped", content=b"quiet")
    assert response.status_code == 200, response.text
    assert response.text == "QUIET!"


def test_fn_test_prints_the_body(platform: Platform, tmp_path: Path) -> None:
    write(
        tmp_path / "inspect_call.py",
        """
        import json

        def main(request):
            return json.dumps({
                "method": request.method,
                "body": request.text,
                "header": request.headers.get("x-trace"),
                "path": request.path,
            })
        """,
    )
    platform.ok(
        "fn", "create", "--name", "inspect-call", "--code", str(tmp_path / "inspect_call.py")
    )

    plain = platform.ok("fn", "test", "--name", "inspect-call")
    assert json.loads(plain.out)["method"] == "GET"

    result = platform.ok(
        "fn", "test", "--name", "inspect-call", "--method", "POST", "--body", "payload-1",
        "-H", "X-Trace: abc 123", "--subpath", "/x",
    )  # fmt: skip
    body = json.loads(result.out)
    assert body["method"] == "POST"
    assert body["body"] == "payload-1"
    assert body["header"] == "abc 123"
    assert body["path"].endswith("/x")


def test_fn_test_of_failing_function_exits_1(platform: Platform, tmp_path: Path) -> None:
    write(tmp_path / "teapot.py", "def main(request):\n    return 'short and stout', 418\n")
    platform.ok("fn", "create", "--name", "teapot", "--code", str(tmp_path / "teapot.py"))
    result = platform.cli("fn", "test", "--name", "teapot")
    assert result.rc == 1, result
    assert result.out.strip() == "short and stout"
    assert "418" in result.err
    assert "Traceback" not in result.err
