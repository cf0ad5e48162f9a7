"""The control API (fissile/controlplane/) assembled as fissile/platform.py does it, on a real
store, builder and executor, driven in-process through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from intkit import Harness, until

import fissile
import fissile.controlplane.app as app_module
from fissile.builder import ArchiveStore, Builder, zip_path
from fissile.controlplane import Resources, create_api
from fissile.controlplane.app import environment_readiness
from fissile.controlplane.caps import Caps
from fissile.executor.zygote import Zygote
from fissile.models import PlatformInfo
from fissile.store import StorageFull
from fissile.store.sqlite import SQLiteStore

HELLO = "def main(request):\n    return 'hello'\n"


class Api:
    def __init__(self, harness: Harness, client: httpx.AsyncClient, builder: Builder) -> None:
        self.harness = harness
        self.client = client
        self.builder = builder

    async def upload(self, files: dict[str, str] | None = None) -> str:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, text in (files or {"main.py": HELLO}).items():
                archive.writestr(name, text)
        response = await self.client.post("/v1/archives", content=buffer.getvalue())
        assert response.status_code == 201, response.text
        sha: str = response.json()["sha256"]
        return sha

    async def package(self, name: str = "pkg", **fields: Any) -> dict[str, Any]:
        body = {"name": name, "env": "python", "source": await self.upload(), **fields}
        response = await self.client.post("/v1/packages", json=body)
        assert response.status_code == 201, response.text
        await self.builder.wait()
        built: dict[str, Any] = (await self.client.get(f"/v1/packages/{name}")).json()
        return built

    async def function(self, name: str = "fn", package: str = "pkg", **fields: Any) -> Any:
        body = {"name": name, "env": "python", "package": package, **fields}
        return await self.client.post("/v1/functions", json=body)

    async def trigger(self, name: str, function: str = "fn", **fields: Any) -> Any:
        body = {"name": name, "function": function, **fields}
        return await self.client.post("/v1/httptriggers", json=body)


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[Api]:
    archives = ArchiveStore(harness.root / "archives")
    builder = Builder(harness.store, archives, harness.deploy_root)
    resources = Resources(harness.store, builder, archives, harness.executor, harness.logs)
    info = PlatformInfo(
        version=fissile.__version__, router_url="http://127.0.0.1:1", data_dir=str(harness.root)
    )
    # As platform.py: ready once started; environments are reported one by one.
    readiness = environment_readiness(harness.executor)
    app = create_api(resources, harness.logs, info, lambda: True, environments=readiness)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        try:
            yield Api(harness, client, builder)
        finally:
            await builder.stop()


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    return body


# --- platform ------------------------------------------------------------------------------


async def test_healthz_and_info(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert (response.status_code, response.json()) == (
        200,
        {"status": "ok", "environments": {"python": "ready"}},
    )
    info = (await api.client.get("/v1/info")).json()
    assert info["version"] == fissile.__version__
    assert info["router_url"] == "http://127.0.0.1:1"


async def test_healthz_while_starting(api: Api) -> None:
    resources = Resources(
        api.harness.store, api.builder, api.builder.archives, api.harness.executor, api.harness.logs
    )
    info = PlatformInfo(version="x", router_url="http://r", data_dir="/d")
    readiness = environment_readiness(api.harness.executor)
    app = create_api(resources, api.harness.logs, info, lambda: False, environments=readiness)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c:
        response = await c.get("/healthz")
    assert (response.status_code, response.json()) == (
        503,
        {"status": "starting", "environments": {"python": "ready"}},
    )


async def test_healthz_reports_each_environment_while_one_starts(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One environment's zygote starting is not the platform being down: 200 ``degraded``,
    the environment named; 503 only once no environment can serve."""
    gate = asyncio.Event()
    start = Zygote.start

    async def held(zygote: Zygote, *args: Any, **kwargs: Any) -> None:
        if zygote.env == "slow":
            await gate.wait()
        await start(zygote, *args, **kwargs)

    monkeypatch.setattr(Zygote, "start", held)
    created = await api.client.post("/v1/environments", json={"name": "slow", "poolsize": 0})
    assert created.status_code == 201, created.text
    await until(lambda: "slow" in api.harness.executor.environments)
    response = await api.client.get("/healthz")
    assert (response.status_code, response.json()) == (
        200,
        {"status": "degraded", "environments": {"python": "ready", "slow": "starting"}},
    )
    python = api.harness.executor.environments["python"]
    zygote = python.zygote
    python.zygote = None  # as while its zygote restarts
    try:
        response = await api.client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["status"] == "starting"
    finally:
        python.zygote = zygote
    gate.set()
    await until(lambda: api.harness.executor.environments["slow"].zygote is not None, 30)
    response = await api.client.get("/healthz")
    assert (response.status_code, response.json()["status"]) == (200, "ok")


