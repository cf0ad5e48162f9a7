"""fissile/runtime/contracts/native.py and fission.py: the native and Fission (Flask) contracts."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import flask
import pytest
from contractkit import context_maker, request_maker

from fissile.runtime.context import Context
from fissile.runtime.contracts import bind, fission
from fissile.runtime.loader import LoadError
from fissile.runtime.request import Request
from fissile.runtime.response import Response

request = request_maker()
context = context_maker()


# --- native ----------------------------------------------------------------------------


def test_one_argument_function() -> None:
    def main(req: Request) -> Any:
        return {"path": req.path, "name": req.query.get("name")}

    handler = bind(main, "fn")
    assert (handler.contract, handler.is_async) == ("native", False)
    response = handler.call(request(path="/p", query="name=ada"), context())
    assert json.loads(response.body) == {"path": "/p", "name": "ada"}


def test_two_argument_function_gets_the_context() -> None:
    def main(req: Request, ctx: Context) -> Any:
        return {"function": ctx.function, "id": ctx.invocation_id, "left": ctx.remaining() > 5}

    handler = bind(main, "fn")
    response = handler.call(request(), context())
    assert json.loads(response.body) == {"function": "fn", "id": "inv-1", "left": True}


def test_optional_and_variadic_parameters() -> None:
    def defaults(req: Request, ctx: Context | None = None, extra: int = 1) -> Any:
        return ctx is None

    def variadic(*args: Any) -> Any:
        return len(args)

    assert bind(defaults, "fn").call(request(), context()).body == b"true"
    assert bind(variadic, "fn").call(request(), context()).body == b"1"


def test_too_many_arguments() -> None:
    def main(a: Any, b: Any, c: Any) -> None:
        pass

    with pytest.raises(TypeError, match=r"takes 3 arguments; a native function is main\(request\)"):
        bind(main, "fn")


async def test_async_function() -> None:
    async def main(req: Request, ctx: Context) -> Any:
        await asyncio.sleep(0)
        return (req.text.upper(), 201)

    handler = bind(main, "fn")
    assert (handler.contract, handler.is_async) == ("native", True)
    response = await handler.call_async(request(body=b"hi"), context())
    assert (response.status, response.body) == (201, b"HI")


def test_exceptions_propagate() -> None:
    def main(req: Request) -> Any:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        bind(main, "fn").call(request(), context())


def test_callable_object() -> None:
    class Handler:
        def __call__(self, req: Request) -> str:
            return "called"

    handler = bind(Handler(), "fn")
    assert handler.contract == "native"
    assert handler.call(request(), context()).body == b"called"


# --- Fission (Flask) -------------------------------------------------------------------


def test_zero_argument_main_reads_flask_request() -> None:
    def main() -> Any:
        r = flask.request
        return {
            "method": r.method,
            "path": r.path,
            "args": r.args.to_dict(),
            "json": r.get_json(silent=True),
            "header": r.headers.get("X-Thing"),
            "host": r.host,
            "remote": r.remote_addr,
        }

    handler = bind(main, "fn")
    assert handler.contract == "fission"
    response = handler.call(
        request(
            "POST",
            "/students/3",
            "sort=asc&x=1",
            {
                "content-type": "application/json",
                "x-thing": "yes",
                "host": "example.org:8080",
                "x-forwarded-for": "10.1.2.3, 10.0.0.1",
            },
            b'{"a": 1}',
        ),
        context(),
    )
    assert response.status == 200
    assert dict(response.headers)["Content-Type"] == "application/json"
    assert "Content-Length" not in dict(response.headers)
    assert json.loads(response.body) == {
        "method": "POST",
        "path": "/students/3",
        "args": {"sort": "asc", "x": "1"},
        "json": {"a": 1},
        "header": "yes",
        "host": "example.org:8080",
        "remote": "10.1.2.3",
    }


def test_fission_string_return_is_html_like_flask() -> None:
    def main() -> str:
        return "hello " + flask.request.args.get("name", "world")

    response = bind(main, "fn").call(request(query="name=ada"), context())
    assert (response.status, response.body) == (200, b"hello ada")
    assert dict(response.headers)["Content-Type"].startswith("text/html")


def test_fission_tuple_return() -> None:
    def main() -> Any:
        return "created", 201, {"X-Id": "9"}

    response = bind(main, "fn").call(request(), context())
    assert (response.status, response.body) == (201, b"created")
    assert dict(response.headers)["X-Id"] == "9"


def test_fission_flask_response_return() -> None:
    def main() -> Any:
        return flask.Response(b"\x00raw", status=202, mimetype="application/x-thing")

    response = bind(main, "fn").call(request(), context())
    assert isinstance(response, Response)
    assert (response.status, response.body) == (202, b"\x00raw")
    assert dict(response.headers)["Content-Type"] == "application/x-thing"


def test_fission_reads_the_raw_body() -> None:
    def main() -> Any:
        return flask.request.get_data()

    response = bind(main, "fn").call(request("PUT", body=b"payload"), context())
    assert response.body == b"payload"


async def test_async_fission_function() -> None:
    async def main() -> Any:
        await asyncio.sleep(0)
        return {"method": flask.request.method}

    handler = bind(main, "fn")
    assert (handler.contract, handler.is_async) == ("fission", True)
    response = await handler.call_async(request("DELETE"), context())
    assert json.loads(response.body) == {"method": "DELETE"}


def test_fission_none_return_is_an_error() -> None:
    def main() -> None:
        return None

    with pytest.raises(TypeError):
        bind(main, "fn").call(request(), context())


# --- context ---------------------------------------------------------------------------


def test_context_deadline() -> None:
    ctx = context(timeout=2.0)
    assert 1.5 < ctx.remaining() <= 2.0
    assert context(timeout=0).remaining() == 0.0
    assert repr(ctx) == "<Context fn inv-1>"


def _load(tmp_path: Path, name: str, source: str) -> Any:
    """Import ``source`` as module ``name`` from ``tmp_path`` (cleaned up by the caller)."""
    (tmp_path / f"{name}.py").write_text(source)
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name).main
    finally:
        sys.path.remove(str(tmp_path))


def test_zero_argument_function_without_flask_skips_the_request_context(tmp_path: Path) -> None:
    main = _load(tmp_path, "fx_plain_hello", "def main():\n    return 'Hello, world!'\n")
    try:
        handler = bind(main, "hello", str(tmp_path), {"fx_plain_hello"})
        response = handler.call(Request("GET", "/", "", {}, b""), context())
        assert handler.contract == "fission"
        assert response.body == b"Hello, world!"
        # Flask's reading of a str, without Flask.
        assert dict(response.headers) == {"content-type": "text/html; charset=utf-8"}
        created = handler.call(Request("GET", "/", "", {}, b""), context())
        assert created.status == 200
    finally:
        sys.modules.pop("fx_plain_hello", None)


def test_zero_argument_function_using_flask_gets_the_request(tmp_path: Path) -> None:
    main = _load(
        tmp_path,
        "fx_flask_echo",
        "from flask import request\n\ndef main():\n    return request.args.get('x', '')\n",
    )
    try:
        handler = bind(main, "echo", str(tmp_path), {"fx_flask_echo"})
        response = handler.call(Request("GET", "/", "x=42", {}, b""), context())
        assert response.body == b"42"
    finally:
        sys.modules.pop("fx_flask_echo", None)


def test_zero_argument_function_returning_none_is_an_error_as_in_flask(tmp_path: Path) -> None:
    main = _load(tmp_path, "fx_plain_none", "def main():\n    return None\n")
    try:
        handler = bind(main, "none", str(tmp_path), {"fx_plain_none"})
        with pytest.raises(TypeError, match="returned None"):
            handler.call(Request("GET", "/", "", {}, b""), context())
    finally:
        sys.modules.pop("fx_plain_none", None)


def _load_in_app(tmp_path: Path, name: str, source: str, *, explicit: bool = True) -> Any:
    """Import ``source`` as Fission's server would: inside the instance's Flask app (under
    ``auto``: when the plain import needs it)."""

    (tmp_path / f"{name}.py").write_text(source)
    func, _ = fission.load(str(tmp_path), f"{name}.main", package_first=not explicit)
    return bind(func, name, str(tmp_path), {name}, "fission" if explicit else "auto")


@pytest.mark.usefixtures("isolated_import")
@pytest.mark.parametrize("explicit", [True, False], ids=["fission", "auto"])
def test_fission_module_is_imported_inside_its_flask_app(tmp_path: Path, explicit: bool) -> None:
    (tmp_path / "views").mkdir()
    (tmp_path / "views" / "hi.html").write_text("hi {{ who }} from {{ at }}")
    source = (
        "from flask import current_app, render_template, request\n"
        "current_app.template_folder = 'views'\n"
        "AT = request.path\n"
        "def main():\n"
        "    return render_template('hi.html', who=request.args['who'], at=AT)\n"
    )
    try:
        handler = _load_in_app(tmp_path, "fx_app_context", source, explicit=explicit)
        assert handler.contract == "fission"
        response = handler.call(request(query="who=ada"), context())
        assert (response.status, response.body) == (200, b"hi ada from /v2/specialize")
    finally:
        sys.modules.pop("fx_app_context", None)


@pytest.mark.usefixtures("isolated_import")
def test_auto_imports_outside_flask_when_the_module_does_not_need_it(tmp_path: Path) -> None:
    (tmp_path / "fx_auto_native.py").write_text("def main(request):\n    return 'ok'\n")
    (tmp_path / "fx_auto_broken.py").write_text("raise RuntimeError('broken')\ndef main(): ...\n")
    try:
        fission._imported = None
        func, _ = fission.load(str(tmp_path), "fx_auto_native.main", package_first=True)
        assert func.__name__ == "main"
        assert fission._imported is None
        with pytest.raises(LoadError, match="broken"):
            fission.load(str(tmp_path), "fx_auto_broken.main", package_first=True)
        assert fission._imported is None
    finally:
        sys.modules.pop("fx_auto_native", None)


@pytest.mark.usefixtures("isolated_import")
def test_each_fission_function_has_its_own_flask_app(tmp_path: Path) -> None:
    source = "from flask import current_app\ndef main():\n    return current_app.name\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        first = _load_in_app(tmp_path / "a", "fx_app_a", source)
        second = _load_in_app(tmp_path / "b", "fx_app_b", source)
        assert first.call(request(), context()).body == b"fx_app_a"
        assert second.call(request(), context()).body == b"fx_app_b"
    finally:
        sys.modules.pop("fx_app_a", None)
        sys.modules.pop("fx_app_b", None)


def test_fission_abort_answers_like_flask() -> None:
    def main() -> Any:
        flask.abort(404)

    response = bind(main, "fn", contract="fission").call(request(), context())
    assert response.status == 404
    assert b"<title>404 Not Found</title>" in response.body
    assert dict(response.headers)["Content-Type"] == "text/html; charset=utf-8"


def test_fission_missing_form_field_is_a_400_like_flask() -> None:
    def main() -> Any:
        return flask.request.form["missing"]

    form = {"content-type": "application/x-www-form-urlencoded"}
    response = bind(main, "fn").call(request("POST", headers=form, body=b"a=1"), context())
    assert response.status == 400
    assert b"Bad Request" in response.body


async def test_async_fission_abort_answers_like_flask() -> None:
    async def main() -> Any:
        flask.abort(403, "nope")

    response = await bind(main, "fn").call_async(request(), context())
    assert response.status == 403
    assert b"nope" in response.body


# --- Fission's entrypoints ---------------------------------------------------------------


def _files(root: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return str(root)


@pytest.mark.usefixtures("isolated_import")
@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [
        ("", "main.main"),  # Fission's default: main.main
        ("other", "main.other"),  # one part: a function of main.py
        ("hello-world.main", "hello-world.main"),  # a module named unlike one
        ("sub_mod.altmain.entry", "sub_mod.altmain.entry"),  # a module in a package
    ],
)
def test_fission_entrypoints(tmp_path: Path, entrypoint: str, expected: str) -> None:
    def source(module: str, *names: str) -> str:
        return "".join(f"def {n}():\n    return '{module}.{n}'\n" for n in names)

    root = _files(
        tmp_path,
        {
            "main.py": source("main", "main", "other"),
            "helper.py": source("helper", "main"),
            "hello-world.py": source("hello-world", "main"),
            "sub_mod/__init__.py": "",
            "sub_mod/altmain.py": source("sub_mod.altmain", "entry"),
        },
    )
    func, _ = fission.load(root, entrypoint, package_first=False)
    assert func() == expected
    assert bind(func, "fn", root, (), "fission").contract == "fission"
