"""The import cache with real zygotes: a function importing a library the environment has gets
a package zygote, forked from the environment's, that already imported it; later cold starts
fork from it. ``yaml`` (PyYAML, a dependency of fissile) stands for numpy & co: installed in the
environment's Python, imported by neither the runtime nor the environment's zygote."""

from __future__ import annotations

import json
import os
from pathlib import Path

from intkit import Harness, pid_alive, until

from fissile.executor.connection import InstanceResponse
from fissile.executor.importcache import scan_package
from fissile.router.proxy import forward

USES_YAML = """
import os, sys
CACHED = "yaml" in sys.modules  # before our own import: was it in the zygote already?
import yaml

def main(request):
    return {"pid": os.getpid(), "ppid": os.getppid(), "cached": CACHED, "tag": TAG}
"""


async def call(harness: Harness, function: str) -> dict[str, object]:
    pool = harness.executor.function(function)
    request = b"GET / HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n"
    response = await forward(harness.executor, pool, request)
    assert isinstance(response, InstanceResponse), response.body
    assert response.status == 200, response.body
    result: dict[str, object] = json.loads(response.body)
    return result


def yaml_function(harness: Harness, name: str, **fields: object) -> None:
    harness.function(name, USES_YAML + f"TAG = {name!r}\n", **fields)


async def test_functions_importing_a_library_fork_from_a_zygote_that_has_it(
    harness: Harness,
) -> None:
    env_zygote = harness.executor.environments["python"].zygote
    assert env_zygote is not None and "yaml" not in env_zygote.modules
    yaml_function(harness, "first")
    first = await call(harness, "first")
    assert first["cached"] is True
    ((key, cache),) = harness.executor.imports.pools.items()
    assert key == ("python", ("yaml",))
    assert cache.zygote is not None and cache.zygote.imported == ["yaml"]
    zygote_pid = cache.zygote.pid
    assert first["ppid"] == zygote_pid  # forked from the package zygote, not the environment's
    assert zygote_pid != env_zygote.pid and pid_alive(zygote_pid or 0)
    assert cache.private_memory > 0

    # Another function with the same dependencies: the same zygote, from its warm pool.
    warm = await until(lambda: list(cache.warm))
    yaml_function(harness, "second")
    second = await call(harness, "second")
    assert (second["cached"], second["ppid"], second["pid"]) == (True, zygote_pid, warm[0].pid)
    assert len(harness.executor.imports.pools) == 1


async def test_functions_without_extra_imports_use_the_environment(harness: Harness) -> None:
    harness.function("plain", "import os, json\ndef main():\n    return str(os.getppid())\n")
    pool = harness.executor.function("plain")
    request = b"GET / HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n"
    response = await forward(harness.executor, pool, request)
    assert isinstance(response, InstanceResponse)
    assert int(response.body) == harness.executor.environments["python"].zygote.pid
    assert not harness.executor.imports.pools


async def test_a_module_the_package_provides_is_never_imported_by_a_zygote(
    harness: Harness,
) -> None:
    # The package ships its own yaml: the instance must import that one, in its sandbox.
    key = harness.package(
        "own-pkg",
        {
            "yaml.py": "MINE = True\n",
            "fx_own.py": USES_YAML + "TAG = yaml.MINE\n",
        },
    )
    harness.store.create(
        "functions",
        "own",
        {"name": "own", "env": "python", "package": "own-pkg", "entrypoint": "fx_own.main"},
    )
    result = await call(harness, "own")
    assert (result["cached"], result["tag"]) == (False, True)
    assert not harness.executor.imports.pools
    assert key


async def test_a_library_the_environment_lacks_gets_no_zygote(harness: Harness) -> None:
    code = "try:\n    import nosuchlib_fx\nexcept ImportError:\n    pass\n"
    harness.function("lacking", code + "def main():\n    return 'ok'\n")
    pool = harness.executor.function("lacking")
    request = b"GET / HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n"
    assert (await forward(harness.executor, pool, request)).status == 200
    assert not harness.executor.imports.pools
    assert ("python", ("nosuchlib_fx",)) in harness.executor.imports._useless


