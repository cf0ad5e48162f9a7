"""fissile/client.py against a mock transport: paths, payloads and error mapping."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from fissile.client import Client, ClientError

Handler = Callable[[httpx.Request], httpx.Response]


def client_with(handler: Handler) -> Client:
    client = Client("http://api.test/")
    client._http.close()
    client._http = httpx.Client(base_url=client.base_url, transport=httpx.MockTransport(handler))
    return client


def test_base_url_from_argument_environment_or_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FISSILE_API", raising=False)
    with Client() as client:
        assert client.base_url == "http://127.0.0.1:8081"
    monkeypatch.setenv("FISSILE_API", "http://elsewhere:9/")
    with Client() as client:
        assert client.base_url == "http://elsewhere:9"
    with Client("http://given:1") as client:
        assert client.base_url == "http://given:1"


def test_crud_paths_and_bodies() -> None:
    seen: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, body))
        return httpx.Response(200, json={"ok": True} if request.method != "GET" else [])

    with client_with(handler) as client:
        assert client.list("functions") == []
        client.create("functions", {"name": "f"})
        client.update("functions", "f", {"name": "f", "timeout": 3})
        client.delete("functions", "f")
        client.rebuild("p")
    assert seen == [
        ("GET", "/v1/functions", None),
        ("POST", "/v1/functions", {"name": "f"}),
        ("PUT", "/v1/functions/f", {"name": "f", "timeout": 3}),
        ("DELETE", "/v1/functions/f", None),
        ("POST", "/v1/packages/p/rebuild", None),
    ]


def test_upload_archive_sends_raw_zip() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == "application/zip"
        assert request.content == b"PK\x03\x04data"
        return httpx.Response(201, json={"sha256": "a" * 64, "size": 8, "files": 1})

    with client_with(handler) as client:
        assert client.upload_archive(b"PK\x03\x04data")["sha256"] == "a" * 64


def test_api_errors_become_client_errors() -> None:
    fields = [{"path": "poolsize", "message": "must be >= 0"}]

    def handler(request: httpx.Request) -> httpx.Response:
        error = {"code": "invalid", "message": "invalid request", "fields": fields}
        return httpx.Response(422, json={"error": error})

    with client_with(handler) as client, pytest.raises(ClientError) as info:
        client.create("environments", {"name": "e", "poolsize": -1})
    assert (info.value.message, info.value.status, info.value.code) == (
        "invalid request",
        422,
        "invalid",
    )
    assert info.value.fields == fields


def test_non_json_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="  upstream exploded  ")

    with client_with(handler) as client, pytest.raises(ClientError) as info:
        client.get("functions", "f")
    assert (info.value.message, info.value.status, info.value.code) == (
        "HTTP 502: upstream exploded",
        502,
        "",
    )


def test_empty_error_body_uses_the_reason_phrase() -> None:
    with (
        client_with(lambda request: httpx.Response(404)) as client,
        pytest.raises(ClientError, match="HTTP 404: Not Found"),
    ):
        client.get("functions", "f")


def test_timeouts_are_client_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with (
        client_with(handler) as client,
        pytest.raises(ClientError, match="did not answer in time"),
    ):
        client.info()


def test_wait_for_build_polls_until_done() -> None:
    states = iter(["pending", "building", "building", "succeeded"])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"name": "p", "status": {"state": next(states)}})

    with client_with(handler) as client:
        assert client.wait_for_build("p", timeout=10)["status"]["state"] == "succeeded"


def test_wait_for_build_gives_up() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"name": "p", "status": {"state": "building"}})

    with (
        client_with(handler) as client,
        pytest.raises(ClientError, match=r"'p' is still building after 0\.1s"),
    ):
        client.wait_for_build("p", timeout=0.1)


def test_logs_stream_and_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/functions/f/logs":
            assert request.url.params["tail"] == "5"
            assert request.url.params["follow"] == "false"
            return httpx.Response(200, content=b"line 1\nline 2\n")
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no g"}})

    with client_with(handler) as client:
        assert b"".join(client.logs("f", tail=5)) == b"line 1\nline 2\n"
        with pytest.raises(ClientError, match="no g"):
            list(client.logs("g"))