async def test_openapi_document(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "fissile control API"
    for path in [
        "/v1/environments",
        "/v1/environments/{name}",
        "/v1/packages/{name}/rebuild",
        "/v1/functions/{name}/logs",
        "/v1/httptriggers",
        "/v1/archives",
    ]:
        assert path in document["paths"]
    assert "FunctionSpec" in document["components"]["schemas"]


async def test_openapi_documents_the_error_envelope(api: Api) -> None:
    document = (await api.client.get("/openapi.json")).json()
    paths = document["paths"]
    envelope = {"$ref": "#/components/schemas/ErrorBody"}

    def statuses(path: str, method: str) -> dict[str, Any]:
        responses: dict[str, Any] = paths[path][method]["responses"]
        return responses

    create = statuses("/v1/functions", "post")
    assert set(create) == {"201", "404", "409", "422", "507"}
    for status in ("404", "409", "422", "507"):
        assert create[status]["content"]["application/json"]["schema"] == envelope, status
    assert {"404", "409", "507"} <= set(statuses("/v1/functions/{name}", "delete"))
    assert {"413", "422", "507"} <= set(statuses("/v1/archives", "post"))
    assert "507" not in statuses("/v1/functions", "get")  # reads work on a full disk
    assert "404" in statuses("/v1/functions/{name}", "get")
    assert {"200", "503"} <= set(statuses("/healthz", "get"))
    # What the API really sends for a validation error is the envelope, not FastAPI's default.
    assert "HTTPValidationError" not in document["components"]["schemas"]
    error_schema = document["components"]["schemas"]["ErrorDetail"]
    assert set(error_schema["properties"]) == {"code", "message", "fields"}


async def test_openapi_documents_401_behind_a_token(api: Api) -> None:
    resources = Resources(
        api.harness.store, api.builder, api.builder.archives, api.harness.executor, api.harness.logs
    )
    info = PlatformInfo(version="x", router_url="http://r", data_dir="/d")
    app = create_api(resources, api.harness.logs, info, lambda: True, token="t")
    paths = app.openapi()["paths"]
    assert "401" in paths["/v1/functions"]["post"]["responses"]
    assert "401" in paths["/v1/info"]["get"]["responses"]
    assert "401" not in paths["/healthz"]["get"]["responses"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/functions", "GET, POST"),
        ("POST", "/v1/functions/x", "DELETE, GET, PUT"),
        ("PATCH", "/v1/environments/python", "DELETE, GET, PUT"),
        ("HEAD", "/v1/functions", "GET, POST"),
        ("GET", "/v1/archives", "POST"),
    ],
)
async def test_405_allows_every_method_of_the_path(
    api: Api, method: str, path: str, allowed: str
) -> None:
    response = await api.client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    if method != "HEAD":
        assert error(response, 405) == {
            "code": "method_not_allowed",
            "message": f"{method} is not allowed on {path}",
        }


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({"name": "e", "poolsize": -1}, ["poolsize"]),
        ({"name": "Bad_Name"}, ["name"]),
        ({"name": "e", "bogus": 1}, ["bogus"]),
        ({"name": "e", "poolsize": -1, "preload": ["not-a-module"]}, ["poolsize", "preload"]),
        ({}, ["name"]),
    ],
)
async def test_invalid_bodies_name_their_fields(
    api: Api, body: dict[str, Any], paths: list[str]
) -> None:
    failure = error(await api.client.post("/v1/environments", json=body), 422)
    assert failure["code"] == "invalid"
    assert [f["path"] for f in failure["fields"]] == paths
    assert failure["message"].startswith("invalid request: " + paths[0] + ": ")


