"""Spans recorded by observability/tracing.py, read back from the SDK's in-memory exporter."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from fissile.observability import tracecontext, tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SPAN = "b7ad6b7169203331"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(exporter))
    yield exporter
    tracing.shutdown()


def test_a_span_keeps_the_ids_it_was_given(exported: InMemorySpanExporter) -> None:
    tracing.record_span(
        "invoke b", TRACE, PARENT, SPAN, 1_000, 5_000, {"fissile.function": "b"}, kind="client"
    )
    (span,) = exported.get_finished_spans()
    assert span.name == "invoke b"
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == TRACE
    assert f"{span.context.span_id:016x}" == SPAN
    assert f"{span.parent.span_id:016x}" == PARENT
    assert (span.start_time, span.end_time) == (1_000, 5_000)
    assert span.kind is SpanKind.CLIENT
    assert span.attributes == {"fissile.function": "b"}
    assert span.status.status_code is StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "fissile"


def test_roots_errors_and_unsampled_parents(exported: InMemorySpanExporter) -> None:
    tracing.record_span("timer t: f", TRACE, None, SPAN, 1, 2, {}, error="status 500")
    (root,) = exported.get_finished_spans()
    assert root.parent is None and root.context is not None
    assert f"{root.context.trace_id:032x}" == TRACE
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "status 500"
    # A caller that did not sample its trace is followed: nothing exported.
    tracing.record_span("call f", TRACE, PARENT, SPAN, 1, 2, {}, flags="00")
    assert len(exported.get_finished_spans()) == 1


def test_hops_follow_their_traceparent(exported: InMemorySpanExporter) -> None:
    hop = tracing.hop(f"00-{TRACE}-{PARENT}-01")
    assert (hop.trace_id, hop.parent_id, hop.flags) == (TRACE, PARENT, "01")
    assert hop.span_id != PARENT
    assert hop.traceparent == f"00-{TRACE}-{hop.span_id}-01"
    again = hop.again()
    assert (again.trace_id, again.parent_id) == (TRACE, PARENT)
    assert again.span_id != hop.span_id
    hop.record("call f", 1, {"fissile.function": "f"})
    (span,) = exported.get_finished_spans()
    assert span.context is not None and f"{span.context.span_id:016x}" == hop.span_id
    for missing in (None, "", "00-not-a-header"):
        fresh = tracing.hop(missing)
        assert fresh.parent_id is None and tracecontext.parse(fresh.traceparent) is not None
        assert fresh.trace_id != TRACE


def test_off_records_nothing_and_imports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    tracing.shutdown()
    assert not tracing.enabled()

    def refuse(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry"):
            raise AssertionError(f"imported {name} while tracing is off")
        return real_import(name, *args, **kwargs)

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", refuse)
    tracing.record_span("call f", TRACE, PARENT, SPAN, 1, 2, {})
    tracing.hop(None).record("call f", 1, {})


def test_without_the_extra_configure_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(tracing.TracingUnavailable, match=r"fissile\[otlp\]"):
        tracing.configure("http://127.0.0.1:4318")
    assert not tracing.enabled()
