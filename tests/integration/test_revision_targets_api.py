"""Routes split to revisions (``a@3``) through the control API, in-process, on a real store,
builder and executor (fissile/controlplane/revision_functions.py)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from intkit import Harness

import fissile
from fissile.builder import ArchiveStore, Builder
from fissile.controlplane import Resources, create_api
from fissile.controlplane.revisions import Revisions
from fissile.models import PlatformInfo

GOOD = "def main(request):\n    return 'good'\n"


class Api:
    def __init__(self, harness: Harness, client: httpx.AsyncClient, builder: Builder) -> None:
        self.harness = harness
        self.client = client
        self.builder = builder

    async def function(self, name: str) -> dict[str, Any]:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("main.py", GOOD)
        response = await self.client.post("/v1/archives", content=buffer.getvalue())
        assert response.status_code == 201, response.text
        source = response.json()["sha256"]
        body = {"name": name, "env": "python", "source": source, "owner": name}
        response = await self.client.post("/v1/packages", json=body)
        assert response.status_code == 201, response.text
        await self.builder.wait()
        body = {"name": name, "env": "python", "package": name}
        response = await self.client.post("/v1/functions", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def set_env(self, name: str, value: str) -> None:
        current = (await self.client.get(f"/v1/functions/{name}")).json()
        body = {k: current[k] for k in ("name", "env", "package", "entrypoint")}
        response = await self.client.put(
            f"/v1/functions/{name}", json={**body, "env_vars": {"V": value}}
        )
        assert response.status_code == 200, response.text

    async def route(self, weights: dict[str, int], create: bool = True) -> httpx.Response:
        body = {
            "name": "split",
            "url": "/split",
            "function": next(t for t in weights if "@" not in t),
            "function_weights": weights,
        }
        if create:
            return await self.client.post("/v1/httptriggers", json=body)
        return await self.client.put("/v1/httptriggers/split", json=body)

    async def names(self) -> list[str]:
        return [f["name"] for f in (await self.client.get("/v1/functions")).json()]


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[Api]:
    archives = ArchiveStore(harness.root / "archives")
    builder = Builder(harness.store, archives, harness.deploy_root)
    revisions = Revisions(
        harness.store, harness.executor, harness.logs, harness.deploy_root, keep=2
    )
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


async def test_a_revision_target_gets_a_revision_function_until_no_route_names_it(
    api: Api,
) -> None:
    await api.function("ta")
    await api.set_env("ta", "2")
    response = await api.route({"ta": 50, "ta@1": 50})
    assert response.status_code == 201, response.text
    made = (await api.client.get("/v1/functions/ta-r1")).json()
    assert made["env_vars"] == {}  # revision 1's spec, not the current one's
    assert made["labels"] == {"fissile.io/revision-of": "ta", "fissile.io/revision": "1"}
    revision = (await api.client.get("/v1/functions/ta-r1/revisions")).json()
    assert revision[0]["changes"] == ["revision 1 of ta"]
    first = (await api.client.get("/v1/functions/ta/revisions")).json()[0]
    assert made["deploy"] == first["deploy"]
    package = (await api.client.get("/v1/packages/ta-r1")).json()
    assert package["owner"] == "ta-r1"
    assert package["status"]["deploy"] == first["deploy"]
    assert package["status"]["log"].startswith("restored for revision 1 of ta")

    # Pruning ta's revisions does not take the build the route serves.
    for value in ("3", "4", "5"):
        await api.set_env("ta", value)
    listed = (await api.client.get("/v1/functions/ta/revisions")).json()
    assert listed[0]["pruned"]
    assert (api.harness.deploy_root / first["deploy"]).is_dir()

    # Users cannot change or roll it back.
    body = {k: made[k] for k in ("name", "env", "package", "entrypoint")}
    response = await api.client.put("/v1/functions/ta-r1", json=body)
    assert response.status_code == 409, response.text
    assert "serves revision 1 of 'ta'" in response.json()["error"]["message"]
    response = await api.client.post("/v1/functions/ta-r1/rollback", json={})
    assert response.status_code == 409, response.text
    assert "cannot be changed" in response.json()["error"]["message"]

    # Nothing else may name it: it goes with the route's target.
    body = {"name": "direct", "url": "/direct", "function": "ta-r1"}
    response = await api.client.post("/v1/httptriggers", json=body)
    assert response.status_code == 409, response.text
    assert "ta@1" in response.json()["error"]["message"]
    body = {"name": "tick", "function": "ta-r1", "cron": "@every 1h"}
    response = await api.client.post("/v1/timetriggers", json=body)
    assert response.status_code == 409, response.text

    response = await api.client.delete("/v1/httptriggers/split")
    assert response.status_code == 200, response.text
    assert await api.names() == ["ta"]
    assert (await api.client.get("/v1/packages/ta-r1")).status_code == 404


async def test_a_pruned_revision_is_refused_as_a_target(api: Api) -> None:
    await api.function("tb")
    for value in ("2", "3"):
        await api.set_env("tb", value)
    response = await api.route({"tb": 50, "tb@1": 50})
    assert response.status_code == 409, response.text
    assert "revision 1 of 'tb' was pruned" in response.json()["error"]["message"]
    response = await api.route({"tb": 50, "tb@7": 50})
    assert response.status_code == 404, response.text
    response = await api.route({"tb": 50, "nothing@1": 50})
    assert response.status_code == 404, response.text
    assert await api.names() == ["tb"]


async def test_a_users_function_of_the_same_name_blocks_the_target(api: Api) -> None:
    await api.function("tc")
    await api.set_env("tc", "2")
    await api.function("tc-r1")
    response = await api.route({"tc": 50, "tc@1": 50})
    assert response.status_code == 409, response.text
    assert "'tc-r1'" in response.json()["error"]["message"]
    # The user's function is left alone.
    assert sorted(await api.names()) == ["tc", "tc-r1"]


async def test_a_failed_route_change_leaves_no_revision_function(api: Api) -> None:
    await api.function("td")
    await api.set_env("td", "2")
    assert (await api.route({"td": 50, "td@1": 50})).status_code == 201
    # An update that fails (a missing function) keeps the route and its revision function.
    response = await api.route({"td": 50, "td@1": 50, "missing": 1}, create=False)
    assert response.status_code == 404, response.text
    assert sorted(await api.names()) == ["td", "td-r1"]
    # A split to another revision: the old revision function goes, the new one comes.
    response = await api.route({"td": 50, "td@2": 50}, create=False)
    assert response.status_code == 200, response.text
    assert sorted(await api.names()) == ["td", "td-r2"]
    response = await api.client.delete("/v1/functions/td")
    assert response.status_code == 409, response.text