async def test_nested_field_paths(api: Api) -> None:
    await api.package()
    response = await api.function(env_vars={"1BAD": "x"}, timeout="soon")
    failure = error(response, 422)
    paths = sorted(f["path"] for f in failure["fields"])
    assert paths == ["env_vars.1BAD.[key]", "timeout"]


async def test_model_level_errors(api: Api) -> None:
    failure = error(await api.trigger("t", url="/a", prefix="/b"), 422)
    assert failure["fields"][0]["path"] == "body"
    assert "exactly one of url or prefix" in failure["message"]


async def test_malformed_json(api: Api) -> None:
    response = await api.client.post(
        "/v1/environments", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert error(response, 422)["code"] == "invalid"


@pytest.mark.parametrize("fields", [{"memory": None}, {"memory": 134217728.5}, {"timeout": None}])
async def test_wrong_json_types_for_units_are_422(api: Api, fields: dict[str, Any]) -> None:
    await api.package()
    failure = error(await api.function(**fields), 422)
    assert [f["path"] for f in failure["fields"]] == list(fields)


async def test_body_name_must_match_url(api: Api) -> None:
    response = await api.client.put("/v1/environments/python", json={"name": "other"})
    failure = error(response, 422)
    assert failure["message"] == "the body names 'other' but the URL names 'python'"
    assert failure["fields"] == [{"path": "name", "message": "must match the name in the URL"}]


# --- not found and conflicts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("GET", "/v1/functions/nope", "function 'nope' not found"),
        ("DELETE", "/v1/packages/nope", "package 'nope' not found"),
        ("GET", "/v1/httptriggers/nope", "HTTP trigger 'nope' not found"),
        ("POST", "/v1/packages/nope/rebuild", "package 'nope' not found"),
        ("GET", "/v1/functions/nope/logs", "function 'nope' not found"),
    ],
)
async def test_unknown_names_are_404(api: Api, method: str, path: str, message: str) -> None:
    failure = error(await api.client.request(method, path), 404)
    assert failure == {"code": "not_found", "message": message}


async def test_update_of_unknown_name_is_404(api: Api) -> None:
    response = await api.client.put("/v1/environments/ghost", json={"name": "ghost"})
    assert error(response, 404)["message"] == "environment 'ghost' not found"


async def test_references_must_exist(api: Api) -> None:
    sha = await api.upload()
    body = {"name": "p", "env": "ghost", "source": sha}
    failure = error(await api.client.post("/v1/packages", json=body), 404)
    assert failure["message"] == "environment 'ghost' not found (field env)"
    assert failure["fields"] == [{"path": "env", "message": "environment 'ghost' not found"}]
    failure = error(await api.function(package="ghost"), 404)
    assert failure["fields"][0]["path"] == "package"
    failure = error(await api.trigger("t", function="ghost", url="/x"), 404)
    assert failure["fields"][0]["path"] == "function"


async def test_package_source_must_be_uploaded(api: Api) -> None:
    body = {"name": "p", "env": "python", "source": "f" * 64}
    failure = error(await api.client.post("/v1/packages", json=body), 422)
    assert failure["message"] == "source archive ffffffffffff has not been uploaded"
    assert failure["fields"][0]["path"] == "source"


async def test_duplicate_create_is_409(api: Api) -> None:
    await api.package()
    await api.package("pkg2")
    assert (await api.function()).status_code == 201
    failure = error(await api.function(package="pkg2"), 409)
    assert failure == {"code": "conflict", "message": "function 'fn' already exists"}
    # The first function is untouched.
    assert (await api.client.get("/v1/functions/fn")).json()["package"] == "pkg"


