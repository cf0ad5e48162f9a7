"""The control API with a token: everything but /healthz (and /metrics when public) needs it
(the app over ASGI)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx

from fissile.controlplane import create_api
from fissile.models import PlatformInfo
from fissile.observability.exposition import Exposition, Sources
from fissile.observability.metrics import Metrics

INFO = PlatformInfo(version="t", router_url="http://127.0.0.1:1", data_dir="/nowhere")


def _client() -> httpx.AsyncClient:
    # The routes tested here touch neither resources nor logs.
    nothing: Any = None
    app = create_api(nothing, nothing, INFO, lambda: True, token="s3cret")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api")


async def test_requests_without_the_token_get_401() -> None:
    async with _client() as client:
        for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "s3cret"}):
            response = await client.get("/v1/info", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert (await client.get("/openapi.json")).status_code == 401


async def test_the_token_opens_the_api_and_healthz_is_open() -> None:
    async with _client() as client:
        assert (await client.get("/healthz")).status_code == 200
        response = await client.get("/v1/info", headers={"authorization": "Bearer s3cret"})
        assert response.status_code == 200
        assert response.json()["version"] == "t"


def _metrics_client(public: bool) -> httpx.AsyncClient:
    nothing: Any = None
    executor: Any = SimpleNamespace(metrics=Metrics(), functions={})
    app = create_api(
        nothing,
        nothing,
        INFO,
        lambda: True,
        token="s3cret",
        metrics=Exposition(Sources(executor)),
        metrics_public=public,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api")


async def test_metrics_need_the_token_unless_public() -> None:
    async with _metrics_client(public=False) as client:
        assert (await client.get("/metrics")).status_code == 401
        response = await client.get("/metrics", headers={"authorization": "Bearer s3cret"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=")
        assert "fissile_info{" in response.text
    async with _metrics_client(public=True) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/v1/info")).status_code == 401  # only /metrics is opened
        document = await client.get("/openapi.json", headers={"authorization": "Bearer s3cret"})
        responses = document.json()["paths"]["/metrics"]["get"]["responses"]
        assert "401" not in responses and "200" in responses
