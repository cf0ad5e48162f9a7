"""Functions written for AWS Lambda, Google Cloud Functions and OpenFaaS, as those platforms'
documentation shows them, deployed unchanged (with --contract, or found by auto) and called over
HTTP, through a message-queue trigger and as asynchronous invocations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from syskit import Platform, wait_for, write
from trigkit import read_topic, unique

LAMBDA = """
import json


def lambda_handler(event, context):
    if "requestContext" not in event:
        # Invoked with a payload (a queue's message, an asynchronous invocation)
        return {"double": event["n"] * 2, "requestId": context.aws_request_id}
    params = event.get("queryStringParameters") or {}
    name = params.get("name", "world")
    if name == "missing":
        return {
            "statusCode": 404,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"message": "no such name"}),
        }
    if name == "boom":
        raise ValueError("cannot greet boom")
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json", "X-Custom": "yes"},
        "cookies": ["visited=1; Path=/"],
        "body": json.dumps(
            {
                "message": f"Hello, {name}!",
                "method": event["requestContext"]["http"]["method"],
                "path": event["rawPath"],
                "body": event.get("body"),
                "memory": context.memory_limit_in_mb,
                "function": context.function_name,
                "sameId": context.aws_request_id == event["requestContext"]["requestId"],
            }
        ),
    }
"""

LAMBDA_PLAIN = """
def handler(event, context):
    return "Hello from Lambda!"
"""

LAMBDA_V1 = """
import json


def handler(event, context):
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "text/plain"},
        "body": event["httpMethod"] + " " + event["path"] + " "
        + json.dumps(event["multiValueQueryStringParameters"]),
    }
"""

GCF_HTTP = """
import functions_framework
from flask import abort


@functions_framework.http
def hello_http(request):
    request_json = request.get_json(silent=True)
    request_args = request.args
    if request_json and "name" in request_json:
        name = request_json["name"]
    elif request_args and "name" in request_args:
        name = request_args["name"]
    else:
        abort(400)
    return f"Hello {name}!"
"""

GCF_EVENT = """
import functions_framework


@functions_framework.cloud_event
def subscribe(cloud_event):
    print(f"Received {cloud_event['type']} from {cloud_event['source']}: {cloud_event.data}")
"""

OPENFAAS_HTTP = """
def handle(event, context):
    if event.method == "POST":
        return {
            "statusCode": 201,
            "body": {"created": event.body.decode()},
            "headers": {"Location": "/items/1"},
        }
    return {"statusCode": 200, "body": "Hello from OpenFaaS! path=" + event.path}
"""

OPENFAAS_FLASK = """
def handle(req):
    return "Hello! You said: " + req