async def test_environment_in_use_cannot_be_deleted(api: Api) -> None:
    await api.package()
    failure = error(await api.client.delete("/v1/environments/python"), 409)
    assert (
        failure["message"] == "environment 'python' is in use by package 'pkg'; delete those first"
    )
    assert (await api.function()).status_code == 201
    failure = error(await api.client.delete("/v1/environments/python"), 409)
    assert "package 'pkg', function 'fn'" in failure["message"]
    assert (await api.client.get("/v1/environments/python")).status_code == 200


async def test_package_in_use_cannot_be_deleted(api: Api) -> None:
    await api.package()
    await api.function()
    failure = error(await api.client.delete("/v1/packages/pkg"), 409)
    assert failure["message"] == "package 'pkg' is in use by function 'fn'; delete those first"


async def test_function_in_use_by_a_trigger_cannot_be_deleted(api: Api) -> None:
    await api.package()
    await api.function()
    assert (await api.trigger("route", url="/hello")).status_code == 201
    failure = error(await api.client.delete("/v1/functions/fn"), 409)
    assert (
        failure["message"] == "function 'fn' is in use by HTTP trigger 'route'; delete those first"
    )
    assert (await api.client.delete("/v1/httptriggers/route")).status_code == 200
    deleted = await api.client.delete("/v1/functions/fn")
    assert deleted.status_code == 200
    assert deleted.json()["name"] == "fn"


async def test_conflicting_routes_are_409(api: Api) -> None:
    await api.package()
    await api.function()
    created = await api.trigger("first", url="/items/{id}", methods=["GET", "POST"])
    assert created.status_code == 201
    failure = error(await api.trigger("second", url="/items/{key}/", methods=["post"]), 409)
    assert failure["message"] == "HTTP trigger 'first' already routes /items/{id} (GET, POST)"
    # Another method on the same path, or the same trigger updated, is fine.
    assert (await api.trigger("third", url="/items/{key}", methods=["DELETE"])).status_code == 201
    update = {"name": "first", "function": "fn", "url": "/items/{id}", "methods": ["GET"]}
    assert (await api.client.put("/v1/httptriggers/first", json=update)).status_code == 200


# --- archives and packages -----------------------------------------------------------------


async def test_archive_upload(api: Api) -> None:
    data = zip_path(Path(__file__))
    response = await api.client.post("/v1/archives", content=data)
    assert response.status_code == 201
    assert response.json() == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "files": 1,
    }
    assert api.builder.archives.exists(response.json()["sha256"])


async def test_garbage_archive_is_422(api: Api) -> None:
    failure = error(await api.client.post("/v1/archives", content=b"not a zip" * 50), 422)
    assert failure["code"] == "bad_archive"
    assert failure["message"].startswith("not a valid zip archive")
    assert list(api.builder.archives.root.iterdir()) == []


async def test_zip_slip_archive_is_422(api: Api) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../evil.py", "x")
    failure = error(await api.client.post("/v1/archives", content=buffer.getvalue()), 422)
    assert failure == {
        "code": "bad_archive",
        "message": "../../evil.py: path escapes the archive (zip slip)",
    }


async def test_too_large_archive_is_413(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "MAX_ARCHIVE_BYTES", 100)
    failure = error(await api.client.post("/v1/archives", content=b"x" * 101), 413)
    assert failure["code"] == "too_large"


async def test_package_is_built(api: Api) -> None:
    sha = await api.upload()
    body = {"name": "pkg", "env": "python", "source": sha}
    created = await api.client.post("/v1/packages", json=body)
    assert created.status_code == 201
    assert created.json()["status"]["state"] == "pending"
    assert created.json()["generation"] == 1
    await api.builder.wait()
    built = (await api.client.get("/v1/packages/pkg")).json()
    assert built["status"]["state"] == "succeeded"
    assert (api.harness.deploy_root / built["status"]["deploy"] / "main.py").read_text() == HELLO
    listed = (await api.client.get("/v1/packages")).json()
    assert [p["name"] for p in listed] == ["pkg"]


