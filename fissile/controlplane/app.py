"""The control API: CRUD of every resource under ``/v1``, archive uploads, logs, health.

No ``from __future__ import annotations`` here: FastAPI reads the request models from the
route functions' annotations, which must be real classes, not strings.
"""

import asyncio
import base64
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

import fissile
from fissile.builder import ArchiveError, ArchiveTooLarge
from fissile.builder.archive import MAX_ARCHIVE_BYTES
from fissile.controlplane.apikeys import add_apikey_routes
from fissile.controlplane.auth import SESSION_COOKIE, authorized, cookie_allows
from fissile.controlplane.errors import ApiError, error_responses
from fissile.controlplane.invoke import add_invoke_route
from fissile.controlplane.resources import Resources
from fissile.controlplane.revision_routes import add_revision_routes
from fissile.controlplane.stats import add_stats_routes
from fissile.executor import Executor
from fissile.invocations import InvocationError, Invocations, Status
from fissile.models import (
    ArchiveInfo,
    Canary,
    CanarySpec,
    ConfigMap,
    ConfigMapSpec,
    Environment,
    EnvironmentSpec,
    Function,
    FunctionSpec,
    HTTPTrigger,
    HTTPTriggerSpec,
    MessageQueueTrigger,
    MessageQueueTriggerSpec,
    Package,
    PackageSpec,
    PlatformInfo,
    Secret,
    SecretSpec,
    TimeTrigger,
    TimeTriggerSpec,
    WatchTrigger,
    WatchTriggerSpec,
)
from fissile.observability import LogBook, loglines
from fissile.observability.access import RECENT, AccessLog
from fissile.observability.crashes import CrashLog
from fissile.observability.exposition import CONTENT_TYPE, Exposition
from fissile.observability.stats import Stats
from fissile.store import StoreUnavailable
from fissile.store.space import StorageFull, is_full, writing
from fissile.triggers.mq.hub import BrokerHub, Refused


