"""fissile/runtime/contracts/aws_lambda.py: Lambda handlers, their events and their results."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from contractkit import context_maker, request_maker

from fissile.runtime.contracts import bind
from fissile.runtime.request import Request
from fissile.runtime.response import InvalidResponse, Response

MiB = 1024**2


request = request_maker(path="/function/fn")
context = context_maker()


def echo(event: Any, context: Any) -> Any:
    return {"statusCode": 200, "body": json.dumps(event)}


def event_of(contract: str, req: Request) -> Any:
    response = bind(echo, "fn", contract=contract).call(req, context())
    assert response.status == 200
    return json.loads(response.body)


def call(handler: Any, req: Request | None = None, contract: str = "lambda") -> Response:
    return bind(handler, "fn", contract=contract, options={"memory": 512 * MiB}).call(
        req or request(), context()
    )


# --- events --------------------------------------------------------------------------


def test_payload_2_0_event() -> None:
    req = request(
        "POST",
        "/function/fn/items/7",
        "a=1&a=2&b=x%20y",
        {
            "host": "example.test:8080",
            "content-type": "application/json",
            "cookie": "s=1; theme=dark",
            "user-agent": "curl/8",
            "x-forwarded-for": "10.1.2.3",
        },
        b'{"n": 1}',
        {"id": "7"},
    )
    event = event_of("lambda", req)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/items/7"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert event["cookies"] == ["s=1", "theme=dark"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["user-agent"] == "curl/8"
    assert event["pathParameters"] == {"id": "7"}
    assert (event["body"], event["isBase64Encoded"]) == ('{"n": 1}', False)
    ctx = event["requestContext"]
    assert ctx["http"] == {
        "method": "POST",
        "path": "/items/7",
        "protocol": "HTTP/1.1",
        "sourceIp": "10.1.2.3",
        "userAgent": "curl/8",
    }
    assert (ctx["requestId"], ctx["accountId"], ctx["apiId"]) == ("inv-1", "fissile", "fissile")
    assert (ctx["domainName"], ctx["domainPrefix"]) == ("example.test", "example")
    assert ctx["stage"] == "$default"
    assert isinstance(ctx["timeEpoch"], int)
    assert ctx["time"].endswith(" +0000") and len(ctx["time"].split("/")) == 3


def test_payload_2_0_leaves_out_what_is_empty() -> None:
    event = event_of("lambda", request(path="/hello"))
    assert event["rawPath"] == "/hello"  # a route's path is not cut
    for absent in ("cookies", "queryStringParameters", "pathParameters", "body"):
        assert absent not in event
    assert event["isBase64Encoded"] is False


def test_binary_bodies_arrive_base64_encoded() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    event = event_of("lambda", request("POST", headers={"content-type": "image/png"}, body=png))
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == png
    form = request(
        "POST", headers={"content-type": "application/x-www-form-urlencoded"}, body=b"a=1"
    )
    assert event_of("lambda", form)["isBase64Encoded"] is True
    text = event_of("lambda", request("POST", body=b"plain words"))
    assert (text["body"], text["isBase64Encoded"]) == ("plain words", False)
    ld = request("POST", headers={"content-type": "application/ld+json"}, body=b"{}")
    assert event_of("lambda", ld)["isBase64Encoded"] is False


def test_payload_1_0_event() -> None:
    req = request("GET", "/function/fn/x", "a=1&a=2", {"cookie": "s=1", "user-agent": "ua"})
    event = event_of("lambda-v1", req)
    assert event["version"] == "1.0"
    assert (event["httpMethod"], event["path"], event["resource"]) == ("GET", "/x", "/x")
    assert event["queryStringParameters"] == {"a": "2"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"]}
    assert event["headers"]["cookie"] == "s=1"
    assert event["multiValueHeaders"]["user-agent"] == ["ua"]
    assert (event["body"], event["isBase64Encoded"]) == (None, False)
    assert event["pathParameters"] is None and event["stageVariables"] is None
    identity = event["requestContext"]["identity"]
    assert (identity["userAgent"], identity["sourceIp"]) == ("ua", "127.0.0.1")


# --- the context -----------------------------------------------------------------------


def test_lambda_context() -> None:
    seen: dict[str, Any] = {}

    def lambda_handler(event: Any, context: Any) -> Any:
        seen.update(
            {
                name: getattr(context, name)
                for name in (
                    "aws_request_id",
                    "function_name",
                    "function_version",
                    "invoked_function_arn",
                    "memory_limit_in_mb",
                    "log_group_name",
                    "log_stream_name",
                    "client_context",
                )
            }
        )
        seen["left"] = context.get_remaining_time_in_millis()
        seen["identity"] = context.identity.cognito_identity_id
        return {"statusCode": 204}

    assert call(lambda_handler).status == 204
    assert seen["aws_request_id"] == "inv-1"
    assert seen["function_name"] == "fn"
    assert seen["function_version"] == "$LATEST"
    assert seen["invoked_function_arn"].endswith(":function:fn")
    assert seen["memory_limit_in_mb"] == "512"
    assert seen["log_group_name"] == "/fissile/functions/fn"
    assert "[$LATEST]" in seen["log_stream_name"]
    assert seen["client_context"] is None and seen["identity"] is None
    assert 5_000 < seen["left"] <= 10_000


# --- results -------------------------------------------------------------------------


def test_proxy_response() -> None:
    def handler(event: Any, context: Any) -> Any:
        return {
            "statusCode": 404,
            "headers": {"content-type": "text/plain", "x-n": 1},
            "body": "no such item",
        }

    response = call(handler)
    assert response.status == 404
    assert response.body == b"no such item"
    assert ("content-type", "text/plain") in response.headers
    assert ("x-n", "1") in response.headers


def test_proxy_response_cookies_multi_value_headers_and_base64() -> None:
    def handler(event: Any, context: Any) -> Any:
        return {
            "statusCode": 200,
            "headers": {"x-a": "single", "x-b": "kept"},
            "multiValueHeaders": {"x-a": ["1", "2"]},
            "cookies": ["s=1; Path=/", "t=2"],
            "body": base64.b64encode(b"\x00\x01").decode(),
            "isBase64Encoded": True,
        }

    response = call(handler)
    assert response.body == b"\x00\x01"
    assert [v for k, v in response.headers if k == "x-a"] == ["1", "2"]
    assert ("x-b", "kept") in response.headers
    assert [v for k, v in response.headers if k == "set-cookie"] == ["s=1; Path=/", "t=2"]
    assert ("content-type", "application/json") in response.headers


def test_format_2_0_infers_a_200_json_answer() -> None:
    dict_answer = call(lambda event, context: {"message": "hi"})
    assert (dict_answer.status, dict_answer.body) == (200, b'{"message": "hi"}')
    assert dict_answer.headers == [("content-type", "application/json")]
    text = call(lambda event, context: "Hello from Lambda!")
    assert (text.status, text.body) == (200, b"Hello from Lambda!")
    assert text.headers == [("content-type", "application/json")]
    assert call(lambda event, context: None).body == b"null"
    assert call(lambda event, context: [1, 2]).body == b"[1, 2]"


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"statusCode": "200"}, "statusCode must be an integer"),
        ({"statusCode": 700}, "statusCode must be an integer"),
        ({"statusCode": 200, "body": {"a": 1}}, "body is a string"),
        ({"statusCode": 200, "body": "!!", "isBase64Encoded": True}, "not base64"),
        ({"statusCode": 200, "headers": ["x"]}, "must be objects"),
        ({"statusCode": 200, "cookies": "a=1"}, "cookies must be a list"),
    ],
)
def test_malformed_proxy_responses(result: Any, message: str) -> None:
    with pytest.raises(InvalidResponse, match=message):
        call(lambda event, context: result)


def test_format_1_0_requires_the_proxy_shape() -> None:
    with pytest.raises(InvalidResponse, match="without statusCode"):
        call(lambda event, context: {"message": "hi"}, contract="lambda-v1")
    with pytest.raises(InvalidResponse, match="not str"):
        call(lambda event, context: "hi", contract="lambda-v1")
    ok = call(lambda event, context: {"statusCode": 201, "body": "made"}, contract="lambda-v1")
    assert (ok.status, ok.body) == (201, b"made")


def test_an_exception_is_lambdas_error_shape(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(event: Any, context: Any) -> Any:
        raise KeyError("missing")

    response = call(handler)
    assert response.status == 500
    assert json.loads(response.body) == {
        "errorMessage": "'missing'",
        "errorType": "KeyError",
        "requestId": "inv-1",
    }
    assert ("content-type", "application/json") in response.headers
    err = capsys.readouterr().err
    assert "Traceback" in err and "in handler" in err and "aws_lambda.py" not in err


# --- calls that are not HTTP requests -----------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"x-fissile-trigger": "mqt", "x-fissile-topic": "t"},
        {"x-fissile-trigger": "timer"},
        {"x-fissile-async": "true"},
        {"x-fissile-chain-depth": "1", "x-fissile-caller": "other"},
    ],
)
def test_platform_calls_pass_the_payload(headers: dict[str, str]) -> None:
    seen: list[Any] = []

    def handler(event: Any, context: Any) -> Any:
        seen.append(event)
        return "done"

    response = call(handler, request("POST", headers=headers, body=b'{"order": 7}'))
    assert seen == [{"order": 7}]
    assert (response.status, response.body) == (200, b'"done"')
    assert response.headers == [("content-type", "application/json")]


def test_platform_call_payloads_that_are_not_json() -> None:
    seen: list[Any] = []

    def handler(event: Any, context: Any) -> Any:
        seen.append(event)

    mqt = {"x-fissile-trigger": "mqt"}
    assert call(handler, request("POST", headers=mqt, body=b"plain")).body == b"null"
    call(handler, request("POST", headers=mqt))
    assert seen == ["plain", {}]


def test_one_parameter_handler_gets_the_json_body() -> None:
    def handler(event: Any) -> Any:
        return {"sum": event["a"] + event["b"]}

    response = call(handler, request("POST", body=b'{"a": 2, "b": 3}'))
    assert (response.status, json.loads(response.body)) == (200, {"sum": 5})


def test_shapes_that_are_not_handlers() -> None:
    async def handler(event: Any, context: Any) -> Any:
        return None

    with pytest.raises(TypeError, match="plain def"):
        bind(handler, "fn", contract="lambda")
    with pytest.raises(TypeError, match="takes 3 arguments"):
        bind(lambda a, b, c: None, "fn", contract="lambda")


def test_auto_detects_lambda_handler() -> None:
    def lambda_handler(event: Any, context: Any) -> Any:
        return {"ok": True}

    assert bind(lambda_handler, "fn").contract == "lambda"
    assert bind(echo, "fn", contract="lambda-v1").contract == "lambda-v1"
