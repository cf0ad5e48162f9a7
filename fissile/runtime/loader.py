"""Finding a function's entrypoint in its deploy directory.

Rules: ``module.func`` imports ``module`` from the deploy directory; a bare ``func`` is looked up
in the package's only top-level ``.py`` file, or in ``main.py`` when there are several; an empty
entrypoint is ``main`` (as in Fission). ``module:attr`` (uvicorn's spelling, for ASGI and WSGI
apps) names an attribute of ``module``, which may be dotted (``project.wsgi:application``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

_IGNORED = {"setup.py", "conftest.py"}


class LoadError(Exception):
    """The function's code could not be loaded; the message is shown to the caller."""


def load_entrypoint(deploy_dir: str, entrypoint: str) -> Callable[..., Any]:
    """The callable at ``entrypoint`` in ``deploy_dir``."""
    func, _ = load_entry(deploy_dir, entrypoint)
    if not callable(func):
        raise LoadError(f"{entrypoint} is not callable")
    return func  # type: ignore[no-any-return]


def load_entry(
    deploy_dir: str, entrypoint: str, *, package_first: bool = True
) -> tuple[Any, ModuleType]:
    """The object at ``entrypoint`` and the module it was found in. ``package_first`` puts the
    deploy directory at the front of ``sys.path`` (a package's copy of a library wins);
    otherwise it goes after the runtime's site-packages, as Fission's environments do."""
    root = Path(deploy_dir)
    if not root.is_dir():
        raise LoadError(f"deploy directory {deploy_dir} is missing")
    entrypoint = entrypoint or "main"
    if ":" in entrypoint:
        module_name, _, func_name = entrypoint.partition(":")
    else:
        module_name, _, func_name = entrypoint.rpartition(".")
    if not module_name:
        module_name = _default_module(root, entrypoint)
    if str(root) not in sys.path:
        if package_first:
            sys.path.insert(0, str(root))
        else:
            sys.path.append(str(root))
    os.chdir(root)
    try:
        if module_name.isidentifier() or "." in module_name:
            module = importlib.import_module(module_name)
        else:
            module = _import_file(root / f"{module_name}.py")
    except ModuleNotFoundError as exc:
        if exc.name == module_name.split(".")[0]:
            raise LoadError(f"module {module_name!r} not found in the package") from exc
        raise LoadError(f"importing {module_name!r} failed: {_describe(exc)}") from exc
    except BaseException as exc:
        raise LoadError(f"importing {module_name!r} failed: {_describe(exc)}") from exc
    location = getattr(module, "__file__", None)
    if location is None or not Path(location).resolve().is_relative_to(root.resolve()):
        raise LoadError(
            f"module {module_name!r} is shadowed by one the environment already imported"
            f" ({location or 'built in'}); rename your module"
        )
    func: Any = module
    for part in func_name.split("."):
        func = getattr(func, part, None)
        if func is None:
            raise LoadError(f"module {module_name!r} has no attribute {func_name!r}")
    if not callable(func):
        raise LoadError(f"{module_name}.{func_name} is not callable")
    return func, module


def _import_file(path: Path) -> Any:
    """Import a single file whose name is no module name (``hello-world.py``, as Fission
    allows), under a name of its own."""
    name = "fissile_function_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot load {path.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _default_module(root: Path, func_name: str) -> str:
    # os.listdir, not Path.glob: the glob's pattern machinery cost ~0.15 ms of a cold start.
    files = sorted(
        name[:-3]
        for name in os.listdir(root)
        if name.endswith(".py")
        and name not in _IGNORED
        and not name.startswith(".")
        and (root / name).is_file()
    )
    # Files named like modules first; a lone "hello-world.py" is loaded by its path.
    candidates = [stem for stem in files if stem.isidentifier()] or files
    if len(candidates) == 1:
        return candidates[0]
    if "main" in candidates:
        return "main"
    if not candidates:
        raise LoadError("the package has no top-level .py file; set an entrypoint module.func")
    raise LoadError(
        f"entrypoint {func_name!r} is ambiguous among {', '.join(candidates)};"
        f" use e.g. --entrypoint {candidates[0]}.{func_name}"
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
