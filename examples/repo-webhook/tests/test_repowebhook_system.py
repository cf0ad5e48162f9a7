"""System level: the specs applied to a throw-away platform. The route's webhook secret is
checked by the router: a request signed with it runs the function, a missing or wrong
signature is answered 401 and never reaches it."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
import yaml

from fissile.testing import Platform

pytestmark = [pytest.mark.slow, pytest.mark.fissile_specs("../specs")]

EXAMPLE = Path(__file__).resolve().parent.parent
SAMPLE = (EXAMPLE / "sample-push.json").read_bytes()


def secret() -> str:
    """The secret the example's route declares."""
    documents = yaml.safe_load_all((EXAMPLE / "specs" / "repo-webhook.yaml").read_text())
    route = next(d for d in documents if d["kind"] == "HTTPTrigger")
    return str(route["webhook_secret"])


def signed(body: bytes, key: str) -> dict[str, str]:
    digest = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={digest}"}


def test_signed_pushes_run_the_function_and_others_are_refused(
    fissile_platform_fn: Platform,
) -> None:
    platform = fissile_platform_fn
    # Refused first: wrong secret, a body other than the one signed, no signature.
    forged = platform.post("/hooks/repo", content=SAMPLE, headers=signed(SAMPLE, "guess"))
    tampered = platform.post(
        "/hooks/repo", content=SAMPLE.replace(b"ann", b"eve"), headers=signed(SAMPLE, secret())
    )
    unsigned = platform.post("/hooks/repo", content=SAMPLE, headers={"X-GitHub-Event": "push"})
    for refused in (forged, tampered, unsigned):
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "bad_signature"
    assert "does not match the body" in forged.json()["error"]["message"]
    assert "missing X-Hub-Signature-256" in unsigned.json()["error"]["message"]

    accepted = platform.post("/hooks/repo", content=SAMPLE, headers=signed(SAMPLE, secret()))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["branch"] == "main" and len(accepted.json()["commits"]) == 2

    # The function ran once: for the signed push only.
    line = "push to octo-org/hello-world main: 2 commit(s)"
    platform.wait_for(
        lambda: line in platform.logs("repo-webhook"), what="the push's line in the function's log"
    )
    logs = platform.logs("repo-webhook")
    assert logs.count("push to ") == 1, logs

    # And its summary is on the topic for whoever builds or deploys next.
    consumed = platform.cli("topic", "consume", "--topic", "repo-pushes", "--wait", "5s").out
    assert [json.loads(line) for line in consumed.splitlines()] == [accepted.json()]
