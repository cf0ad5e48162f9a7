"""A typed client of the control API; the CLI and the tests use it."""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_API = "http://127.0.0.1:8081"


def find_token() -> str | None:
    """``$FISSILE_TOKEN``, else the file ``$FISSILE_TOKEN_FILE`` names (as ``fissile up
    --token-file`` does), else the token file in the data dir (``$FISSILE_DATA_DIR`` or the
    default), when this user can read it."""
    token = os.environ.get("FISSILE_TOKEN")
    if token:
        return token.strip()
    from fissile.config import default_data_dir

    named = os.environ.get("FISSILE_TOKEN_FILE")
    try:
        path = Path(named) if named else default_data_dir() / "api-token"
        return path.read_text().strip() or None
    except OSError:
        return None


class ClientError(Exception):
    """The API refused a request, or could not be reached."""

    def __init__(self, message: str, status: int = 0, code: str = "", fields: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.fields = fields or []


class Client:
    def __init__(
        self, base_url: str | None = None, timeout: float = 60.0, token: str | None = None
    ) -> None:
        self.base_url = (base_url or os.environ.get("FISSILE_API") or DEFAULT_API).rstrip("/")
        token = token or find_token()
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ClientError(
                f"cannot reach the fissile API at {self.base_url}: is `fissile up` running?"
            ) from None
        except httpx.TimeoutException:
            raise ClientError(
                f"the fissile API at {self.base_url} did not answer in time"
            ) from None
        except httpx.TransportError as exc:
            raise _broken(self.base_url, exc) from None
        if response.status_code == 401:
            raise ClientError(
                "the fissile API refused the token: set FISSILE_TOKEN, or FISSILE_DATA_DIR to the"
                " platform's data dir",
                401,
                "unauthorized",
            )
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    # -- resources ----------------------------------------------------------------------

    def list(self, kind: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", f"/v1/{kind}")
        return result

    def get(self, kind: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/v1/{kind}/{name}")
        return result

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", f"/v1/{kind}", json=body)
        return result

    def update(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._json("PUT", f"/v1/{kind}/{name}", json=body)
        return result

    def delete(self, kind: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("DELETE", f"/v1/{kind}/{name}")
        return result

    def secret_digest(self, body: dict[str, Any]) -> str:
        """The digest a secret with ``body``'s values would have (nothing is stored)."""
        result: dict[str, str] = self._json("POST", "/v1/secret-digests", json=body)
        return result["digest"]

    def node_action(self, name: str, action: str) -> dict[str, Any]:
        """``drain`` or ``resume`` a node of the cluster."""
        result: dict[str, Any] = self._json("POST", f"/v1/nodes/{name}/{action}")
        return result

    def forget_node(self, name: str) -> None:
        """Delete a stopped or dead node's row."""
        self._send("DELETE", f"/v1/nodes/{name}")

    # -- packages -----------------------------------------------------------------------

    def upload_archive(self, data: bytes) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "POST", "/v1/archives", content=data, headers={"content-type": "application/zip"}
        )
        return result

    def rebuild(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", f"/v1/packages/{name}/rebuild")
        return result

    def wait_for_build(self, name: str, timeout: float = 900.0) -> dict[str, Any]:
        """Poll a package until its build has succeeded or failed."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            package = self.get("packages", name)
            if package["status"]["state"] in ("succeeded", "failed"):
                return package
            if time.monotonic() > deadline:
                raise ClientError(f"package {name!r} is still building after {timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def wait_for_rollout(self, package: dict[str, Any], timeout: float = 300.0) -> dict[str, str]:
        """After a package's build succeeded: wait until each function on it has moved to the
        new build or had it refused by its pre-flight; the refusals, by function."""
        deploy = package["status"].get("deploy")
        if package["status"]["state"] != "succeeded" or not deploy:
            return {}
        deadline = time.monotonic() + timeout
        delay = 0.05
        refused: dict[str, str] = {}
        waiting = [f["name"] for f in self.list("functions") if f["package"] == package["name"]]
        while waiting:
            for name in list(waiting):
                try:
                    function = self.get("functions", name)
                except ClientError as exc:
                    if exc.status != 404:
                        raise
                    waiting.remove(name)  # deleted meanwhile
                    continue
                preflight = function.get("preflight") or {}
                if (
                    function.get("deploy") in (deploy, None)
                    or function["package"] != package["name"]
                ):
                    waiting.remove(name)
                elif preflight.get("deploy") == deploy and preflight.get("state") == "refused":
                    refused[name] = str(preflight.get("error") or "")
                    waiting.remove(name)
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise ClientError(
                    f"functions {', '.join(waiting)} did not move to package"
                    f" {package['name']!r}'s new build within {timeout:g}s"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        return refused

    # -- functions ----------------------------------------------------------------------

    def revisions(self, name: str) -> builtins.list[dict[str, Any]]:
        """The function's revisions, oldest first."""
        result: builtins.list[dict[str, Any]] = self._json("GET", f"/v1/functions/{name}/revisions")
        return result

    def rollback(self, name: str, to: int | None = None) -> dict[str, Any]:
        """Return the function to revision ``to`` (default: the one before its current)."""
        body = {} if to is None else {"to": to}
        result: dict[str, Any] = self._json("POST", f"/v1/functions/{name}/rollback", json=body)
        return result

    def requests(self, name: str, limit: int = 200) -> builtins.list[dict[str, Any]]:
        """The function's last requests through the router (its access log), oldest first."""
        result: builtins.list[dict[str, Any]] = self._json(
            "GET", f"/v1/functions/{name}/requests", params={"limit": str(limit)}
        )
        return result

    def logs(
        self,
        name: str,
        follow: bool = False,
        tail: int | None = 200,
        *,
        since: str | None = None,
        level: str | None = None,
        instance: str | None = None,
        json: bool = False,
    ) -> Iterator[bytes]:
        """A function's log as it arrives: its lines (``tail`` None: the API's default, 200 or
        all since ``since``), or one JSON object per line with ``json``."""
        params = {"follow": str(follow).lower()}
        optional = {"tail": tail, "since": since, "level": level, "instance": instance}
        params.update({key: str(value) for key, value in optional.items() if value is not None})
        if json:
            params["format"] = "json"
        try:
            with self._http.stream(
                "GET", f"/v1/functions/{name}/logs", params=params, timeout=None
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                yield from response.iter_bytes()
        except httpx.ConnectError:
            raise ClientError(f"cannot reach the fissile API at {self.base_url}") from None
        except httpx.TransportError as exc:
            raise _broken(self.base_url, exc) from None

    # -- live statistics ------------------------------------------------------------------

    def stats(self, since: str = "1m", node: str | None = None) -> dict[str, Any]:
        """Every function over the last ``since`` (``30s``, ``10m``, ``1h``); in a cluster,
        merged over the nodes, or ``node``'s alone."""
        params = {"since": since} if node is None else {"since": since, "node": node}
        result: dict[str, Any] = self._json("GET", "/v1/stats", params=params)
        return result

    def function_stats(
        self, name: str, since: str = "10m", node: str | None = None
    ) -> dict[str, Any]:
        params = {"since": since} if node is None else {"since": since, "node": node}
        result: dict[str, Any] = self._json("GET", f"/v1/functions/{name}/stats", params=params)
        return result

    # -- invocations --------------------------------------------------------------------

    def invocations(
        self, status: str | None = None, function: str | None = None, limit: int = 100
    ) -> builtins.list[dict[str, Any]]:
        params: dict[str, str | int] = {"limit": limit}
        if status:
            params["status"] = status
        if function:
            params["function"] = function
        result: builtins.list[dict[str, Any]] = self._json("GET", "/v1/invocations", params=params)
        return result

    def invocation(self, invocation_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/v1/invocations/{invocation_id}")
        return result

    def cancel_invocation(self, invocation_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("DELETE", f"/v1/invocations/{invocation_id}")
        return result

    # -- topics ---------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        body: bytes,
        mqtype: str = "embedded",
        broker_url: str | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        params = {"mqtype": mqtype}
        if broker_url:
            params["broker_url"] = broker_url
        headers = {"content-type": content_type or "application/octet-stream"}
        result: dict[str, Any] = self._json(
            "POST", f"/v1/topics/{topic}/messages", content=body, params=params, headers=headers
        )
        return result

    def consume(
        self,
        topic: str,
        mqtype: str = "embedded",
        broker_url: str | None = None,
        group: str = "fissile-cli",
        count: int = 10,
        wait: float = 1.0,
    ) -> builtins.list[dict[str, Any]]:
        params: dict[str, Any] = {"mqtype": mqtype, "group": group, "count": count, "wait": wait}
        if broker_url:
            params["broker_url"] = broker_url
        result: builtins.list[dict[str, Any]] = self._json(
            "GET", f"/v1/topics/{topic}/messages", params=params
        )
        return result

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/v1/info")
        return result


def _broken(base_url: str, exc: httpx.TransportError) -> ClientError:
    """Any other transport fault (the connection closed mid-answer, a malformed response)."""
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ClientError(f"the connection to the fissile API at {base_url} failed: {detail}")


def _error(response: httpx.Response) -> ClientError:
    try:
        error = response.json()["error"]
        return ClientError(
            error["message"], response.status_code, error.get("code", ""), error.get("fields")
        )
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:300] or response.reason_phrase
        return ClientError(f"HTTP {response.status_code}: {text}", response.status_code)
