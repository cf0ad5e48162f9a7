"""``fissile top``, ``fn stats`` and the dashboard across the cluster: each node counts the
requests its own router served and the instances it runs, so the node whose API is asked takes
its own windows and asks every live peer for theirs, then merges them.

A peer answers over its router's internal, token-protected endpoint
(``GET /_fissile/cluster/stats?since=<seconds>[&series=1][&function=<name>]``) with its windows
as ``Stats.function`` gives them plus each window's duration histogram (``buckets``). The merge:

- counts (requests, statuses, errors, cold starts, crashes) and rates add; the error rate is
  the summed errors over the summed requests;
- p50 and p99 come from the summed histograms, interpolated as one node does: the quantile of
  every request the cluster served, never an average of the nodes' quantiles;
- instances, queue, requests in flight and restarts add; ``processes`` lists every node's, each
  with its ``node``; ``nodes`` breaks the function down per node;
- the sparkline series: rates add interval by interval (each node's last interval ends at its
  own last sampling, so they line up within one interval); a node keeps no histogram per
  interval, so the series' p99 is the highest of the nodes' p99 in that interval, and says so
  (``p99_merge: "max"``).

A peer that does not answer within ``PEER_TIMEOUT`` is skipped and named in ``warnings``: a dead
or slow node costs its share of the numbers, never the whole call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import httpx

from fissile.cluster.nodes import Nodes
from fissile.controlplane.errors import ApiError
from fissile.observability.crashes import CrashLog
from fissile.observability.metrics import DURATION_BUCKETS
from fissile.observability.stats import Stats, quantile

log = logging.getLogger("fissile.cluster")

PEER_TIMEOUT = 3.0  # seconds a peer has to send its numbers
MAX_SINCE = 3600.0  # what a peer accepts as a window (the ring's horizon)

Document = dict[str, Any]

_INSTANCE_KEYS = ("ready", "busy", "idle", "starting", "desired")
_SUMMED = ("queued", "inflight", "restarts")


class UnknownNode(ApiError):
    """``--node`` named no live node of the cluster: the API's 404."""

    def __init__(self, node: str) -> None:
        super().__init__(404, "not_found", f"no live node named {node!r} in the cluster")


def zero(name: str, since: float) -> Document:
    """A function a node does not know: nothing counted, nothing running there."""
    return {
        "function": name,
        "since": since,
        "window": 0.0,
        "requests": 0,
        "rate": 0.0,
        "statuses": {},
        "errors": 0,
        "error_rate": 0.0,
        "p50_ms": None,
        "p99_ms": None,
        "cold_starts": 0,
        "crashes": 0,
        "buckets": [0] * (len(DURATION_BUCKETS) + 1),
        "instances": dict.fromkeys(_INSTANCE_KEYS, 0),
        "processes": [],
        "queued": 0,
        "inflight": 0,
        "restarts": 0,
        "last_exit_reason": None,
    }


def quantile_ms(q: float, buckets: Sequence[int]) -> float | None:
    value = quantile(q, DURATION_BUCKETS, buckets)
    return None if value is None else round(value * 1000, 3)


