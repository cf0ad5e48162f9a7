"""Traces across hops: a client's ``traceparent`` reaches a function's ``context.trace_id``,
and stays the same through ``context.invoke``, an asynchronous invocation and a publish to an
MQ trigger; with ``--otlp-endpoint`` the platform exports a span per hop to a collector (here a
small OTLP/HTTP receiver in the test process). One dedicated platform for the module."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from syskit import Platform, wait_for, write
from trigkit import read_topic, unique

from fissile.observability import tracecontext

A = """
def main(request, context):
    reply = context.invoke("tr-b", {})
    return {"a": context.trace_id, "a_span": context.span_id, "b": reply.json()}
"""

B = """
def main(request, context):
    return {"trace": context.trace_id, "span": context.span_id,
            "header": request.headers.get("traceparent")}
"""

PUBLISHER = """
def main(request, context):
    context.publish(request.json()["topic"], {"published_in": context.trace_id})
    return {"trace": context.trace_id}
"""

SINK = """
def main(request, context):
    return {"trace": context.trace_id, **request.json()}
"""

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT = f"00-{TRACE}-00f067aa0ba902b7-01"


class Receiver:
    """An OTLP/HTTP collector of traces on a free loopback port: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        spans = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    data = gzip.decompress(data)
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(data)
                    for resource in request.resource_spans:
                        for scope in resource.scope_spans:
                            spans.extend(_span(span) for span in scope.spans)
                    reply = ExportTraceServiceResponse().SerializeToString()
                    self.send_response(200)
                else:
                    reply = b""
                    self.send_response(404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, trace_id: str) -> list[dict[str, Any]]:
        return [span for span in list(self.spans) if span["trace"] == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _span(span: Any) -> dict[str, Any]:
    attributes = {}
    for item in span.attributes:
        value = item.value
        attributes[item.key] = getattr(value, value.WhichOneof("value"))
    return {
        "name": span.name,
        "trace": span.trace_id.hex(),
        "span": span.span_id.hex(),
        "parent": span.parent_span_id.hex(),
        "attributes": attributes,
    }


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Platform]:
    directory = tmp_path_factory.mktemp("tracing")
    platform = Platform(directory / "data", ("--otlp-endpoint", receiver.url))
    # Batches leave every 100 ms rather than every 5 s: the test waits less.
    platform.extra_env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
    platform.start()
    for name, code in (("a", A), ("b", B), ("publisher", PUBLISHER), ("sink", SINK)):
        source = write(directory / f"tr_{name}.py", code)
        platform.ok("fn", "create", "--name", f"tr-{name}", "--code", str(source))
    yield platform
    try:
        platform.stop_cleanly()
        assert "Traceback" not in platform.stderr(), platform.stderr()[-5000:]
    finally:
        platform.abandon()