"""


def create(
    platform: Platform, directory: Path, name: str, filename: str, code: str, *args: str
) -> None:
    source = write(directory / name / filename, code)
    platform.ok("fn", "create", "--name", name, "--code", str(source), *args)


@pytest.fixture(scope="module")
def functions(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    directory = tmp_path_factory.mktemp("platforms")
    create(platform, directory, "pf-lambda", "lambda_function.py", LAMBDA, "--memory", "128Mi",
           "--entrypoint", "lambda_function.lambda_handler")  # fmt: skip
    create(platform, directory, "pf-lambda-plain", "app.py", LAMBDA_PLAIN,
           "--entrypoint", "app.handler", "--contract", "lambda")  # fmt: skip
    create(platform, directory, "pf-lambda-v1", "app.py", LAMBDA_V1,
           "--entrypoint", "app.handler", "--contract", "lambda-v1")  # fmt: skip
    create(platform, directory, "pf-gcf", "main.py", GCF_HTTP, "--entrypoint", "main.hello_http")
    create(platform, directory, "pf-gcf-named", "main.py", GCF_HTTP,
           "--entrypoint", "main.hello_http", "--contract", "gcf")  # fmt: skip
    create(platform, directory, "pf-gcf-event", "main.py", GCF_EVENT,
           "--entrypoint", "main.subscribe")  # fmt: skip
    create(platform, directory, "pf-of-http", "handler.py", OPENFAAS_HTTP,
           "--entrypoint", "handler.handle")  # fmt: skip
    create(platform, directory, "pf-of-flask", "handler.py", OPENFAAS_FLASK,
           "--entrypoint", "handler.handle", "--contract", "openfaas-flask")  # fmt: skip
    return platform


def contract_of(platform: Platform, name: str) -> Any:
    return json.dumps(platform.json_of("fn", "get", "--name", name))


# --- AWS Lambda --------------------------------------------------------------------------


def test_lambda_handler_over_http(functions: Platform) -> None:
    response = functions.request("POST", "/function/pf-lambda/greet?name=ada", content=b"hi")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-custom"] == "yes"
    assert response.headers["set-cookie"] == "visited=1; Path=/"
    assert response.json() == {
        "message": "Hello, ada!",
        "method": "POST",
        "path": "/greet",
        "body": "hi",
        "memory": "128",
        "function": "pf-lambda",
        "sameId": True,
    }
    assert '"lambda"' in contract_of(functions, "pf-lambda")  # found by auto


def test_lambda_status_codes_and_errors(functions: Platform) -> None:
    missing = functions.get("/function/pf-lambda?name=missing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.content == b'{"message": "no such name"}'
    boom = functions.get("/function/pf-lambda?name=boom")
    assert boom.status_code == 500
    assert boom.headers["content-type"] == "application/json"
    error = boom.json()
    assert error["errorMessage"] == "cannot greet boom"
    assert error["errorType"] == "ValueError"
    assert set(error) == {"errorMessage", "errorType", "requestId"}


def test_lambda_string_result_and_payload_1_0(functions: Platform) -> None:
    plain = functions.get("/function/pf-lambda-plain")
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "application/json"
    assert plain.content == b"Hello from Lambda!"
    v1 = functions.get("/function/pf-lambda-v1/x?a=1&a=2")
    assert v1.status_code == 200
    assert v1.headers["content-type"] == "text/plain"
    assert v1.content == b'GET /x {"a": ["1", "2"]}'


def test_lambda_through_a_message_queue_trigger(functions: Platform) -> None:
    topic, resp = unique("pf-in"), unique("pf-out")
    functions.ok("mqt", "create", "--name", "pf-lambda-mqt", "--function", "pf-lambda",
                 "--topic", topic, "--resptopic", resp)  # fmt: skip
    try:
        functions.ok("topic", "publish", "--topic", topic, "--body", '{"n": 21}')
        (answer,) = read_topic("embedded", resp, 1, data_dir=functions.data_dir)
        result = json.loads(answer.body)
        assert result["double"] == 42
        assert result["requestId"]
        assert answer.headers["content-type"] == "application/json"
    finally:
        functions.ok("mqt", "delete", "--name", "pf-lambda-mqt")


def test_lambda_as_an_asynchronous_invocation(functions: Platform) -> None:
    accepted = functions.request("POST", "/async-function/pf-lambda", content=b'{"n": 5}')
    assert accepted.status_code == 202, accepted.text
    invocation = accepted.json()["id"]

    def finished() -> Any:
        record = functions.get(f"/invocations/{invocation}").json()
        return record if record["status"] not in ("queued", "running") else None

    record = wait_for(finished, 60, "the asynchronous invocation to finish")
    assert record["status"] == "succeeded", record
    result = functions.get(f"/invocations/{invocation}/result")
    assert result.status_code == 200
    assert result.json() == {"double": 10, "requestId": invocation}


# --- Google Cloud Functions -------------------------------------------------------------


@pytest.mark.parametrize("name", ["pf-gcf", "pf-gcf-named"])
def test_gcf_http_function(functions: Platform, name: str) -> None:
    by_query = functions.get(f"/function/{name}?name=ada")
    assert by_query.status_code == 200, by_query.text
    assert by_query.headers["content-type"] == "text/html; charset=utf-8"
    assert by_query.content == b"Hello ada!"
    by_json = functions.request("POST", f"/function/{name}", json={"name": "bo"})
    assert by_json.content == b"Hello bo!"
    refused = functions.get(f"/function/{name}")
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "text/html; charset=utf-8"
    assert b"<title>400 Bad Request</title>" in refused.content
    assert '"gcf"' in contract_of(functions, name)


def test_gcf_cloud_event_function(functions: Platform) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "com.example.greeted",
        "ce-source": "//example/greeter",
        "ce-id": "e-1",
        "content-type": "application/json",
    }
    response = functions.request(
        "POST", "/function/pf-gcf-event", content=b'{"n": 1}', headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.content == b"OK"
    not_an_event = functions.request("POST", "/function/pf-gcf-event", json={"n": 2})
    assert not_an_event.status_code == 400
    topic = unique("pf-ce")
    functions.ok("mqt", "create", "--name", "pf-gcf-mqt", "--function", "pf-gcf-event",
                 "--topic", topic)  # fmt: skip
    try:
        functions.ok("topic", "publish", "--topic", topic, "--body", '{"n": 3}')
        expected = (
            "Received com.example.greeted from //example/greeter: {'n': 1}",
            f"Received fissile.mqt.message from //fissile/topics/{topic}: {{'n': 3}}",
        )

        def logged() -> bool:
            log = functions.ok("fn", "logs", "--name", "pf-gcf-event").out
            return all(line in log for line in expected)

        wait_for(logged, 60, "both events in the function's log")
    finally:
        functions.ok("mqt", "delete", "--name", "pf-gcf-mqt")


# --- OpenFaaS ---------------------------------------------------------------------------


def test_openfaas_http_template(functions: Platform) -> None:
    created = functions.request("POST", "/function/pf-of-http", content=b"thing")
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/items/1"
    assert created.headers["content-type"] == "application/json"
    assert created.content == b'{"created":"thing"}\n'
    hello = functions.get("/function/pf-of-http/sub")
    assert hello.status_code == 200
    assert hello.headers["content-type"] == "text/html; charset=utf-8"
    assert hello.content == b"Hello from OpenFaaS! path=/sub"
    assert '"openfaas-http"' in contract_of(functions, "pf-of-http")  # found by auto


def test_openfaas_flask_template(functions: Platform) -> None:
    response = functions.request("POST", "/function/pf-of-flask", content="héllo".encode())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.content == "Hello! You said: héllo".encode()
