"""fissile/testing/_local.py: a function in a real instance subprocess, without a platform."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from fissile.runtime.loader import LoadError
from fissile.testing import Invocation, invoke_local, local_instance, make_request

NATIVE = """
import os

def main(request, context):
    print("serving", request.path, flush=True)
    other = context.invoke("grades", {"student": request.params.get("id")})
    context.publish("seen", request.path)
    return {
        "path": request.path,
        "query": request.query,
        "params": request.params,
        "body": request.text,
        "function": context.function,
        "invocation": context.invocation_id,
        "other": other.json() if other.ok else other.status,
        "greeting": os.environ.get("GREETING"),
        "pid": os.getpid(),
    }
"""

FISSION = """
from flask import request

def main():
    return {"path": request.path, "json": request.get_json(silent=True)}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_one_request_through_the_real_runtime(tmp_path: Path) -> None:
    code = write(tmp_path / "hello.py", FISSION)
    result = invoke_local(code, make_request("POST", "/x?y=1", json={"k": 1}))
    assert result.status == 200
    assert result.json() == {"path": "/x", "json": {"k": 1}}
    # Flask's answer, through the runtime's encoding: its headers, a content-length.
    assert result.content_type == "application/json"
    assert result.header("content-length") == str(len(result.body))


def test_an_instance_serves_several_requests_and_fakes_the_platform(tmp_path: Path) -> None:
    code = write(tmp_path / "students.py", NATIVE)

    def grades(call: Invocation) -> object:
        return {"grades-for": call.json()["student"]}

    with local_instance(
        code, env={"GREETING": "hi"}, function="students", replies={"grades": grades}
    ) as instance:
        assert instance.contract_bound == "native"
        first = instance.get("/students/7", params={"id": "7"}, query={"a": "1"})
        second = instance.post("/students", body="new")
        pid = first.json()["pid"]
        assert alive(pid)
        assert first.json() == {
            "path": "/students/7",
            "query": {"a": "1"},
            "params": {"id": "7"},
            "body": "",
            "function": "students",
            "invocation": "local-00000001",
            "other": {"grades-for": "7"},
            "greeting": "hi",
            "pid": pid,
        }
        assert second.json()["pid"] == pid  # the same instance
        assert second.json()["body"] == "new"
        assert [c.body for c in instance.invocations] == [b'{"student": "7"}', b'{"student": null}']
        assert [(p.topic, p.body) for p in instance.published] == [
            ("seen", b"/students/7"),
            ("seen", b"/students"),
        ]
        assert "serving /students/7" in instance.output()
    assert not alive(pid)


def test_an_unscripted_invoke_is_the_platforms_404(tmp_path: Path) -> None:
    code = write(tmp_path / "students.py", NATIVE)
    assert invoke_local(code).json()["other"] == 404


def test_a_package_directory_with_an_entrypoint(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    write(package / "main.py", "import helper\n\ndef handler(request):\n    return helper.VALUE\n")
    write(package / "helper.py", "VALUE = 'from the package'\n")
    assert invoke_local(package, entrypoint="main.handler").text == "from the package"


def test_a_function_error_is_the_platforms_500_with_its_traceback(tmp_path: Path) -> None:
    code = write(tmp_path / "broken.py", "def main(request):\n    raise KeyError('gone')\n")
    with local_instance(code) as instance:
        result = instance.get()
        assert result.status == 500
        assert result.json()["error"]["type"] == "KeyError"
        assert "KeyError: 'gone'" in instance.output()


def test_a_load_failure_raises_with_the_runtimes_message(tmp_path: Path) -> None:
    code = write(
        tmp_path / "bad.py", "import no_such_module_anywhere\n\ndef main(request):\n    pass\n"
    )
    with pytest.raises(LoadError, match="no_such_module_anywhere"):
        invoke_local(code)


REST_CALLER = """
def main(request, context):
    reply = context.invoke("items", method="PATCH", path="/items/3", query={"v": "2"},
                           headers={"x-key": "k"}, json={"name": "cup"})
    return {"status": reply.status, "answer": reply.json()}
"""


def test_a_local_instance_calls_by_method_and_path(tmp_path: Path) -> None:
    code = write(tmp_path / "caller.py", REST_CALLER)
    replies = {"PATCH items /items/3": lambda call: (409, {"query": call.query})}
    with local_instance(code, replies=replies) as instance:
        assert instance.post("/").json() == {"status": 409, "answer": {"query": {"v": ["2"]}}}
        (call,) = instance.invocations
    assert (call.function, call.method, call.path) == ("items", "PATCH", "/items/3")
    assert call.headers["x-key"] == "k" and call.json() == {"name": "cup"}
    assert call.content_type == "application/json"
