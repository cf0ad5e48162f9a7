"""``fissile fn logs`` across the cluster: each node keeps the log lines of the instances it ran,
so the node whose API is asked reads its own lines and asks every live peer for theirs.

A peer answers over its router's internal, token-protected endpoint
(``GET /_fissile/cluster/logs/<function>``, the same filters as the API's; ``requests/`` for
``fn logs --requests``, from its router's access log), one JSON object per line. The node
merges every node's lines by time, keeps the last ``tail`` and tags each with the node that
holds it. A peer that does not answer within ``PEER_TIMEOUT`` is skipped and named in a
warning: a dead or slow node costs its lines, never the whole call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from fissile.cluster.nodes import Nodes
from fissile.observability import loglines
from fissile.observability.access import AccessLog
from fissile.observability.logs import LogBook

log = logging.getLogger("fissile.cluster")

PEER_TIMEOUT = 3.0  # seconds a peer has to send its lines
FOLLOW_EVERY = 1.0  # seconds between two polls of every node by a cluster follower
FOLLOW_MAX = 10_000  # lines a node sends per poll of a follower

Line = dict[str, Any]


def read_local(path: Path, keep: loglines.LogFilter, tail: int) -> list[Line]:
    """This node's lines of one function's log that pass ``keep``, the last ``tail``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    view = loglines.LogView(keep, as_json=True)
    return [json.loads(line) for line in view.history(data, tail).splitlines() if line]


def filter_params(keep: loglines.LogFilter, tail: int) -> dict[str, str]:
    params = {"tail": str(tail)}
    if keep.since is not None:
        params["since"] = keep.since
    if keep.level is not None:
        params["level"] = str(keep.level)
    if keep.instance is not None:
        params["instance"] = keep.instance
    return params


def parse_params(query: dict[str, str]) -> tuple[loglines.LogFilter, int]:
    """The filter a peer sent (``filter_params``); ValueError if malformed."""
    level = query.get("level")
    tail = int(query.get("tail", "200"))
    if tail < 0:
        raise ValueError("tail must be 0 or more")
    keep = loglines.LogFilter(
        since=query.get("since") or None,
        level=None if level is None else int(level),
        instance=query.get("instance") or None,
    )
    return keep, tail


def merge(parts: dict[str, list[Line]], tail: int) -> list[Line]:
    """Every node's lines in time order (ties keep each node's own order), the last ``tail``,
    each tagged with its node."""
    tagged = [{**line, "node": node} for node, lines in parts.items() for line in lines]
    tagged.sort(key=lambda line: str(line.get("time", "")))  # sorted() is stable
    return tagged[-tail:] if tail else []


def _key(line: Line) -> str:
    return json.dumps({k: v for k, v in line.items() if k != "node"}, sort_keys=True)


def render_json(line: Line) -> bytes:
    return json.dumps(line).encode() + b"\n"


def render_text(line: Line) -> bytes:
    """A merged line as the log file has it, its source prefixed by its node."""
    source = line["instance"] or loglines.PLATFORM
    body = loglines.body(
        f"{line['node']}/{source}", line["level"], line["invocation_id"], line["message"]
    )
    return f"{line['time']} {body}\n".encode()


def warning(node: str, why: str, as_json: bool, here: str) -> bytes:
    message = f"node {node} did not answer ({why}): its lines are missing"
    if as_json:
        return json.dumps({"warning": message, "node": node}).encode() + b"\n"
    now = loglines.stamp(datetime.now(UTC))
    return f"{now} {here}/{loglines.PLATFORM} WARNING [-] {message}\n".encode()


