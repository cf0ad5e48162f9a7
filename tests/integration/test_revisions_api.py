"""Revisions, pre-flight and rollback through the control API, in-process, on a real store,
builder and executor (fissile/controlplane/revisions.py)."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from intkit import Harness, until

import fissile
from fissile.builder import ArchiveStore, Builder
from fissile.controlplane import Resources, create_api
from fissile.controlplane.revisions import Revisions
from fissile.models import PlatformInfo

GOOD = "def main(request):\n    return 'good'\n"
BROKEN = "import missing_in_preflight\n\ndef main(request):\n    return 'never'\n"


class Api:
    def __init__(self, harness: Harness, client: httpx.AsyncClient, builder: Builder) -> None:
        self.harness = harness
        self.client = client
        self.builder = builder

    async def upload(self, code: str) -> str:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("main.py", code)
        response = await self.client.post("/v1/archives", content=buffer.getvalue())
        assert response.status_code == 201, response.text
        sha: str = response.json()["sha256"]
        return sha

    async def package(self, name: str, code: str, owner: str | None = None) -> dict[str, Any]:
        body = {"name": name, "env": "python", "source": await self.upload(code), "owner": owner}
        response = await self.client.post("/v1/packages", json=body)
        assert response.status_code == 201, response.text
        await self.builder.wait()
        built: dict[str, Any] = (await self.client.get(f"/v1/packages/{name}")).json()
        return built

    async def function(self, name: str, package: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "env": "python", "package": package, **fields}
        response = await self.client.post("/v1/functions", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def update(self, name: str, **fields: Any) -> httpx.Response:
        current = (await self.client.get(f"/v1/functions/{name}")).json()
        body = {k: current[k] for k in ("name", "env", "package", "entrypoint", "env_vars")}
        return await self.client.put(f"/v1/functions/{name}", json={**body, **fields})

    async def revisions(self, name: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/functions/{name}/revisions")
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[Api]:
    archives = ArchiveStore(harness.root / "archives")
    builder = Builder(harness.store, archives, harness.deploy_root)
    revisions = Revisions(harness.store, harness.executor, harness.logs, harness.deploy_root)
    revisions.start()
    resources = Resources(
        harness.store, builder, archives, harness.executor, harness.logs, revisions=revisions
    )
    info = PlatformInfo(
        version=fissile.__version__, router_url="http://127.0.0.1:1", data_dir=str(harness.root)
    )
    app = create_api(resources, harness.logs, info, lambda: True)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        try:
            yield Api(harness, client, builder)
        finally:
            await builder.stop()


async def test_a_change_that_does_not_load_leaves_the_pool_alone(api: Api) -> None:
    await api.package("p1", GOOD, owner="f1")
    created = await api.function("f1", "p1")
    assert created["revision"] == 1
    pool = api.harness.executor.functions["f1"]
    assert pool.deploy == created["deploy"] is not None
    generation = pool.generation

    response = await api.update("f1", entrypoint="nowhere.main")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "load_failed"
    assert "nowhere" in error["message"]
    assert pool.generation == generation
    assert (pool.restarts, pool.failures) == (0, 0)
    assert [r["number"] for r in await api.revisions("f1")] == [1]
    # Its instance is stopped, not left behind.
    await until(lambda: not any(i.function == "f1" for i in api.harness.executor.instances()))

    response = await api.update("f1", env_vars={"A": "1"})
    assert response.status_code == 200, response.text
    assert response.json()["revision"] == 2
    assert pool.generation == generation + 1
    listed = await api.revisions("f1")
    assert listed[1]["changes"] == ["env-var A"]
    assert listed[1]["spec"]["env_vars"] == {"A": "1"}


async def test_a_new_build_that_does_not_load_is_refused(api: Api) -> None:
    first = await api.package("shared", GOOD)
    await api.function("f2", "shared")
    pool = api.harness.executor.functions["f2"]
    current = (await api.client.get("/v1/packages/shared")).json()
    body = {k: current[k] for k in ("name", "env", "owner", "labels")}
    body["source"] = await api.upload(BROKEN)
    response = await api.client.put("/v1/packages/shared", json=body)
    assert response.status_code == 200, response.text
    await api.builder.wait()

    async def function() -> dict[str, Any]:
        found: dict[str, Any] = (await api.client.get("/v1/functions/f2")).json()
        return found

    # The pre-flight runs in the background once the build is in.
    await until(lambda: api.harness.executor.functions["f2"] is pool)
    for _ in range(1000):
        state = (await function()).get("preflight")
        if state and state["state"] == "refused":
            break
        await asyncio.sleep(0.02)
    state = (await function())["preflight"]
    assert state["state"] == "refused"
    assert "missing_in_preflight" in state["error"]
    assert pool.deploy == first["status"]["deploy"]
    assert (await function())["revision"] == 1


async def test_rollback_makes_a_deleted_package_again_without_a_build(api: Api) -> None:
    one = await api.package("own-1", GOOD, owner="f3")
    await api.function("f3", "own-1")
    await api.package("own-2", GOOD.replace("good", "two"), owner="f3")
    response = await api.update("f3", package="own-2")
    assert response.status_code == 200, response.text
    # As `fn update --code` does: the function's old package goes.
    assert (await api.client.delete("/v1/packages/own-1")).status_code == 200

    before = dict(api.builder.outcomes.counts)
    response = await api.client.post("/v1/functions/f3/rollback", json={})
    assert response.status_code == 200, response.text
    rolled = response.json()
    assert (rolled["revision"], rolled["package"]) == (3, "own-1")
    assert rolled["deploy"] == one["status"]["deploy"]
    restored = (await api.client.get("/v1/packages/own-1")).json()
    assert restored["status"]["state"] == "succeeded"
    assert restored["status"]["deploy"] == one["status"]["deploy"]
    assert restored["owner"] == "f3"
    assert dict(api.builder.outcomes.counts) == before  # nothing built, nor reused
    assert api.harness.executor.functions["f3"].deploy == one["status"]["deploy"]
    listed = await api.revisions("f3")
    assert [(r["number"], r["changes"], r["rollback_to"]) for r in listed] == [
        (1, ["created"], None),
        (2, ["code"], None),
        (3, ["rollback to 1"], 1),
    ]


async def test_rollback_errors(api: Api) -> None:
    await api.package("p4", GOOD)
    await api.function("f4", "p4")
    response = await api.client.post("/v1/functions/f4/rollback", json={})
    assert response.status_code == 404, response.text  # no revision 0
    response = await api.client.post("/v1/functions/f4/rollback", json={"to": 1})
    assert response.status_code == 409, response.text
    assert "is the one" in response.json()["error"]["message"]
    response = await api.client.post("/v1/functions/nope/rollback", json={})
    assert response.status_code == 404, response.text
    response = await api.client.get("/v1/functions/nope/revisions")
    assert response.status_code == 404, response.text


async def test_functions_stored_before_revisions_get_their_first(harness: Harness) -> None:
    harness.function("legacy", GOOD)
    revisions = Revisions(harness.store, harness.executor, harness.logs, harness.deploy_root)
    revisions.start()
    [first] = harness.store.revisions("legacy")
    assert first.number == 1
    assert first.data["changes"] == ["created (before revisions were recorded)"]
    assert first.deploy == harness.executor.package_deploy("legacy-pkg") is not None
    # A second start adds nothing.
    Revisions(harness.store, harness.executor, harness.logs, harness.deploy_root).start()
    assert len(harness.store.revisions("legacy")) == 1