def create_api(
    resources: Resources,
    logs: LogBook,
    info: PlatformInfo,
    ready: Callable[[], bool],
    token: str | None = None,
    invocations: Invocations | None = None,
    brokers: BrokerHub | None = None,
    environments: Callable[[], dict[str, bool]] | None = None,
    metrics: Exposition | None = None,
    metrics_public: bool = False,
    stats: Stats | None = None,
    crashes: CrashLog | None = None,
    access_log: AccessLog | None = None,
) -> FastAPI:
    """The control API; with a ``token``, every request but ``/healthz`` must carry it (or,
    from the dashboard's pages, its session cookie; ``/metrics`` needs none when
    ``metrics_public``). ``environments``: whether each environment can serve (its zygote is
    up), for /healthz; ``stats`` and ``crashes``: the live statistics of ``/v1/stats`` and the
    dashboard."""
    # Here, not at the top: the dashboard's routes import this package's auth module.
    from fissile.ui.routes import add_dashboard, in_ui

    auth = (401,) if token is not None else ()
    open_paths = {"/healthz", "/metrics"} if metrics_public else {"/healthz"}

    def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
        # Behind a token, every route may meet a request without it.
        return error_responses(*auth, *statuses)

    app = FastAPI(
        title="fissile control API",
        version=fissile.__version__,
        description="Environments, packages, functions and HTTP triggers of a fissile platform.",
    )

    if token is not None:

        @app.middleware("http")
        async def require_token(request: Request, call_next: Any) -> Any:
            path = request.url.path
            if (
                path not in open_paths
                # The dashboard's pages check its cookie themselves, and send whoever lacks
                # it to their sign-in page rather than a 401.
                and not in_ui(path)
                and not authorized(request.headers.get("authorization"), token)
                and not cookie_allows(
                    request.method,
                    path,
                    request.headers,
                    request.cookies.get(SESSION_COOKIE),
                    request.url.scheme,
                    token,
                )
            ):
                error = ApiError(401, "unauthorized", "missing or wrong bearer token")
                return JSONResponse(
                    error.body(), 401, headers={"www-authenticate": 'Bearer realm="fissile"'}
                )
            return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status)

    @app.exception_handler(StorageFull)
    async def storage_full(request: Request, exc: StorageFull) -> JSONResponse:
        return JSONResponse(ApiError(507, "storage_full", str(exc)).body(), 507)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        # A shared store's database is away: the write did not happen; reads still answer.
        body = ApiError(503, "store_unavailable", str(exc)).body()
        return JSONResponse(body, 503, headers={"retry-after": "1"})

    async def maybe_full(request: Request, exc: Exception) -> JSONResponse:
        # A write path that did not name its own StorageFull: still 507, never a bare 500.
        if not is_full(exc):
            raise exc
        return await storage_full(request, StorageFull(info.data_dir))

    app.add_exception_handler(OSError, maybe_full)
    app.add_exception_handler(sqlite3.OperationalError, maybe_full)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = str(exc.detail)
        headers = exc.headers
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            # Starlette names the methods of the first route on the path only; a path served
            # by one route per method (GET and POST /v1/functions) allows all of theirs.
            message = f"{request.method} is not allowed on {request.url.path}"
            kept = {k: v for k, v in (headers or {}).items() if k.lower() != "allow"}
            headers = {**kept, "allow": ", ".join(_allowed_methods(app, request))}
        return JSONResponse(
            ApiError(exc.status_code, code, message).body(), exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = []
        for error in exc.errors():
            location = [str(part) for part in error.get("loc", ()) if part != "body"]
            fields.append({"path": ".".join(location) or "body", "message": error.get("msg", "")})
        summary = "; ".join(f"{f['path']}: {f['message']}" for f in fields)
        body = ApiError(422, "invalid", f"invalid request: {summary}", fields).body()
        return JSONResponse(body, 422)

    @app.get("/healthz", tags=["platform"], responses=HEALTH_RESPONSES)
    async def healthz() -> JSONResponse:
        """Readiness per environment; 503 only while nothing can serve (the platform is
        starting, or no environment has its zygote up), 200 ``degraded`` while some can."""
        states = {
            name: "ready" if up else "starting"
            for name, up in sorted((environments() if environments else {}).items())
        }
        serving = [state for state in states.values() if state == "ready"]
        if not ready() or (states and not serving):
            return JSONResponse({"status": "starting", "environments": states}, 503)
        status = "ok" if len(serving) == len(states) else "degraded"
        return JSONResponse({"status": status, "environments": states})

    if metrics is not None:
        exposition = metrics
        metrics_errors = error_responses() if metrics_public else errors()

        @app.get(
            "/metrics",
            tags=["platform"],
            response_class=Response,
            responses={200: {"content": {CONTENT_TYPE: {}}}, **metrics_errors},
        )
        async def prometheus_metrics() -> Response:
            """Prometheus text exposition of the platform's metrics (docs/observability.md)."""
            return Response(await exposition.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/info", tags=["platform"], responses=errors())
    async def platform_info() -> PlatformInfo:
        return info

    # -- archives -----------------------------------------------------------------------

    @app.post("/v1/archives", status_code=201, tags=["packages"], responses=errors(413, 422, 507))
    async def upload_archive(request: Request) -> ArchiveInfo:
        """Upload a zip (the raw request body); it is checked, then kept by its sha256."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_ARCHIVE_BYTES:
            raise ApiError(413, "too_large", f"archive exceeds {MAX_ARCHIVE_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_ARCHIVE_BYTES:
                raise ApiError(413, "too_large", f"archive exceeds {MAX_ARCHIVE_BYTES} bytes")
            chunks.append(chunk)
        try:
            with writing(info.data_dir):
                digest, length, summary = await asyncio.to_thread(resources.archives.put, chunks)
        except ArchiveTooLarge as exc:
            raise ApiError(413, "too_large", str(exc)) from None
        except ArchiveError as exc:
            raise ApiError(422, "bad_archive", str(exc)) from None
        await resources.source_stored(digest)
        return ArchiveInfo(sha256=digest, size=length, files=summary.files)

    # -- CRUD for every kind ------------------------------------------------------------

    def crud(path: str, kind: str, spec_model: Any, read_model: Any, tag: str) -> None:
        async def list_(request: Request) -> list[Any]:
            return resources.list_kind(kind)

        async def get(name: str) -> Any:
            return resources.get(kind, name)

        async def delete(name: str) -> Any:
            return resources.delete(kind, name)

        async def create(spec: spec_model) -> Any:
            if kind == "httptriggers":
                return await resources.save_route(spec)
            if kind == "packages":
                await resources.source_here(spec.source)
            return resources.create(kind, spec)

        async def update(name: str, spec: spec_model) -> Any:
            if kind == "packages":
                await resources.source_here(spec.source)
            if kind == "functions":
                return await resources.update_function(name, spec)
            if kind == "httptriggers":
                return await resources.save_route(spec, name)
            return resources.update(kind, name, spec)

        one = path + "/{name}"
        app.add_api_route(
            path,
            list_,
            methods=["GET"],
            response_model=list[read_model],
            tags=[tag],
            responses=errors(),
        )
        app.add_api_route(
            path,
            create,
            methods=["POST"],
            response_model=read_model,
            status_code=201,
            tags=[tag],
            responses=errors(404, 409, 422, 507),  # 404: a resource it refers to
        )
        get_errors = errors(404, 422)
        app.add_api_route(
            one, get, methods=["GET"], response_model=read_model, tags=[tag], responses=get_errors
        )
        app.add_api_route(
            one,
            update,
            methods=["PUT"],
            response_model=read_model,
            tags=[tag],
            responses=errors(404, 409, 422, 507),
        )
        app.add_api_route(
            one,
            delete,
            methods=["DELETE"],
            response_model=read_model,
            tags=[tag],
            responses=errors(404, 409, 422, 507),
        )

    crud("/v1/environments", "environments", EnvironmentSpec, Environment, "environments")
    crud("/v1/packages", "packages", PackageSpec, Package, "packages")
    crud("/v1/functions", "functions", FunctionSpec, Function, "functions")
    crud("/v1/httptriggers", "httptriggers", HTTPTriggerSpec, HTTPTrigger, "httptriggers")
    crud("/v1/timetriggers", "timetriggers", TimeTriggerSpec, TimeTrigger, "triggers")
    crud("/v1/mqtriggers", "mqtriggers", MessageQueueTriggerSpec, MessageQueueTrigger, "triggers")
    crud("/v1/watchtriggers", "watchtriggers", WatchTriggerSpec, WatchTrigger, "triggers")
    crud("/v1/secrets", "secrets", SecretSpec, Secret, "secrets")
    crud("/v1/configmaps", "configmaps", ConfigMapSpec, ConfigMap, "secrets")
    crud("/v1/canaries", "canaries", CanarySpec, Canary, "canaries")

    @app.post("/v1/secret-digests", tags=["secrets"], responses=errors(422))
    async def secret_digest(spec: SecretSpec) -> dict[str, str]:
        """The digest a secret with these values has, to compare with a stored secret's
        ``digest`` (``spec apply`` does); nothing is stored."""
        return {"digest": resources.digest(spec)}

    if brokers is not None:
        hub = brokers

        @app.post(
            "/v1/topics/{topic}/messages",
            status_code=202,
            tags=["triggers"],
            responses=errors(422, 507),
        )
        async def publish(
            topic: str,
            request: Request,
            mqtype: str = "embedded",
            broker_url: str | None = None,
        ) -> dict[str, Any]:
            """Publish the raw request body to a topic (``fissile topic publish``)."""
            _topic(topic)
            body = await request.body()
            # A client's traceparent makes the message part of its trace.
            headers = {
                k: v for k, v in request.headers.items() if k in ("content-type", "traceparent")
            }
            try:
                await hub.deliver(mqtype, topic, body, headers, broker_url)
            except Refused as exc:
                raise ApiError(exc.status, exc.code, exc.message) from None
            return {"topic": topic, "mqtype": mqtype, "size": len(body)}

        @app.get("/v1/topics/{topic}/messages", tags=["triggers"], responses=errors(422))
        async def consume(
            topic: str,
            mqtype: str = "embedded",
            broker_url: str | None = None,
            group: str = Query("fissile-cli", pattern=r"^[A-Za-z0-9._-]{1,200}$"),
            count: int = Query(10, ge=1, le=1000),
            wait: float = Query(1.0, ge=0, le=60),
        ) -> list[dict[str, Any]]:
            """Take up to ``count`` messages as consumer group ``group`` and ack them
            (``fissile topic consume``); bodies are base64."""
            _topic(topic)
            try:
                messages = await hub.take(mqtype, topic, group, count, wait, broker_url)
            except Refused as exc:
                raise ApiError(exc.status, exc.code, exc.message) from None
            return [
                {
                    "id": m.id,
                    "topic": m.topic,
                    "headers": m.headers,
                    "redelivered": m.redelivered,
                    "body_base64": base64.b64encode(m.body).decode(),
                }
                for m in messages
            ]

    @app.post(
        "/v1/packages/{name}/rebuild",
        response_model=Package,
        tags=["packages"],
        responses=errors(404, 409, 422, 507),
    )
    async def rebuild(name: str) -> Any:
        return resources.rebuild(name)

    @app.get("/v1/functions/{name}/logs", tags=["functions"], responses=errors(404, 422))
    async def function_logs(
        name: str,
        follow: bool = False,
        tail: int | None = Query(
            None, ge=0, le=100_000, description="default: 200, all with since"
        ),
        since: str | None = Query(None, description="a duration back (10m, 2h) or an ISO time"),
        level: str | None = Query(None, description="this level and above"),
        instance: str | None = Query(None, description="an instance id, or fissile"),
        format: Literal["text", "json"] = "text",
    ) -> StreamingResponse:
        try:
            keep = loglines.LogFilter(
                since=None if since is None else loglines.parse_since(since),
                level=None if level is None else loglines.level_rank(level),
                instance=instance or None,
            )
        except ValueError as exc:
            raise ApiError(422, "invalid", str(exc)) from None
        if tail is None:
            tail = 200 if since is None else 100_000
        resources.get("functions", name)
        gathered = getattr(app.state, "cluster_logs", None)
        if gathered is not None and follow:
            return StreamingResponse(
                gathered.follow(
                    name,
                    keep,
                    tail,
                    format == "json",
                    lambda: resources.store.find("functions", name) is None,
                ),
                media_type="application/x-ndjson"
                if format == "json"
                else "text/plain; charset=utf-8",
            )
        if gathered is not None:
            return await _gathered_log(gathered, name, keep, tail, format == "json")
        path = logs.function_log(name)
        view = loglines.LogView(keep, as_json=format == "json")
        return StreamingResponse(
            _stream_log(
                path, tail, follow, lambda: resources.store.find("functions", name) is None, view
            ),
            media_type="application/x-ndjson" if view.as_json else "text/plain; charset=utf-8",
        )

    @app.get("/v1/functions/{name}/requests", tags=["functions"], responses=errors(404, 422))
    async def function_requests(
        name: str, limit: int = Query(RECENT, ge=1, le=RECENT)
    ) -> list[dict[str, Any]]:
        """The function's last requests through the router (its access log's records, kept in
        memory), oldest first; none when the access log is off."""
        resources.get("functions", name)
        gathered = getattr(app.state, "cluster_logs", None)
        if gathered is not None:
            # Cluster mode: every live node's requests, each with its node (cluster/logs.py).
            records: list[dict[str, Any]] = await gathered.requests_listing(name, limit)
            return records
        if access_log is None:
            return []
        return access_log.recent(name, limit)

    if invocations is not None:
        _invocation_routes(app, invocations, errors)
    if stats is not None:
        add_stats_routes(app, resources, stats, crashes, errors)
    add_invoke_route(app, resources, info.router_url, errors, token)
    add_apikey_routes(app, resources, errors)
    add_revision_routes(app, resources, errors)
    add_dashboard(app, resources, info, token, stats, crashes, invocations)
    return app


def _invocation_routes(
    app: FastAPI,
    invocations: Invocations,
    errors: Callable[..., dict[int | str, dict[str, Any]]],
) -> None:
    """Listing and managing asynchronous invocations (the data plane serves single ones to
    whoever holds an id; listing them all is an operator's business)."""

    @app.get("/v1/invocations", tags=["invocations"], responses=errors(422))
    async def list_invocations(
        status: Status | None = None,
        function: str | None = None,
        limit: int = Query(100, ge=1, le=10_000),
    ) -> list[dict[str, Any]]:
        found = invocations.list(None if status is None else str(status), function, limit)
        return [invocation.to_json() for invocation in found]

    @app.get("/v1/invocations/{invocation_id}", tags=["invocations"], responses=errors(404))
    async def get_invocation(invocation_id: str) -> dict[str, Any]:
        invocation = invocations.get(invocation_id)
        if invocation is None:
            raise ApiError(404, "not_found", f"invocation {invocation_id!r} not found")
        return invocation.to_json()

    @app.delete(
        "/v1/invocations/{invocation_id}", tags=["invocations"], responses=errors(404, 409, 507)
    )
    async def cancel_invocation(invocation_id: str) -> dict[str, Any]:
        try:
            invocation = await invocations.cancel(invocation_id)
        except InvocationError as exc:
            code = "not_found" if exc.status == 404 else exc.code
            raise ApiError(exc.status, code, exc.message) from None
        return invocation.to_json()


def environment_readiness(executor: Executor) -> Callable[[], dict[str, bool]]:
    """Whether each environment of ``executor`` can serve: its zygote is up."""

    def readiness() -> dict[str, bool]:
        return {
            name: env.zygote is not None and env.zygote.alive
            for name, env in executor.environments.items()
        }

    return readiness


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Serving: `status` is `ok`, or `degraded` while some environment's"
        " zygote is (re)starting; `environments` maps each to `ready` or `starting`.",
    },
    503: {"description": "Nothing can serve yet: the platform or every environment is starting."},
}