async def test_function_on_a_failed_package_is_409_with_the_log(api: Api) -> None:
    package = await api.package(buildcmd="echo kaputt-dependency; exit 3")
    assert package["status"]["state"] == "failed"
    failure = error(await api.function(), 409)
    assert failure["code"] == "conflict"
    assert failure["message"].startswith("package 'pkg' failed to build:\n")
    assert "kaputt-dependency" in failure["message"]
    assert "sh exited with status 3" in failure["message"]


async def test_rebuild(api: Api) -> None:
    first = await api.package()
    response = await api.client.post("/v1/packages/pkg/rebuild")
    assert response.status_code == 200
    assert response.json()["status"] == {
        **response.json()["status"],
        "state": "pending",
        "rebuild": 1,
    }
    again = error(await api.client.post("/v1/packages/pkg/rebuild"), 409)
    assert again["message"] == "package 'pkg' is already pending"
    await api.builder.wait()
    rebuilt = (await api.client.get("/v1/packages/pkg")).json()
    assert rebuilt["status"]["state"] == "succeeded"
    assert rebuilt["status"]["deploy"] != first["status"]["deploy"]


async def test_a_rebuild_replaces_a_build_whose_node_is_gone(harness: Harness) -> None:
    """Cluster mode: a package left building by a node that stopped or died is rebuilt through
    any node's API (which names itself); one a live node builds is still refused."""
    from fissile.controlplane.errors import ApiError

    archives = ArchiveStore(harness.root / "archives")
    builder = Builder(harness.store, archives, harness.deploy_root)
    resources = Resources(harness.store, builder, archives, harness.executor, harness.logs)
    resources.node = builder.node = "a"
    resources.alive = {"a", "b"}.__contains__
    for name, node in (("by-b", "b"), ("by-gone", "gone")):
        status = {"state": "building", "rebuild": 2, "node": node}
        harness.store.create(
            "packages", name, {"name": name, "env": "python", "source": "0" * 64, "status": status}
        )
    try:
        with pytest.raises(ApiError) as refused:
            resources.rebuild("by-b")
        assert refused.value.status == 409
        rebuilt = resources.rebuild("by-gone")
        assert rebuilt["status"]["state"] == "pending"
        assert (rebuilt["status"]["rebuild"], rebuilt["status"]["node"]) == (3, "a")
    finally:
        await builder.stop()


async def test_package_update_rebuilds_only_when_the_build_changes(api: Api) -> None:
    built = await api.package()
    same = {k: built[k] for k in ("name", "env", "source", "buildcmd", "owner")}
    unchanged = (await api.client.put("/v1/packages/pkg", json=same)).json()
    assert unchanged["status"] == built["status"]
    changed = {**same, "buildcmd": 'cp -r "$SRC_PKG" "$DEPLOY_PKG"'}
    response = (await api.client.put("/v1/packages/pkg", json=changed)).json()
    assert response["status"]["state"] == "pending"
    await api.builder.wait()
    after = (await api.client.get("/v1/packages/pkg")).json()
    assert after["status"]["state"] == "succeeded"
    assert after["status"]["deploy"] != built["status"]["deploy"]


# --- functions -----------------------------------------------------------------------------


async def test_function_lifecycle_reaches_the_executor(api: Api) -> None:
    await api.package()
    created = await api.function(timeout="30s", memory="128Mi", min_scale=1)
    assert created.status_code == 201
    body = created.json()
    assert (body["timeout"], body["memory"], body["generation"]) == (30.0, 128 * 1024**2, 1)
    assert body["status"]["restarts"] == 0
    pool = api.harness.executor.function("fn")
    await until(lambda: pool.instances)

    async def instances() -> int:
        count: int = (await api.client.get("/v1/functions/fn")).json()["status"]["instances"]
        return count

    assert await instances() == 1
    updated = await api.client.put(
        "/v1/functions/fn",
        json={"name": "fn", "env": "python", "package": "pkg", "timeout": 5},
    )
    assert updated.status_code == 200
    assert (updated.json()["timeout"], updated.json()["generation"]) == (5.0, 2)
    assert api.harness.executor.function("fn").spec.timeout == 5.0
    assert (await api.client.delete("/v1/functions/fn")).status_code == 200
    assert "fn" not in api.harness.executor.functions


