"""Integration level: each function in a real instance subprocess (the runtime of
``fissile up``), without a platform."""

from pathlib import Path

from fissile.testing import invoke_local, local_instance, make_request

EXAMPLE = Path(__file__).resolve().parent.parent


def test_the_task_in_an_instance() -> None:
    with local_instance(EXAMPLE / "long_task.py") as instance:
        done = instance.post("/", json={"limit": 1000, "seconds": 0})
        assert done.status == 200, done.text
        assert done.json()["primes"] == 168
        refused = instance.post("/", json={"limit": 0})
        assert refused.status == 400
        assert "limit must be within" in refused.json()["error"]
        # An empty body takes the defaults: primes below 200 000, in at least 1.5 s.
        default = instance.post("/")
        assert default.json()["primes"] == 17984 and default.json()["seconds"] >= 1.5


def test_the_page_in_an_instance() -> None:
    page = invoke_local(EXAMPLE / "page", make_request("GET", "/"), entrypoint="page.main")
    assert page.status == 200
    assert page.content_type == "text/html; charset=utf-8"
    assert "<title>fissile: a long task from the browser</title>" in page.text