async def test_least_recently_used_unused_zygotes_are_evicted(harness: Harness) -> None:
    harness.executor.imports.max_zygotes = 1
    yaml_function(harness, "a", idle_timeout=0.1)
    await call(harness, "a")
    (old,) = harness.executor.imports.pools.values()
    old_pid = old.zygote.pid if old.zygote else 0
    # In use by a's instance: a zygote with a different key cannot evict it yet.
    harness.function("b", "import httpx\ndef main():\n    return {'b': 1}\n", idle_timeout=0.1)
    await call(harness, "b")
    assert len(harness.executor.imports.pools) == 2
    # Once a's instance is reaped (idle), the next cold start evicts the least recently used.
    await until(lambda: not harness.executor.function("a").instances, timeout=10)
    await until(lambda: not harness.executor.function("b").instances, timeout=10)
    # A reaped instance counts until its exit is reported (slow on a loaded machine).
    pools = harness.executor.imports.pools
    await until(lambda: not any(p.in_use() for p in pools.values()), timeout=10)
    harness.function("c", "import httpx\ndef main():\n    return {'c': 1}\n")
    await call(harness, "c")
    assert [k[1] for k in harness.executor.imports.pools] == [("httpx",)]
    await until(lambda: not pid_alive(old_pid))


async def test_a_dead_package_zygote_is_made_again(harness: Harness) -> None:
    yaml_function(harness, "phoenix", idle_timeout=0.1)
    await call(harness, "phoenix")
    (cache,) = harness.executor.imports.pools.values()
    assert cache.zygote is not None
    dead_pid = cache.zygote.pid or 0
    pool = harness.executor.function("phoenix")
    instance_pid = pool.instances[0].pid
    os.kill(dead_pid, 9)
    # Its instances die with it (parent-death signal), and the next cold start makes a new one.
    await until(lambda: not pid_alive(instance_pid))
    await until(lambda: not pool.instances)
    result = await call(harness, "phoenix")
    (again,) = harness.executor.imports.pools.values()
    assert again.zygote is not None and again.zygote.pid not in (None, dead_pid)
    assert result["ppid"] == again.zygote.pid


def test_scan_reads_the_package_source_but_not_installed_libraries(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(
        "import numpy as np\nfrom pandas.core import frame\nfrom . import sibling\n"
        "import helpers\ndef f():\n    import PIL.Image\n"
    )
    (tmp_path / "helpers.py").write_text("import scipy\n")
    (tmp_path / "broken.py").write_text("this is not python(\n")
    lib = tmp_path / "requests"
    lib.mkdir()
    (lib / "__init__.py").write_text("import urllib3\n")
    info = tmp_path / "requests-2.0.dist-info"
    info.mkdir()
    (info / "top_level.txt").write_text("requests\n")
    imports, provided = scan_package(str(tmp_path))
    assert imports == {"numpy", "pandas", "helpers", "PIL", "scipy"}
    assert provided == {"main", "helpers", "broken", "requests"}


USES_FASTAPI = """
import sys
ADAPTER = "fissile.runtime.contracts.fission_fastapi" in sys.modules
from fastapi import Request

def main(request: Request):
    return {"adapter_in_zygote": ADAPTER}
"""


async def test_a_package_zygote_brings_the_contract_adapter_its_library_needs(
    harness: Harness,
) -> None:
    # Imported by each instance otherwise: ~2 ms of every fission-fastapi cold start.
    harness.function("fastapi-fn", USES_FASTAPI)
    assert (await call(harness, "fastapi-fn")) == {"adapter_in_zygote": True}
    ((key, cache),) = harness.executor.imports.pools.items()
    assert key == ("python", ("fastapi",))
    assert cache.zygote is not None
    assert "fissile.runtime.contracts.fission_fastapi" in cache.zygote.imported


async def test_the_environment_zygote_has_the_light_contract_adapters(harness: Harness) -> None:
    code = (
        "import sys\n"
        "def lambda_handler(event, context):\n"
        "    return {'statusCode': 200, 'body': str(sorted(m for m in sys.modules"
        " if m.startswith('fissile.runtime.contracts.')))}\n"
    )
    harness.function("lambda-fn", code, entrypoint="lambda_handler")
    pool = harness.executor.function("lambda-fn")
    request = b"GET / HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n"
    response = await forward(harness.executor, pool, request)
    assert isinstance(response, InstanceResponse) and response.status == 200, response.body
    for adapter in ("aws_lambda", "gcf", "openfaas", "asgi", "wsgi", "native"):
        assert f"fissile.runtime.contracts.{adapter}" in response.body.decode()
