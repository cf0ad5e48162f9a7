"""fissile/runtime/loader.py: finding a function's entrypoint in its deploy directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from fissile.runtime.loader import LoadError, load_entry, load_entrypoint

pytestmark = pytest.mark.usefixtures("isolated_import")


def deploy(root: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root)


def test_single_file_is_the_default_module(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"fxsingle.py": "def main(request):\n    return 'single'\n"})
    func = load_entrypoint(root, "main")
    assert func(None) == "single"
    assert func.__module__ == "fxsingle"


def test_setup_py_and_non_identifiers_are_ignored_for_the_default(tmp_path: Path) -> None:
    root = deploy(
        tmp_path,
        {
            "fxonly.py": "def handler(request):\n    return 'only'\n",
            "setup.py": "raise SystemExit('must not be imported')\n",
            "conftest.py": "raise SystemExit('must not be imported')\n",
            "not-a-module.py": "",
        },
    )
    assert load_entrypoint(root, "handler")(None) == "only"


def test_module_dot_func(tmp_path: Path) -> None:
    root = deploy(
        tmp_path,
        {
            "fxmod_a.py": "def main(request):\n    return 'a'\n",
            "fxmod_b.py": "def go(request):\n    return 'b'\n",
        },
    )
    assert load_entrypoint(root, "fxmod_b.go")(None) == "b"


def test_package_module_dot_func(tmp_path: Path) -> None:
    root = deploy(
        tmp_path,
        {
            "fxpkg/__init__.py": "",
            "fxpkg/handlers.py": "def main(request):\n    return 'nested'\n",
        },
    )
    assert load_entrypoint(root, "fxpkg.handlers.main")(None) == "nested"


def test_main_py_wins_when_there_are_several_files(tmp_path: Path) -> None:
    root = deploy(
        tmp_path,
        {
            "main.py": "def main(request):\n    return 'main'\n",
            "fxhelper.py": "def main(request):\n    return 'helper'\n",
        },
    )
    assert load_entrypoint(root, "main")(None) == "main"


def test_ambiguous_default_module(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"fxone.py": "", "fxtwo.py": ""})
    with pytest.raises(LoadError, match=r"'main' is ambiguous among fxone, fxtwo") as info:
        load_entrypoint(root, "main")
    assert "--entrypoint fxone.main" in str(info.value)


def test_no_python_file(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"README.md": "hi"})
    with pytest.raises(LoadError, match=r"no top-level \.py file"):
        load_entrypoint(root, "main")


def test_missing_deploy_directory(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"deploy directory .* is missing"):
        load_entrypoint(str(tmp_path / "missing"), "main")


def test_missing_module(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"fxthere.py": ""})
    with pytest.raises(LoadError, match="module 'fxnowhere' not found in the package"):
        load_entrypoint(root, "fxnowhere.main")


def test_missing_attribute(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"fxnoattr.py": "def other(request):\n    pass\n"})
    with pytest.raises(LoadError, match="module 'fxnoattr' has no attribute 'main'"):
        load_entrypoint(root, "main")


def test_attribute_not_callable(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"fxnotcall.py": "main = 3\n"})
    with pytest.raises(LoadError, match=r"fxnotcall\.main is not callable"):
        load_entrypoint(root, "main")


def test_import_error_of_a_dependency_names_the_dependency(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"fxdep.py": "import fx_no_such_dependency\n"})
    with pytest.raises(LoadError) as info:
        load_entrypoint(root, "main")
    assert str(info.value) == (
        "importing 'fxdep' failed: ModuleNotFoundError: No module named 'fx_no_such_dependency'"
    )


def test_exception_at_import(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"fxboom.py": "raise RuntimeError('boom at import')\n"})
    with pytest.raises(LoadError, match="importing 'fxboom' failed: RuntimeError: boom at import"):
        load_entrypoint(root, "main")


def test_syntax_error(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"fxsyntax.py": "def main(:\n"})
    with pytest.raises(LoadError, match="importing 'fxsyntax' failed: SyntaxError"):
        load_entrypoint(root, "main")


def test_system_exit_at_import_is_a_load_error(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"fxexit.py": "raise SystemExit(4)\n"})
    with pytest.raises(LoadError, match="importing 'fxexit' failed: SystemExit: 4"):
        load_entrypoint(root, "main")


def test_module_shadowed_by_an_imported_stdlib_module(tmp_path: Path) -> None:
    import json  # noqa: F401  (the environment has imported it already)

    root = deploy(tmp_path, {"json.py": "def main(request):\n    return 'mine'\n"})
    with pytest.raises(LoadError, match="shadowed") as info:
        load_entrypoint(root, "main")
    assert "module 'json'" in str(info.value)
    assert "rename your module" in str(info.value)


def test_module_shadowed_by_a_builtin_module(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"sys.py": "def main(request):\n    return 'mine'\n"})
    with pytest.raises(LoadError, match=r"shadowed .*\(built in\)"):
        load_entrypoint(root, "main")


def test_loading_enters_the_deploy_directory(tmp_path: Path) -> None:
    root = deploy(
        tmp_path,
        {
            "fxcwd.py": "import os\nHERE = os.getcwd()\ndef main(request):\n    return HERE\n",
            "fxsibling.py": "VALUE = 'sibling'\n",
        },
    )
    func = load_entrypoint(root, "fxcwd.main")
    assert Path(func(None)).resolve() == tmp_path.resolve()
    assert Path(os.getcwd()).resolve() == tmp_path.resolve()
    assert sys.path[0] == root
    import fxsibling  # type: ignore[import-not-found]

    assert fxsibling.VALUE == "sibling"


def test_a_lone_file_named_unlike_a_module_is_loaded_by_path(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"hello-world.py": "def main():\n    return 'dashed'\n"})
    assert load_entrypoint(root, "main")() == "dashed"


def test_module_colon_attribute_names_an_app(tmp_path: Path) -> None:
    root = deploy(
        tmp_path,
        {
            "fxapp/__init__.py": "",
            "fxapp/web.py": "class A:\n    def app(self, x):\n        return x\n\nholder = A()\n",
        },
    )
    func, module = load_entry(root, "fxapp.web:holder.app")
    assert func("ok") == "ok"
    assert module.__name__ == "fxapp.web"


def test_an_empty_entrypoint_is_main(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"fxempty.py": "def main():\n    return 'empty'\n"})
    func, _ = load_entry(root, "")
    assert func() == "empty"


def test_the_package_can_go_after_the_runtime_on_sys_path(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"fxlast.py": "def main():\n    return 1\n"})
    load_entry(root, "main", package_first=False)
    assert sys.path[-1] == root
    assert sys.path[0] != root


def test_a_missing_attribute_of_an_app_path(tmp_path: Path) -> None:
    root = deploy(tmp_path, {"fxnoattr.py": "app = None\n"})
    with pytest.raises(LoadError, match=r"has no attribute 'nothing\.here'"):
        load_entry(root, "fxnoattr:nothing.here")