class ClusterLogs:
    def __init__(self, nodes: Nodes, token: str, book: LogBook) -> None:
        self.nodes = nodes
        self.token = token
        self.book = book
        self.timeout = PEER_TIMEOUT
        self.access: AccessLog | None = None  # this router's, when it keeps one
        self.transport: httpx.AsyncBaseTransport | None = None  # tests: a fake peer

    async def gather(
        self, function: str, keep: loglines.LogFilter, tail: int
    ) -> tuple[list[Line], dict[str, str]]:
        """Every live node's lines, merged, and the peers skipped with why."""
        path = self.book.function_log(function)
        local = asyncio.to_thread(read_local, path, keep, tail)
        parts, skipped = await self._ask("logs", function, filter_params(keep, tail), local)
        return merge(parts, tail), skipped

    async def follow(
        self,
        function: str,
        keep: loglines.LogFilter,
        tail: int,
        as_json: bool,
        gone: Callable[[], bool],
    ) -> AsyncIterator[bytes]:
        """``fn logs --follow`` in a cluster: the gathered history, then every node's new lines
        as they come, polled every ``FOLLOW_EVERY`` seconds (each node asked for its lines from
        the newest one it sent on, those already sent dropped), until the function is gone."""
        started = loglines.stamp(datetime.now(UTC))
        lines, skipped = await self.gather(function, keep, tail)
        since: dict[str, str] = {}
        sent: dict[str, set[str]] = {}

        def note(line: Line) -> None:
            # The newest time sent per node, and which of its lines had that time.
            node = line["node"]
            key = _key(line)
            if line["time"] > since.get(node, started):
                since[node], sent[node] = line["time"], {key}
            elif line["time"] == since.get(node, started):
                sent.setdefault(node, set()).add(key)

        for line in lines:
            note(line)
        render = render_json if as_json else render_text
        here = self.nodes.name
        yield b"".join(warning(n, why, as_json, here) for n, why in skipped.items()) + b"".join(
            render(line) for line in lines
        )
        silent = set(skipped)
        while True:
            await asyncio.sleep(FOLLOW_EVERY)
            ended = gone()

            def after(node: str) -> loglines.LogFilter:
                start = max(since.get(node, started), keep.since or "")
                return loglines.LogFilter(since=start, level=keep.level, instance=keep.instance)

            path = self.book.function_log(function)
            local = asyncio.to_thread(read_local, path, after(here), FOLLOW_MAX)
            parts, skipped = await self._ask(
                "logs", function, lambda node: filter_params(after(node), FOLLOW_MAX), local
            )
            fresh = [
                line
                for line in merge(parts, FOLLOW_MAX * (len(parts) or 1))
                if _key(line) not in sent.get(line["node"], set())
            ]
            for line in fresh:
                note(line)
            out = [warning(n, why, as_json, here) for n, why in skipped.items() if n not in silent]
            silent = set(skipped)
            out.extend(render(line) for line in fresh)
            if out:
                yield b"".join(out)
            if ended:
                return

    async def gather_requests(self, function: str, limit: int) -> tuple[list[Line], dict[str, str]]:
        """Every live node's last requests of the function (its router's access log), merged
        by time, the last ``limit``; and the peers skipped with why."""

        async def local() -> list[Line]:
            return self.requests(function, limit)

        params = {"limit": str(limit)}
        parts, skipped = await self._ask("requests", function, params, local())
        return merge(parts, limit), skipped

    async def requests_listing(self, function: str, limit: int) -> list[Line]:
        """``/v1/functions/<f>/requests`` in a cluster: a node that did not answer first, as
        ``{"warning", "node"}``, then every other node's requests merged by time."""
        records, skipped = await self.gather_requests(function, limit)
        warnings = [
            {
                "warning": f"node {node} did not answer ({why}): its requests are missing",
                "node": node,
            }
            for node, why in skipped.items()
        ]
        return warnings + records

    def requests(self, function: str, limit: int) -> list[Line]:
        return [] if self.access is None else self.access.recent(function, limit)

    async def _ask(
        self,
        kind: str,
        function: str,
        params: dict[str, str] | Callable[[str], dict[str, str]],
        local: Awaitable[list[Line]],
    ) -> tuple[dict[str, list[Line]], dict[str, str]]:
        # The peers as of the last heartbeat (a second old at most): no query per call.
        peers = [node for node in self.nodes.peers if node.alive]

        async def ask(client: httpx.AsyncClient, name: str, address: str) -> list[Line]:
            url = f"http://{address}/_fissile/cluster/{kind}/{quote(function, safe='')}"
            query = params(name) if callable(params) else params
            response = await client.get(
                url, params=query, headers={"authorization": f"Bearer {self.token}"}
            )
            if response.status_code != 200:
                raise httpx.HTTPStatusError(
                    f"HTTP {response.status_code}", request=response.request, response=response
                )
            return [json.loads(line) for line in response.text.splitlines() if line]

        # Peers are asked over plain HTTP: no TLS context (loading the CA bundle cost ~50 ms a
        # call here), as cluster/artifacts.py's downloads.
        async with httpx.AsyncClient(
            timeout=self.timeout, transport=self.transport, verify=False
        ) as client:
            results = await asyncio.gather(
                local,
                *(asyncio.wait_for(ask(client, n.name, n.address), self.timeout) for n in peers),
                return_exceptions=True,
            )
        parts: dict[str, list[Line]] = {}
        skipped: dict[str, str] = {}
        mine = results[0]
        if isinstance(mine, BaseException):
            raise mine
        parts[self.nodes.name] = mine
        for node, result in zip(peers, results[1:], strict=True):
            if isinstance(result, BaseException):
                why = "timed out" if isinstance(result, TimeoutError) else str(result)
                why = why or type(result).__name__
                log.warning("cluster: %s of %s from %s: %s", kind, function, node.name, why)
                skipped[node.name] = why
            else:
                parts[node.name] = result
        return parts, skipped

    def serve(self, kind: str, function: str, query: dict[str, str]) -> tuple[int, bytes]:
        """The internal endpoints' answer (``kind``: logs or requests): this node's lines or
        requests of the function, one JSON object per line."""
        try:
            if kind == "requests":
                lines = self.requests(function, max(0, min(int(query.get("limit", "200")), 200)))
            else:
                keep, tail = parse_params(query)
                lines = read_local(self.book.function_log(function), keep, tail)
        except ValueError as exc:
            body = {"error": {"code": "invalid", "message": str(exc)}}
            return 422, json.dumps(body).encode()
        return 200, b"".join(json.dumps(line).encode() + b"\n" for line in lines)
