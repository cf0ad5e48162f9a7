"""Spans of the platform's hops, exported over OTLP/HTTP when ``fissile up --otlp-endpoint`` is
given, and nothing at all otherwise.

The platform does not trace itself with OpenTelemetry's context machinery: each place that
completes a hop (the router, the platform socket, an async attempt, an MQ delivery, a timer)
already knows its trace id, its parent and the span id it sent the function in
``traceparent``, and calls ``record_span`` once the hop ends. Disabled, that is one global read;
the SDK is imported only by ``configure``, so a platform without the ``otlp`` extra never
imports it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from fissile.observability import tracecontext

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import Tracer

Attributes = Mapping[str, str | bool | int | float]

SERVICE_NAME = "fissile"
# The OTLP/HTTP path of traces under a collector's base URL (as OTEL_EXPORTER_OTLP_ENDPOINT).
TRACES_PATH = "/v1/traces"


class TracingUnavailable(Exception):
    """The ``otlp`` extra (OpenTelemetry's SDK and OTLP exporter) is not installed."""


class _State:
    # The tracer and the _PresetIds it draws from, together: read in one go, so a shutdown on
    # another thread never leaves one without the other.
    active: tuple[Tracer, Any] | None = None
    processor: SpanProcessor | None = None


_state = _State()


def enabled() -> bool:
    """Whether spans are exported: callers skip even reading the clock when not."""
    return _state.active is not None


def configure(endpoint: str) -> None:
    """Export spans to the OTLP/HTTP collector at ``endpoint`` (its base URL, or the full
    ``/v1/traces`` URL), batched by the SDK's BatchSpanProcessor on a thread of its own."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            "--otlp-endpoint needs OpenTelemetry's SDK and OTLP exporter: "
            f"pip install 'fissile[otlp]' ({exc})"
        ) from None
    url = endpoint.rstrip("/")
    if not url.endswith(TRACES_PATH):
        url += TRACES_PATH
    install(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))


def install(processor: SpanProcessor) -> None:
    """Send spans to ``processor`` (tests use a SimpleSpanProcessor on an in-memory exporter)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    shutdown()
    ids = _preset_ids()
    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE_NAME}), id_generator=ids
    )
    provider.add_span_processor(processor)
    _state.processor = processor
    _state.active = (provider.get_tracer("fissile"), ids)


def shutdown() -> None:
    """Export what is still batched, then stop exporting."""
    processor = _state.processor
    _state.active = _state.processor = None
    if processor is not None:
        processor.shutdown()


def record_span(
    name: str,
    trace_id: str,
    parent_id: str | None,
    span_id: str,
    start_ns: int,
    end_ns: int,
    attributes: Attributes,
    *,
    flags: str = tracecontext.SAMPLED,
    error: str | None = None,
    kind: str = "internal",
) -> None:
    """One finished span (ids as in ``traceparent``: hex). ``parent_id`` None makes a root;
    ``flags`` are the parent's (a parent that did not sample is followed); ``error`` marks the
    span failed with that description; ``kind``: internal, server, client, producer, consumer.
    A no-op when tracing is off."""
    active = _state.active
    if active is None:
        return
    tracer, ids = active
    from opentelemetry import trace
    from opentelemetry.trace.status import Status, StatusCode

    context = None
    if parent_id is not None:
        parent = trace.SpanContext(
            int(trace_id, 16),
            int(parent_id, 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(int(flags, 16)),
        )
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    ids.trace_id = int(trace_id, 16)
    ids.span_id = int(span_id, 16)
    span = tracer.start_span(
        name,
        context=context,
        kind=trace.SpanKind[kind.upper()],
        attributes=dict(attributes),
        start_time=start_ns,
    )
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=end_ns)


def _preset_ids() -> Any:
    """An IdGenerator handing out the ids ``record_span`` was given: the spans must carry the
    ids the functions already saw in ``traceparent``. Only the event loop records spans, so one
    slot each is enough."""
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class PresetIds(IdGenerator):
        trace_id = 0
        span_id = 0

        def generate_trace_id(self) -> int:
            return self.trace_id

        def generate_span_id(self) -> int:
            return self.span_id

    return PresetIds()


class Hop(NamedTuple):
    """One hop of a trace: the span the platform makes for it, and the ``traceparent`` it sends
    on (naming that span as the receiver's parent)."""

    trace_id: str
    parent_id: str | None  # None: the hop starts the trace
    span_id: str
    flags: str

    @property
    def traceparent(self) -> str:
        return tracecontext.format(self.trace_id, self.span_id, self.flags)

    def again(self) -> Hop:
        """Another try of the same hop: same trace and parent, a span of its own."""
        return self._replace(span_id=tracecontext.new_span_id())

    def record(
        self,
        name: str,
        start_ns: int,
        attributes: Attributes,
        *,
        error: str | None = None,
        kind: str = "internal",
    ) -> None:
        """Record the hop's span, ending now (a no-op when tracing is off)."""
        if _state.active is None:
            return
        record_span(
            name,
            self.trace_id,
            self.parent_id,
            self.span_id,
            start_ns,
            time.time_ns(),
            attributes,
            flags=self.flags,
            error=error,
            kind=kind,
        )


def hop(traceparent: str | None) -> Hop:
    """The next hop after ``traceparent`` (a header's value), or the first of a new trace when
    it is missing or invalid."""
    parent = tracecontext.parse(traceparent) if traceparent else None
    if parent is None:
        return Hop(
            tracecontext.new_trace_id(), None, tracecontext.new_span_id(), tracecontext.SAMPLED
        )
    return Hop(parent.trace_id, parent.parent_id, tracecontext.new_span_id(), parent.flags)
