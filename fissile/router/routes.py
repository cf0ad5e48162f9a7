"""The route table: what function serves a method and path.

Lookups never scan every route: exact paths are one dict lookup, templated paths walk a trie of
path segments, and prefixes are tried from the longest, one dict lookup per segment. The table is
rebuilt from the triggers on each change (about a millisecond for a thousand routes), so
lookups need no locking.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

from fissile.models import HTTPTriggerSpec, template_segments
from fissile.revision_targets import resolve
from fissile.router.split import Split, targets


@dataclass(frozen=True, slots=True)
class Route:
    trigger: str
    function: str
    methods: frozenset[str]  # empty means any method
    path: str
    prefix: bool = False
    host: str | None = None  # None: any host
    # Several functions by weight: each request draws its own (``function`` is the heaviest).
    split: Split | None = field(default=None, compare=False)

    @property
    def functions(self) -> tuple[str, ...]:
        """Every function the route may call."""
        return (self.function,) if self.split is None else self.split.functions

    def allows(self, method: str) -> bool:
        return not self.methods or method in self.methods

    @classmethod
    def from_trigger(cls, trigger: HTTPTriggerSpec) -> Route:
        methods = frozenset() if trigger.methods == ["*"] else frozenset(trigger.methods)
        # Revision targets (a@3) are served by their revision functions (a-r3).
        weights = {resolve(target): w for target, w in trigger.function_weights.items()}
        function, split = targets(trigger.function, weights)
        prefix = trigger.prefix is not None
        path = trigger.prefix if trigger.prefix is not None else trigger.url
        assert path is not None
        return cls(trigger.name, function, methods, path, prefix, trigger.host, split)


@dataclass(slots=True)
class Match:
    route: Route
    params: dict[str, str]


class MethodNotAllowed(Exception):
    def __init__(self, allowed: Iterable[str]) -> None:
        super().__init__("method not allowed")
        self.allowed = sorted(set(allowed))


@dataclass(slots=True)
class _Param:
    name: str
    pattern: re.Pattern[str] | None
    node: _Node
    #: whether the pattern may match '/' and so span several segments
    spans: bool = False


@dataclass(slots=True)
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    params: list[_Param] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)


def _segments(path: str) -> list[str]:
    trimmed = path.strip("/")
    return trimmed.split("/") if trimmed else []


class RouteTable:
    def __init__(self, routes: Iterable[Route] = (), by_host: bool = True) -> None:
        self._exact: dict[str, list[Route]] = {}
        self._prefixes: dict[str, list[Route]] = {}
        self._root = _Node()
        # Routes bound to a host, in a table per host, tried before the others.
        self._hosts: dict[str, RouteTable] = {}
        hosted: dict[str, list[Route]] = {}
        for route in routes:
            if route.host is None or not by_host:
                self._add(route)
            else:
                hosted.setdefault(route.host, []).append(route)
        for host, bound in hosted.items():
            self._hosts[host] = RouteTable(bound, by_host=False)
        #: Some route is bound to a host: a match needs the request's Host (an attribute,
        #: read per request on the fast path).
        self.hosted = bool(self._hosts)

    def _add(self, route: Route) -> None:
        if route.prefix:
            self._prefixes.setdefault(route.path, []).append(route)
        elif "{" not in route.path:
            self._exact.setdefault(route.path, []).append(route)
        else:
            node = self._root
            for segment in template_segments(route.path.strip("/")):
                if segment.startswith("{"):
                    name, _, pattern = segment[1:-1].partition(":")
                    compiled = re.compile(pattern) if pattern else None
                    param = next(
                        (
                            p
                            for p in node.params
                            if p.name == name and (p.pattern and p.pattern.pattern) == pattern
                        ),
                        None,
                    )
                    if param is None:
                        # A pattern naming '/', or matching it ([^x]+, .+), is tried on
                        # several segments, as gorilla/mux's whole-path regex would.
                        spans = compiled is not None and (
                            "/" in pattern or compiled.search("/") is not None
                        )
                        param = _Param(name, compiled, _Node(), spans)
                        # Constrained parameters are tried before unconstrained ones.
                        node.params.append(param)
                        node.params.sort(key=lambda p: p.pattern is None)
                    node = param.node
                else:
                    node = node.literals.setdefault(segment, _Node())
            node.routes.append(route)

    def match(self, method: str, path: str, host: str | None = None) -> Match | None:
        """The route for ``method`` and ``path`` (and ``host``: a route bound to it first,
        then the routes of any host); raises ``MethodNotAllowed`` when only the method is
        wrong, returns None when no route has the path."""
        if self._hosts and host is not None:
            table = self._hosts.get(host)
            if table is not None:
                try:
                    found = table.match(method, path)
                except MethodNotAllowed as exc:
                    try:
                        found = self._match(method, path)
                    except MethodNotAllowed as other:
                        raise MethodNotAllowed([*exc.allowed, *other.allowed]) from None
                    if found is None:
                        raise
                if found is not None:
                    return found
        return self._match(method, path)

    def _match(self, method: str, path: str) -> Match | None:
        normalized = path.rstrip("/") or "/"
        allowed: list[str] = []
        implicit_head: Match | None = None
        for route, params in self._candidates(normalized):
            if route.allows(method):
                return Match(route, params)
            if method == "HEAD" and implicit_head is None and "GET" in route.methods:
                # A GET route answers HEAD too, unless a route names HEAD itself.
                implicit_head = Match(route, params)
            allowed.extend(route.methods)
        if implicit_head is not None:
            return implicit_head
        if allowed:
            raise MethodNotAllowed(allowed)
        return None

    def _candidates(self, path: str) -> Iterator[tuple[Route, dict[str, str]]]:
        for route in self._exact.get(path, ()):
            yield route, {}
        segments = _segments(path)
        if self._root.literals or self._root.params:
            for node, params in _walk(self._root, segments, 0, {}):
                for route in node.routes:
                    yield route, params
        if self._prefixes:
            for end in range(len(segments), -1, -1):
                prefix = "/" + "/".join(segments[:end])
                for route in self._prefixes.get(prefix, ()):
                    yield route, {}


def _walk(
    node: _Node, segments: list[str], index: int, params: dict[str, str]
) -> Iterator[tuple[_Node, dict[str, str]]]:
    if index == len(segments):
        if node.routes:
            yield node, params
        return
    segment = segments[index]
    child = node.literals.get(segment)
    if child is not None:
        yield from _walk(child, segments, index + 1, params)
    for param in node.params:
        if param.spans:
            assert param.pattern is not None
            # Longest first: the whole-path regex gorilla/mux builds is greedy.
            for end in range(len(segments), index, -1):
                value = "/".join(segments[index:end])
                if param.pattern.fullmatch(value):
                    yield from _walk(param.node, segments, end, {**params, param.name: value})
        elif param.pattern is None or param.pattern.fullmatch(segment):
            yield from _walk(param.node, segments, index + 1, {**params, param.name: segment})


def find_conflict(route: Route, existing: Iterable[Route]) -> Route | None:
    """An existing route that would serve the same path and method as ``route``."""
    for other in existing:
        if other.trigger == route.trigger or other.prefix != route.prefix:
            continue
        if other.host != route.host:
            continue  # a host's own route comes before the one for any host
        if _shape(other.path) != _shape(route.path):
            continue
        if not other.methods or not route.methods or other.methods & route.methods:
            return other
    return None


def _shape(path: str) -> str:
    """A template with parameter names erased: /a/{id} and /a/{key} serve the same paths."""
    return re.sub(r"\{[^}:]+(:([^}]*))?\}", lambda m: "{" + (m.group(2) or "") + "}", path)


def request_host(value: bytes) -> str:
    """A Host header's name, as routes are bound to it: lower case, no port, no final dot."""
    host = value.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0].rstrip(".") if ":" in host else host.rstrip(".")


def request_path(target: bytes) -> str | None:
    """A request target's path, percent-decoded; None when it is no origin-form ASCII path."""
    if not target.startswith(b"/"):
        return None
    try:
        path = target.partition(b"?")[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    return unquote(path) if "%" in path else path
