"""Integration level: the push receiver in a real instance subprocess; its
``context.publish`` reaches the fake platform of ``local_instance``."""

from pathlib import Path

from fissile.testing import local_instance

EXAMPLE = Path(__file__).resolve().parent.parent


def test_a_push_in_an_instance() -> None:
    sample = (EXAMPLE / "sample-push.json").read_bytes()
    with local_instance(EXAMPLE / "push_hook.py", env={"PUSH_TOPIC": "pushes-here"}) as instance:
        answer = instance.post("/hooks/repo", body=sample, headers={"X-GitHub-Event": "push"})
        assert answer.status == 200, answer.text
        assert answer.json()["repository"] == "octo-org/hello-world"
        refused = instance.post("/hooks/repo", body=b"{}", headers={"X-GitHub-Event": "push"})
        assert (refused.status, refused.json()) == (400, {"error": "push event: no ref"})

        assert [p.topic for p in instance.published] == ["pushes-here"]
        assert instance.published[0].json() == answer.json()
        assert "push to octo-org/hello-world main: 2 commit(s)" in instance.output()