def _aligned(columns: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Series that all end now, interval by interval (a shorter one padded with None at its
    start: it began later)."""
    rows = [list(column) for column in columns]
    width = max((len(row) for row in rows), default=0)
    return list(zip(*([None] * (width - len(row)) + row for row in rows), strict=True))


def _add(columns: Iterable[Sequence[float]]) -> list[float]:
    """Interval-by-interval sums of series that all end now."""
    return [round(sum(v for v in at if v is not None), 3) for at in _aligned(columns)]


def _highest(columns: Iterable[Sequence[float | None]]) -> list[float | None]:
    out: list[float | None] = []
    for at in _aligned(columns):
        values = [v for v in at if v is not None]
        out.append(max(values) if values else None)
    return out


def node_summary(node: str, part: Document) -> Document:
    """One node's share of a function, as ``nodes`` lists it."""
    return {
        "node": node,
        "requests": part["requests"],
        "rate": part["rate"],
        "errors": part["errors"],
        "p50_ms": part["p50_ms"],
        "p99_ms": part["p99_ms"],
        "cold_starts": part["cold_starts"],
        "crashes": part["crashes"],
        "instances": part["instances"],
        "queued": part["queued"],
        "inflight": part["inflight"],
    }


def merge(name: str, since: float, parts: dict[str, Document]) -> Document:
    """One function's windows on every node (``parts``: node -> ``Stats.function(...,
    buckets=True)``, the node asked first) as one cluster-wide document (see the module's
    docstring), with ``nodes``: each node's share, by name."""
    docs = list(parts.values()) or [zero(name, since)]
    requests = sum(d["requests"] for d in docs)
    errors = sum(d["errors"] for d in docs)
    statuses: dict[str, int] = {}
    for d in docs:
        for status, count in d["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    buckets = [sum(counts) for counts in zip(*(d["buckets"] for d in docs), strict=True)]
    merged: Document = {
        "function": name,
        "since": since,
        "window": max(d["window"] for d in docs),
        "requests": requests,
        "rate": round(sum(d["rate"] for d in docs), 3),
        "statuses": {code: statuses[code] for code in sorted(statuses, key=int)},
        "errors": errors,
        "error_rate": round(errors / requests, 4) if requests else 0.0,
        "p50_ms": quantile_ms(0.5, buckets),
        "p99_ms": quantile_ms(0.99, buckets),
        "cold_starts": sum(d["cold_starts"] for d in docs),
        "crashes": sum(d["crashes"] for d in docs),
        "instances": {key: sum(d["instances"].get(key, 0) for d in docs) for key in _INSTANCE_KEYS},
        "processes": [
            {**process, "node": node}
            for node, d in parts.items()
            for process in d.get("processes", [])
        ],
        **{key: sum(d.get(key, 0) for d in docs) for key in _SUMMED},
        # Nodes keep no time of their last exit: the first node's that has one (the one asked
        # first).
        "last_exit_reason": next(
            (d["last_exit_reason"] for d in docs if d.get("last_exit_reason")), None
        ),
    }
    series = [d["series"] for d in docs if "series" in d]
    if series:
        merged["series"] = {
            "interval": series[0]["interval"],
            "rate": _add(s["rate"] for s in series),
            "p99_ms": _highest(s["p99_ms"] for s in series),
            "p99_merge": "max",
        }
    crashes = [
        {**crash, "node": node}
        for node, d in parts.items()
        for crash in d.get("recent_crashes", [])
    ]
    if any("recent_crashes" in d for d in docs):
        merged["recent_crashes"] = sorted(
            crashes, key=lambda c: str(c.get("time", "")), reverse=True
        )
    merged["nodes"] = [node_summary(node, parts[node]) for node in sorted(parts)]
    return merged


def merge_all(
    names: Sequence[str], since: float, parts: dict[str, dict[str, Document]]
) -> list[Document]:
    """Every function of ``names`` merged over the nodes' documents (``parts``: node ->
    function -> document); one no node counted is zeros on the nodes asked."""
    functions = []
    for name in names:
        found = {n: by_name[name] for n, by_name in parts.items() if name in by_name}
        if not found:
            found = {n: zero(name, since) for n in parts}
        functions.append(merge(name, since, found))
    return functions


def _encode(answer: Document) -> bytes:
    return json.dumps(answer).encode()


def warnings(skipped: dict[str, str]) -> list[Document]:
    return [
        {"warning": f"node {node} did not answer ({why}): its stats are missing", "node": node}
        for node, why in sorted(skipped.items())
    ]


class ClusterStats:
    def __init__(self, nodes: Nodes, token: str, stats: Stats, crashes: CrashLog | None) -> None:
        self.nodes = nodes
        self.token = token
        self.stats = stats
        self.crashes = crashes
        self.timeout = PEER_TIMEOUT
        self.transport: httpx.AsyncBaseTransport | None = None  # tests: a fake peer
        # Made at the first gathering and kept: making a client costs ~30 ms (its TLS context),
        # more than the gathering itself.
        self._client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- this node's part -----------------------------------------------------------------

    def local(self, since: float, series: bool, function: str | None) -> list[Document]:
        """This node's windows: of ``function`` (with its recent crashes here), or of every
        function it counts."""
        if function is not None:
            document = self.stats.function(function, since, series, buckets=True)
            document["recent_crashes"] = self.crashes.of(function) if self.crashes else []
            return [document]
        return [self.stats.function(n, since, series, buckets=True) for n in self.stats.names()]

    async def serve(self, query: dict[str, str]) -> tuple[int, bytes]:
        """The internal endpoint's answer: this node's windows, as JSON."""
        try:
            since = float(query.get("since", "60"))
            if not 0 < since <= MAX_SINCE:
                raise ValueError(f"since must be above 0 and at most {MAX_SINCE:g}")
        except ValueError as exc:
            body = {"error": {"code": "invalid", "message": str(exc)}}
            return 422, json.dumps(body).encode()
        # The windows read the live counters, on the loop that moves them (~50 µs a function);
        # the text (~1 KB a function, ~0.1 ms) is written in a thread, off the router's loop.
        documents = self.local(since, query.get("series") == "1", query.get("function") or None)
        answer = {"node": self.nodes.name, "functions": documents}
        return 200, await asyncio.to_thread(_encode, answer)

    # -- gathering ------------------------------------------------------------------------

    async def all(
        self, names: Sequence[str], since: float, series: bool, node: str | None = None
    ) -> Document:
        """``GET /v1/stats`` in a cluster: every function of ``names`` merged over the live
        nodes (or ``node`` alone), the nodes that answered, and a warning per one that did
        not."""
        parts, skipped = await self._gather(since, series, None, node)
        # Documents of this call alone: merged in a thread (~0.1 ms a function on 3 nodes).
        functions = await asyncio.to_thread(merge_all, names, since, parts)
        return {
            "since": since,
            "functions": functions,
            "nodes": list(parts),
            "warnings": warnings(skipped),
        }

    async def function(self, name: str, since: float, node: str | None = None) -> Document:
        """``GET /v1/functions/<name>/stats`` in a cluster: merged as ``all`` does, with the
        recent crashes of every node (newest first, each with its ``node``)."""
        parts, skipped = await self._gather(since, True, name, node)
        found = {n: by_name.get(name) or zero(name, since) for n, by_name in parts.items()}
        document = merge(name, since, found)
        document.setdefault("recent_crashes", [])
        document["warnings"] = warnings(skipped)
        return document

    async def _gather(
        self, since: float, series: bool, function: str | None, node: str | None
    ) -> tuple[dict[str, dict[str, Document]], dict[str, str]]:
        """Each answering node's documents by function, the node asked first; and the peers
        skipped with why."""
        here = self.nodes.name
        # The peers as of the last heartbeat (a second old at most): no query per call.
        peers = [p for p in self.nodes.peers if p.alive]
        if node is not None:
            if node != here and not any(p.name == node for p in peers):
                raise UnknownNode(node)
            peers = [p for p in peers if p.name == node]
        query = {"since": repr(since)}
        if series:
            query["series"] = "1"
        if function is not None:
            query["function"] = function
        headers = {"authorization": f"Bearer {self.token}"}

        async def ask(client: httpx.AsyncClient, address: str) -> list[Document]:
            url = f"http://{address}/_fissile/cluster/stats"
            response = await client.get(url, params=query, headers=headers)
            if response.status_code != 200:
                raise httpx.HTTPStatusError(
                    f"HTTP {response.status_code}", request=response.request, response=response
                )
            answer = await asyncio.to_thread(json.loads, response.content)
            documents: list[Document] = answer["functions"]
            return documents

        results: list[list[Document] | BaseException] = []
        if peers:
            client = self._client
            if client is None:
                client = self._client = httpx.AsyncClient(
                    timeout=self.timeout, transport=self.transport
                )
            results = await asyncio.gather(
                *(asyncio.wait_for(ask(client, p.address), self.timeout) for p in peers),
                return_exceptions=True,
            )
        parts: dict[str, dict[str, Document]] = {}
        if node is None or node == here:
            # Read after the peers answered: the windows' ends differ by one round trip.
            parts[here] = {d["function"]: d for d in self.local(since, series, function)}
        skipped: dict[str, str] = {}
        for peer, result in zip(peers, results, strict=True):
            if isinstance(result, BaseException):
                why = "timed out" if isinstance(result, TimeoutError) else str(result)
                why = why or type(result).__name__
                log.warning("cluster: stats from %s: %s", peer.name, why)
                skipped[peer.name] = why
            else:
                parts[peer.name] = {d["function"]: d for d in result}
        return parts, skipped