def call_chain(platform: Platform, headers: dict[str, str]) -> dict[str, Any]:
    response = platform.request("POST", "/function/tr-a", headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_client_s_trace_goes_through_context_invoke(traced: Platform) -> None:
    answer = call_chain(traced, {"traceparent": CLIENT})
    assert answer["a"] == answer["b"]["trace"] == TRACE
    # b's parent is the platform's span of the call, not a's.
    assert answer["b"]["span"] != answer["a_span"]
    assert tracecontext.parse(answer["b"]["header"]) == (TRACE, answer["b"]["span"], "01")


def test_without_a_traceparent_the_chain_still_shares_one_trace(traced: Platform) -> None:
    first, second = call_chain(traced, {}), call_chain(traced, {})
    assert first["a"] == first["b"]["trace"]
    assert second["a"] == second["b"]["trace"] != first["a"]
    bad = call_chain(traced, {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"})
    assert bad["a"] != "0" * 32 and bad["a"] == bad["b"]["trace"]


def test_an_async_invocation_runs_in_the_trace_it_was_created_in(traced: Platform) -> None:
    response = traced.request(
        "POST", "/async-function/tr-b", content=b"{}", headers={"traceparent": CLIENT}
    )
    assert response.status_code == 202, response.text
    invocation = response.json()["id"]

    def result() -> Any:
        answer = traced.get(f"/invocations/{invocation}/result")
        return answer.json() if answer.status_code == 200 else None

    ran = wait_for(result, 30, "the invocation's result")
    assert ran["trace"] == TRACE
    assert ran["span"] != "00f067aa0ba902b7"  # a span of the platform's: the attempt's


def test_a_publish_and_its_mq_trigger_keep_the_trace(traced: Platform) -> None:
    topic, answers = unique("traced"), unique("traced-out")
    traced.ok(
        "mqt", "create", "--name", unique("tr-mqt"), "--function", "tr-sink",
        "--topic", topic, "--resptopic", answers,
    )  # fmt: skip
    response = traced.request(
        "POST", "/function/tr-publisher", json={"topic": topic}, headers={"traceparent": CLIENT}
    )
    assert response.status_code == 200, response.text
    (answer,) = read_topic("embedded", answers, 1, data_dir=traced.data_dir, timeout=30)
    assert json.loads(answer.body) == {"trace": TRACE, "published_in": TRACE}
    # The response message continues the trace for whatever consumes it next.
    outgoing = tracecontext.parse(answer.headers["traceparent"])
    assert outgoing is not None and outgoing.trace_id == TRACE


def test_spans_of_a_call_chain_share_one_trace(traced: Platform, receiver: Receiver) -> None:
    trace = tracecontext.new_trace_id()
    answer = call_chain(
        traced, {"traceparent": tracecontext.format(trace, "00f067aa0ba902b7", "01")}
    )

    def exported() -> list[dict[str, Any]] | None:
        spans = receiver.of(trace)
        names = {s["name"] for s in spans}
        return spans if {"invoke tr-b", "route tr-a"} <= names else None

    spans = wait_for(exported, 30, "the span of context.invoke at the receiver")
    (invoke,) = [s for s in spans if s["name"] == "invoke tr-b"]
    assert invoke["attributes"]["fissile.function"] == "tr-b"
    assert invoke["attributes"]["http.response.status_code"] == 200
    assert isinstance(invoke["attributes"]["fissile.cold"], bool)
    assert invoke["attributes"]["fissile.instance"]
    # Its parent is the span a was delivered by (the router's, which continues the client's);
    # b was delivered by the invoke's span.
    (route,) = [s for s in spans if s["name"] == "route tr-a"]
    assert route["parent"] == "00f067aa0ba902b7" and route["span"] == answer["a_span"]
    assert route["attributes"]["http.response.status_code"] == 200
    assert invoke["parent"] == answer["a_span"]
    assert invoke["span"] == answer["b"]["span"]


def test_async_attempts_and_deliveries_are_spans_too(traced: Platform, receiver: Receiver) -> None:
    trace = tracecontext.new_trace_id()
    header = tracecontext.format(trace, "00f067aa0ba902b7", "01")
    topic = unique("traced-spans")
    traced.ok(
        "mqt", "create", "--name", unique("tr-mqs"), "--function", "tr-sink", "--topic", topic
    )
    traced.request("POST", "/async-function/tr-b", content=b"{}", headers={"traceparent": header})
    traced.request(
        "POST", "/function/tr-publisher", json={"topic": topic}, headers={"traceparent": header}
    )
    wanted = {"accept tr-b", "attempt 1 tr-b", f"publish {topic}", f"deliver {topic} to tr-sink"}

    def exported() -> dict[str, dict[str, Any]] | None:
        named = {s["name"]: s for s in receiver.of(trace)}
        return named if wanted <= set(named) else None

    named = wait_for(exported, 30, f"spans {sorted(wanted)} at the receiver")
    assert named["attempt 1 tr-b"]["parent"] == named["accept tr-b"]["span"]
    assert named["accept tr-b"]["parent"] == "00f067aa0ba902b7"
    assert named[f"deliver {topic} to tr-sink"]["parent"] == named[f"publish {topic}"]["span"]