def _topic(topic: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", topic):
        raise ApiError(422, "invalid", f"invalid topic {topic!r}")


async def _gathered_log(
    gathered: Any, name: str, keep: loglines.LogFilter, tail: int, as_json: bool
) -> StreamingResponse:
    """Cluster mode: every live node's lines of the function, merged by time and tagged with
    their node (fissile/cluster/logs.py); a peer that did not answer is named in a warning."""
    from fissile.cluster import logs as cluster_logs

    lines, skipped = await gathered.gather(name, keep, tail)
    out = [
        cluster_logs.warning(node, why, as_json, gathered.nodes.name)
        for node, why in skipped.items()
    ]
    render = cluster_logs.render_json if as_json else cluster_logs.render_text
    out.extend(render(line) for line in lines)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"".join(out)

    return StreamingResponse(
        chunks(), media_type="application/x-ndjson" if as_json else "text/plain; charset=utf-8"
    )


async def _stream_log(
    path: Path,
    tail: int,
    follow: bool,
    gone: Callable[[], bool],
    view: loglines.LogView | None = None,
) -> AsyncIterator[bytes]:
    # Read through an open handle: lines written just before the function was deleted (which
    # removes its log) or before a rotation are still there to read, however late this loop
    # wakes up on a loaded host.
    handle = _open_log(path)
    lines = _Lines(view)
    try:
        if handle is not None:
            data = handle.read()
            if lines.view is None:
                chunks = data.splitlines(keepends=True)
                yield b"".join(chunks[-tail:] if tail else [])
            else:
                # A follower reads the unfinished last line with what completes it.
                data = lines.hold(data) if follow else data
                # Parsing a whole file is for a thread, not the event loop the router shares.
                yield await asyncio.to_thread(lines.view.history, data, tail)
        while follow:
            await asyncio.sleep(0.25)
            ended = gone()
            if handle is not None:
                chunk = lines.select(handle.read())
                if chunk:
                    yield chunk
            if ended:
                return
            if _replaced(path, handle):  # rotated, or created since
                if handle is not None:
                    handle.close()
                handle = _open_log(path)
                lines.rest = b""  # a line cut by a rotation is lost, as before
                if handle is not None:
                    chunk = lines.select(handle.read())
                    if chunk:
                        yield chunk
    finally:
        if handle is not None:
            handle.close()


class _Lines:
    """Followed output through a view: whole lines only, each filtered and formatted."""

    def __init__(self, view: loglines.LogView | None) -> None:
        self.view = None if view is None or view.passthrough else view
        self.rest = b""

    def hold(self, data: bytes) -> bytes:
        """``data`` up to its last newline; the rest waits for the next read."""
        data = self.rest + data
        cut = data.rfind(b"\n") + 1
        self.rest = data[cut:]
        return data[:cut]

    def select(self, data: bytes) -> bytes:
        if self.view is None or not data:
            return data
        view = self.view
        return b"".join(
            out for raw in loglines.split_lines(self.hold(data)) if (out := view.line(raw))
        )


def _open_log(path: Path) -> BinaryIO | None:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


def _replaced(path: Path, handle: BinaryIO | None) -> bool:
    try:
        current = os.stat(path).st_ino
    except FileNotFoundError:
        return False
    return handle is None or current != os.fstat(handle.fileno()).st_ino
