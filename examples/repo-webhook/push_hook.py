"""repo-webhook: receives a repository's push events, GitHub-style, and announces each push.

The platform checks the signature before this function runs: its route has a
``webhook_secret``, so a request whose ``X-Hub-Signature-256`` is not the HMAC-SHA256 of the
body with that secret is answered 401 by the router and never reaches this code. What is left
here is reading the event: which repository, which branch, who pushed, which commits and files.

A summary of each push is published to the topic ``repo-pushes`` (``PUSH_TOPIC``), where a
build, a deployment or a chat notifier can pick it up.
"""

import os

BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"


class BadEvent(ValueError):
    """The payload is not a push event this function can read."""


def field(document, *path):
    value = document
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise BadEvent(f"no {'.'.join(path)}")
        value = value[key]
    return value


def summarize(event):
    """The facts of one push event, in a flat dict."""
    if not isinstance(event, dict):
        raise BadEvent("the body is not a JSON object")
    ref = field(event, "ref")
    if not isinstance(ref, str):
        raise BadEvent("ref is not a string")
    commits = event.get("commits") or []
    if not isinstance(commits, list) or not all(isinstance(c, dict) for c in commits):
        raise BadEvent("commits is not a list of objects")
    files = {"added": set(), "modified": set(), "removed": set()}
    for commit in commits:
        for kind, paths in files.items():
            paths.update(commit.get(kind) or [])
    if ref.startswith(BRANCH_PREFIX):
        kind, name = "branch", ref[len(BRANCH_PREFIX) :]
    elif ref.startswith(TAG_PREFIX):
        kind, name = "tag", ref[len(TAG_PREFIX) :]
    else:
        kind, name = "ref", ref
    return {
        "repository": field(event, "repository", "full_name"),
        kind: name,
        "deleted": bool(event.get("deleted")),
        "before": event.get("before"),
        "after": event.get("after"),
        "pusher": (event.get("pusher") or {}).get("name"),
        "commits": [
            {"id": c.get("id", "")[:12], "message": (c.get("message") or "").split("\n")[0]}
            for c in commits
        ],
        "files": {kind: sorted(paths) for kind, paths in files.items()},
    }


def main(request, context):
    event = request.headers.get("x-github-event", "push")
    if event not in ("push", "ping"):
        return {"ignored": event}, 202
    try:
        document = request.json()
    except ValueError as exc:  # not JSON, or not UTF-8
        return {"error": f"{event} event: the body is not JSON ({exc})"}, 400
    try:
        if event == "ping":
            # Sent once when the webhook is created: a 200 marks it as working.
            return {"pong": True, "hook_id": field(document, "hook_id")}
        push = summarize(document)
    except BadEvent as exc:
        return {"error": f"{event} event: {exc}"}, 400
    where = push.get("branch") or push.get("tag") or push.get("ref")
    print(f"push to {push['repository']} {where}: {len(push['commits'])} commit(s)", flush=True)
    context.publish(os.environ.get("PUSH_TOPIC", "repo-pushes"), push)
    return push