async def test_deleting_a_function_deletes_the_package_it_owns(api: Api) -> None:
    await api.package("owned", owner="fn")
    await api.package("shared")
    await api.function(package="owned")
    await api.function("other", package="shared")
    assert (await api.client.delete("/v1/functions/fn")).status_code == 200
    assert (await api.client.get("/v1/packages/owned")).status_code == 404
    assert (await api.client.delete("/v1/functions/other")).status_code == 200
    assert (await api.client.get("/v1/packages/shared")).status_code == 200


async def test_function_logs(api: Api) -> None:
    await api.package()
    await api.function()
    for n in range(5):
        api.harness.logs.platform("fn", f"note {n}")
    response = await api.client.get("/v1/functions/fn/logs", params={"tail": 2})
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "fissile INFO [-] note 3",
        "fissile INFO [-] note 4",
    ]
    bad = error(await api.client.get("/v1/functions/fn/logs", params={"tail": -1}), 422)
    assert bad["fields"][0]["path"].endswith("tail")


async def test_function_logs_filtered_and_as_json(api: Api) -> None:
    await api.package()
    await api.function()
    book = api.harness.logs
    book.platform("fn", "ready", "INFO")
    await asyncio.sleep(0.01)  # a later millisecond: "died" is the first line since its time
    book.platform("fn", "died", "ERROR", "inv-1")
    since = (await api.client.get("/v1/functions/fn/logs")).text.splitlines()[-1].split()[0]
    book.platform("fn", "slow", "WARNING", "inv-2")
    get = api.client.get

    async def messages(**params: Any) -> list[str]:
        response = await get("/v1/functions/fn/logs", params={**params, "format": "json"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line)["message"] for line in response.text.splitlines()]

    assert await messages() == ["ready", "died", "slow"]
    assert await messages(level="warning") == ["died", "slow"]
    assert await messages(level="error") == ["died"]
    assert await messages(since=since) == ["died", "slow"]
    assert await messages(since="1h") == ["ready", "died", "slow"]
    assert await messages(level="warn", tail=1) == ["slow"]
    assert await messages(instance="fissile") == ["ready", "died", "slow"]
    assert await messages(instance="i1") == []
    (entry,) = [
        json.loads(line)
        for line in (
            await get("/v1/functions/fn/logs", params={"format": "json", "tail": 1})
        ).text.splitlines()
    ]
    assert entry["source"] == "platform" and entry["instance"] is None
    assert (entry["level"], entry["invocation_id"]) == ("WARNING", "inv-2")
    text = (await get("/v1/functions/fn/logs", params={"level": "error"})).text
    assert text.endswith(" fissile ERROR [inv-1] died\n") and text.count("\n") == 1
    for params in ({"level": "loud"}, {"since": "yesterday"}):
        bad = error(await get("/v1/functions/fn/logs", params=params), 422)
        assert bad["code"] == "invalid"


