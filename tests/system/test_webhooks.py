"""Webhook triggers: an HTTP trigger with a secret only runs its function for requests whose
body carries a valid GitHub-style X-Hub-Signature-256; the secret is never shown."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from syskit import Platform, error_of, write
from trigkit import log_lines

SECRET = "s3cr3t-webhook-key"

HOOK = """
def main(request):
    print("HOOKED", len(request.body), flush=True)
    return {"got": request.json()}
"""


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture(scope="module")
def hooked(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    source = write(tmp_path_factory.mktemp("hook") / "hook.py", HOOK)
    platform.ok("fn", "create", "--name", "webhook-fn", "--code", str(source))
    platform.ok(
        "route",
        "create",
        "--name",
        "webhook-route",
        "--function",
        "webhook-fn",
        "--url",
        "/hooks/push",
        "--method",
        "POST",
        "--webhook-secret",
        SECRET,
    )
    return platform


def calls(platform: Platform) -> int:
    return len(log_lines(platform.data_dir, "webhook-fn", "HOOKED "))


def test_a_valid_signature_runs_the_function(hooked: Platform) -> None:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    response = hooked.request(
        "POST", "/hooks/push", content=body, headers={"X-Hub-Signature-256": signature(body)}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"got": {"ref": "refs/heads/main"}}


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "missing X-Hub-Signature-256"),
        ({"X-Hub-Signature-256": signature(b"another body")}, "does not match"),
        ({"X-Hub-Signature-256": signature(b'{"a": 1}', "wrong-secret")}, "does not match"),
        ({"X-Hub-Signature-256": "sha1=abcdef"}, "must be sha256="),
    ],
    ids=["missing", "other-body", "other-secret", "sha1"],
)
def test_bad_or_missing_signatures_get_401_before_the_function_runs(
    hooked: Platform, headers: dict[str, str], needle: str
) -> None:
    before = calls(hooked)
    response = hooked.request("POST", "/hooks/push", content=b'{"a": 1}', headers=headers)
    assert response.status_code == 401, response.text
    error = error_of(response)
    assert error["code"] == "bad_signature" and needle in error["message"]
    assert SECRET not in response.text
    assert calls(hooked) == before


def test_the_secret_is_never_shown(hooked: Platform, tmp_path: Path) -> None:
    for output in ("json", "yaml", "table"):
        shown = hooked.ok("route", "get", "--name", "webhook-route", "-o", output).out
        assert SECRET not in shown
    assert hooked.json_of("route", "get", "--name", "webhook-route")["webhook_secret"] == "********"
    # An update that does not name the secret keeps it.
    hooked.ok("route", "update", "--name", "webhook-route", "--method", "PUT")
    body = b'{"b": 2}'
    response = hooked.request(
        "PUT", "/hooks/push", content=body, headers={"X-Hub-Signature-256": signature(body)}
    )
    assert response.status_code == 200, response.text
    assert hooked.request("PUT", "/hooks/push", content=body).status_code == 401
