"""The in-platform caller's request encoding, and the span it records for a hop."""

from __future__ import annotations

import importlib
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from fissile.executor.connection import InstanceResponse
from fissile.executor.instance import Instance
from fissile.observability import tracing
from fissile.router.invoke import encode_request

# The package exports the function under the module's name.
invoke_module = importlib.import_module("fissile.router.invoke")


def test_request_carries_metadata_and_drops_reserved_headers() -> None:
    data = encode_request(
        "hello",
        "POST",
        "/x?y=1",
        {"X-Fissile-Timeout": "999", "Content-Length": "5", "X-Mine": "a", "Evil": "a\r\nb: c"},
        b"hi",
        3.0,
        "abc",
    )
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /x?y=1 HTTP/1.1"
    assert "X-Mine: a" in lines
    assert "x-fissile-timeout: 3" in lines and "X-Fissile-Timeout: 999" not in lines
    assert "content-length: 2" in lines and "Content-Length: 5" not in lines
    assert not any(line.startswith("Evil") for line in lines)
    assert "host: fissile" in lines
    assert body == b"hi"


def test_a_hop_s_traceparent_replaces_the_callers() -> None:
    mine = "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01"
    data = encode_request(
        "hello", "GET", "/", [("Traceparent", "00-old"), ("x-mine", "a")], b"", 3.0, "abc", mine
    )
    lines = data.decode().split("\r\n")
    assert f"traceparent: {mine}" in lines
    assert not any("00-old" in line for line in lines)
    kept = encode_request("hello", "GET", "/", [("traceparent", "00-old")], b"", 3.0, "abc")
    assert "traceparent: 00-old" in kept.decode().split("\r\n")  # no hop: passed as it came


async def test_a_hop_is_recorded_with_the_instance_and_whether_it_was_cold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(exporter))
    sent: list[str | None] = []

    async def served(*args: Any) -> InstanceResponse:
        *_, on_acquire, traceparent = args
        sent.append(traceparent)
        fresh = Instance("i-1", "python", "/nowhere", "token")
        fresh.ready_at = time.monotonic()  # made while the request waited: a cold start
        if on_acquire is not None:  # given only when spans are recorded
            on_acquire(fresh)
        return InstanceResponse(503, [], b"", True)

    monkeypatch.setattr(invoke_module, "_invoke", served)
    try:
        hop = tracing.hop("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        await invoke_module.invoke(None, "f", hop=hop, span="attempt 1")  # type: ignore[arg-type]
        tracing.shutdown()
        await invoke_module.invoke(None, "f", hop=hop)  # type: ignore[arg-type]
    finally:
        tracing.shutdown()
    assert sent == [hop.traceparent, hop.traceparent]  # sent whether spans are exported or not
    (span,) = exporter.get_finished_spans()
    assert span.name == "attempt 1 f"
    assert span.attributes == {
        "fissile.function": "f",
        "http.response.status_code": 503,
        "fissile.instance": "i-1",
        "fissile.cold": True,
    }
    assert span.status.status_code is StatusCode.ERROR