async def test_following_logs_with_a_filter(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = asyncio.Event()
    open_log = app_module._open_log

    def watched(path: Path) -> Any:
        opened.set()
        return open_log(path)

    monkeypatch.setattr(app_module, "_open_log", watched)
    await api.package()
    await api.function()
    api.harness.logs.platform("fn", "before", "ERROR")
    follow = asyncio.create_task(
        api.client.get(
            "/v1/functions/fn/logs",
            params={"follow": "true", "level": "error", "tail": 0, "format": "json"},
            timeout=10,
        )
    )
    await asyncio.wait_for(opened.wait(), 30)  # the stream holds the log open
    api.harness.logs.platform("fn", "quiet", "INFO")
    api.harness.logs.platform("fn", "loud", "ERROR")
    # Deleting ends the stream once it has read what was written before.
    assert (await api.client.delete("/v1/functions/fn")).status_code == 200
    response = await asyncio.wait_for(follow, 5)
    assert [json.loads(line)["message"] for line in response.text.splitlines()] == ["loud"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/nothing"), ("PATCH", "/v1/functions")])
async def test_every_error_uses_the_error_envelope(api: Api, method: str, path: str) -> None:
    response = await api.client.request(method, path)
    assert response.status_code in (404, 405)
    assert set(response.json()["error"]) >= {"code", "message"}


async def test_following_logs_sees_new_lines_and_ends_with_the_function(api: Api) -> None:
    await api.package()
    await api.function()
    api.harness.logs.platform("fn", "before")
    follow = asyncio.create_task(
        api.client.get("/v1/functions/fn/logs", params={"follow": "true"}, timeout=10)
    )
    await asyncio.sleep(0.3)
    api.harness.logs.platform("fn", "while following")
    await asyncio.sleep(0.6)  # the stream looks for new lines every 0.25 s
    assert not follow.done()
    assert (await api.client.delete("/v1/functions/fn")).status_code == 200
    response = await asyncio.wait_for(follow, 5)
    assert response.status_code == 200
    text = response.text
    assert "fissile INFO [-] before" in text
    assert "fissile INFO [-] while following" in text


async def test_functions_above_the_operators_caps_are_422_naming_the_cap(api: Api) -> None:
    caps = Caps(memory=2**30, cpu=1, scale=5, timeout=60)
    resources = Resources(
        api.harness.store,
        api.builder,
        api.builder.archives,
        api.harness.executor,
        api.harness.logs,
        caps=caps,
    )
    info = PlatformInfo(version="x", router_url="http://r", data_dir="/d")
    app = create_api(resources, api.harness.logs, info, api.harness.executor.ready)
    await api.package()
    body = {"name": "capped", "env": "python", "package": "pkg"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c:
        refused = error(await c.post("/v1/functions", json={**body, "memory": "512Gi"}), 422)
        assert refused["code"] == "over_cap"
        assert "512Gi is above the cap of 1Gi (--max-memory)" in refused["message"]
        assert refused["fields"][0]["path"] == "memory"
        assert (await c.get("/v1/functions/capped")).status_code == 404  # nothing stored
        created = await c.post("/v1/functions", json={**body, "max_scale": 5})
        assert created.status_code == 201, created.text
        update = {**body, "max_scale": 1000, "timeout": "2h"}
        refused = error(await c.put("/v1/functions/capped", json=update), 422)
        assert "--max-scale-limit" in refused["message"] and "--max-timeout" in refused["message"]
        assert (await c.get("/v1/functions/capped")).json()["max_scale"] == 5


async def test_following_logs_loses_no_line_to_a_rotation_or_the_delete(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However late the stream's loop wakes (a loaded host), it reads through the file it
    has open: lines before a rotation and the last ones before the delete arrive."""
    monkeypatch.setattr("fissile.observability.logs.MAX_LOG_BYTES", 300)
    opened = asyncio.Event()
    open_log = app_module._open_log

    def watched(path: Path) -> Any:
        opened.set()
        return open_log(path)

    monkeypatch.setattr(app_module, "_open_log", watched)
    await api.package()
    await api.function()
    api.harness.logs.platform("fn", "first")
    follow = asyncio.create_task(
        api.client.get("/v1/functions/fn/logs", params={"follow": "true"}, timeout=30)
    )
    await asyncio.wait_for(opened.wait(), 30)  # the stream holds the log open
    for n in range(12):  # ~60 bytes each: rotated about every five lines
        api.harness.logs.platform("fn", f"line {n:02}")
        if n % 4 == 3:
            await asyncio.sleep(0.3)  # let the stream see some rotations as they happen
    api.harness.logs.platform("fn", "last words")
    assert (await api.client.delete("/v1/functions/fn")).status_code == 200  # at once
    text = (await asyncio.wait_for(follow, 20)).text
    said = [line.split(" ", 4)[4] for line in text.splitlines()]
    assert said == ["first", *(f"line {n:02}" for n in range(12)), "last words"], text


# --- a full disk -----------------------------------------------------------------------------


async def test_a_full_store_answers_507_and_still_reads_and_deletes(api: Api) -> None:
    created = await api.client.post("/v1/environments", json={"name": "spare"})
    assert created.status_code == 201, created.text
    store = api.harness.store
    assert isinstance(store, SQLiteStore)
    # SQLite's own SQLITE_FULL: the database may not grow by a page.
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    try:
        labels = {f"note-{i}": "x" * 200 for i in range(40)}  # more than a page
        big = {"name": "big", "poolsize": 0, "labels": labels}
        failure = error(await api.client.post("/v1/environments", json=big), 507)
        assert failure["code"] == "storage_full"
        assert str(api.harness.root) in failure["message"]
        assert (await api.client.get("/v1/environments/spare")).status_code == 200
        assert (await api.client.delete("/v1/environments/spare")).status_code == 200
    finally:
        store._db.execute("PRAGMA max_page_count = 1073741823")
    assert (await api.client.post("/v1/environments", json=big)).status_code == 201
    environments = api.harness.executor.environments
    await until(lambda: "big" in environments and environments["big"].zygote is not None, 30)


async def test_an_unmapped_enospc_is_507_not_500(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Resources, "create", full)
    failure = error(await api.client.post("/v1/environments", json={"name": "x"}), 507)
    assert failure == {
        "code": "storage_full",
        "message": f"no space left on the disk of the data dir {api.harness.root}; free space"
        " there (deleting resources helps) and try again",
    }

    def broken(*args: Any) -> Any:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Resources, "create", broken)
    response = await api.client.post("/v1/environments", json={"name": "x"})
    assert response.status_code == 500  # other faults stay what they are


async def test_deleting_a_function_on_a_full_disk_frees_its_log_first(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await api.package("owned", owner="fn")
    assert (await api.function("fn", package="owned")).status_code == 201
    api.harness.logs.platform("fn", "a line")
    log = api.harness.logs.function_log("fn")
    assert log.exists()
    store = api.harness.store
    delete = store.delete

    def full_for_packages(kind: str, name: str) -> Any:
        if kind == "packages":
            raise StorageFull(api.harness.root)
        return delete(kind, name)

    monkeypatch.setattr(store, "delete", full_for_packages)
    response = await api.client.delete("/v1/functions/fn")
    assert response.status_code == 200, response.text  # the function is gone, as asked
    assert not log.exists()
    assert (await api.client.get("/v1/functions/fn")).status_code == 404
    monkeypatch.setattr(store, "delete", delete)
    assert (await api.client.delete("/v1/packages/owned")).status_code == 200


async def test_deleting_a_building_package_cancels_its_build(api: Api) -> None:
    source = await api.upload()
    body = {"name": "hanging", "env": "python", "source": source, "buildcmd": "sleep 600"}
    response = await api.client.post("/v1/packages", json=body)
    assert response.status_code == 201, response.text

    async def building() -> bool:
        package = (await api.client.get("/v1/packages/hanging")).json()
        return bool(package["status"]["state"] == "building")

    deadline = asyncio.get_running_loop().time() + 30
    while not await building():  # the build has read its package: deleting must stop it
        assert asyncio.get_running_loop().time() < deadline, "the build never started"
        await asyncio.sleep(0.02)
    deleted = await api.client.delete("/v1/packages/hanging")
    assert deleted.status_code == 200, deleted.text
    # Without the cancellation this would wait for the build's 10-minute timeout.
    await asyncio.wait_for(api.builder.wait(), 30.0)
    assert list(api.builder.work_root.iterdir()) == []
