"""Unit level: the push receiver as a function object, with a recording context."""

import json
from pathlib import Path

import push_hook

from fissile.testing import FakeContext, Result, call, make_context, make_request

SAMPLE = json.loads((Path(__file__).resolve().parent.parent / "sample-push.json").read_text())


def push(body: object, event: str = "push") -> tuple[Result, FakeContext]:
    context = make_context("repo-webhook")
    request = make_request("POST", "/hooks/repo", json=body, headers={"X-GitHub-Event": event})
    return call(push_hook.main, request, context), context


def test_a_push_is_summarized_and_published() -> None:
    result, context = push(SAMPLE)
    assert result.status == 200
    summary = result.json()
    assert summary == {
        "repository": "octo-org/hello-world",
        "branch": "main",
        "deleted": False,
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5",
        "pusher": "ann",
        "commits": [
            {"id": "0d1a26e67d8f", "message": "Add the greeting"},
            {"id": "59b20b8d5c6f", "message": "Drop the old greeting"},
        ],
        "files": {
            "added": ["greeting.py"],
            "modified": ["README.md", "greeting.py"],
            "removed": ["hello.txt"],
        },
    }
    assert [(p.topic, p.json()) for p in context.published] == [("repo-pushes", summary)]


def test_a_tag_and_a_deleted_branch() -> None:
    tag, _ = push({**SAMPLE, "ref": "refs/tags/v1.0", "commits": []})
    assert tag.json()["tag"] == "v1.0" and "branch" not in tag.json()
    gone, _ = push({**SAMPLE, "ref": "refs/heads/old", "deleted": True, "commits": []})
    assert gone.json()["deleted"] is True and gone.json()["files"]["added"] == []


def test_ping_and_other_events() -> None:
    pong, context = push({"zen": "Keep it simple.", "hook_id": 42}, event="ping")
    assert (pong.status, pong.json()) == (200, {"pong": True, "hook_id": 42})
    ignored, _ = push({"action": "opened"}, event="issues")
    assert (ignored.status, ignored.json()) == (202, {"ignored": "issues"})
    assert context.published == []


def test_unreadable_events_are_a_400_with_the_reason() -> None:
    no_repository, context = push({"ref": "refs/heads/main", "commits": []})
    assert no_repository.status == 400
    assert no_repository.json() == {"error": "push event: no repository.full_name"}
    assert context.published == []
    not_a_list, _ = push({**SAMPLE, "commits": "many"})
    assert not_a_list.json() == {"error": "push event: commits is not a list of objects"}
    request = make_request("POST", "/hooks/repo", body="not json")
    garbage = call(push_hook.main, request, make_context())
    assert garbage.status == 400
    assert garbage.json()["error"].startswith("push event: the body is not JSON (")
