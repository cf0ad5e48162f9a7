"""Revisions, rollback and pre-flight: a change that does not load is refused while the old
code keeps answering, a rollback serves the previous code within seconds without a build,
revisions say what changed, and only the newest N keep their builds."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from syskit import Platform, Spawn, error_of, wait_for, write

VERSIONED = """
def main(request):
    return "{version}"
"""

BROKEN = {
    "syntax": "def main(request)\n    return 'never'\n",
    "missing module": "import no_such_module_here\n\ndef main(request):\n    return 'never'\n",
    "exception at import": "raise RuntimeError('boom at import')\n\ndef main(request):\n"
    "    return 'never'\n",
}


@contextmanager
def steady_load(platform: Platform, path: str) -> Iterator[list[tuple[int, str]]]:
    """Call ``path`` in a loop (two callers) for as long as the block runs; the answers."""
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def call() -> None:
        with httpx.Client(base_url=platform.router_url, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.get(path)
                    answers.append((response.status_code, response.text))
                except httpx.HTTPError as exc:
                    answers.append((0, repr(exc)))

    callers = [threading.Thread(target=call, daemon=True) for _ in range(2)]
    for caller in callers:
        caller.start()
    try:
        wait_for(lambda: len(answers) >= 10, 30, "the steady load to get answers")
        yield answers
        seen = len(answers)
        wait_for(lambda: len(answers) >= seen + 10, 30, "answers after the attempt")
    finally:
        stop.set()
        for caller in callers:
            caller.join(30)


def revisions(platform: Platform, name: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = platform.json_of("fn", "revisions", "--name", name)
    return found


def test_broken_updates_are_refused_and_the_old_code_keeps_serving(
    platform: Platform, tmp_path: Path
) -> None:
    write(tmp_path / "good.py", VERSIONED.format(version="good"))
    platform.ok("fn", "create", "--name", "rev-steady", "--code", str(tmp_path / "good.py"))
    assert platform.get("/function/rev-steady").text == "good"
    owned_before = [p["name"] for p in platform.json_of("pkg", "list")]

    with steady_load(platform, "/function/rev-steady") as answers:
        for why, code in BROKEN.items():
            broken = write(tmp_path / f"broken-{why.replace(' ', '-')}.py", code)
            result = platform.cli("fn", "update", "--name", "rev-steady", "--code", str(broken))
            assert result.rc == 1, result
            assert "failed to load" in result.err, result
            assert "keeps serving" in result.err, result
            expected = {
                "syntax": "SyntaxError",
                "missing module": "no_such_module_here",
                "exception at import": "boom at import",
            }[why]
            assert expected in result.err, result
        # A broken setting is pre-flighted too: an entrypoint that is not there.
        result = platform.cli("fn", "update", "--name", "rev-steady", "--entrypoint", "nowhere")
        assert result.rc == 1, result
        assert "nowhere" in result.err, result

    bad = [answer for answer in answers if answer != (200, "good")]
    assert not bad, bad[:5]
    assert len(answers) > 20
    # The packages made for the refused updates are gone; the function's own stays.
    assert [p["name"] for p in platform.json_of("pkg", "list")] == owned_before
    assert [r["number"] for r in revisions(platform, "rev-steady")] == [1]
    # The pre-flights' instances were no crash of the function.
    status = platform.json_of("fn", "get", "--name", "rev-steady")["status"]
    assert (status["restarts"], status["failures_in_a_row"]) == (0, 0)

    # Through the API: a 4xx JSON error naming the load's error.
    function = platform.json_of("fn", "get", "--name", "rev-steady")
    body = {k: function[k] for k in ("name", "env", "package")}
    body["entrypoint"] = "missing_module_for_api.main"
    token = (platform.data_dir / "api-token").read_text().strip()
    response = httpx.put(
        f"{platform.api_url}/v1/functions/rev-steady",
        json=body,
        headers={"authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "load_failed"
    assert "missing_module_for_api" in error["message"]
    assert platform.get("/function/rev-steady").text == "good"


def test_rollback_restores_the_previous_revision_quickly(
    platform: Platform, tmp_path: Path
) -> None:
    write(tmp_path / "one.py", VERSIONED.format(version="one"))
    write(tmp_path / "two.py", VERSIONED.format(version="two"))
    platform.ok("fn", "create", "--name", "rev-back", "--code", str(tmp_path / "one.py"))
    assert platform.get("/function/rev-back").text == "one"
    platform.ok("fn", "update", "--name", "rev-back", "--code", str(tmp_path / "two.py"))
    assert platform.get("/function/rev-back").text == "two"
    builds = len(list((platform.data_dir / "deploy").iterdir()))

    # Timed from the API call, not the CLI's: a CLI process alone can take a second to start
    # on a loaded machine, and what is promised is the platform's rollback.
    token = (platform.data_dir / "api-token").read_text().strip()
    started = time.monotonic()
    answer = platform.http.post(
        f"{platform.api_url}/v1/functions/rev-back/rollback",
        json={},
        headers={"authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    wait_for(lambda: platform.get("/function/rev-back").text == "one", 2, "the previous revision")
    elapsed = time.monotonic() - started
    assert elapsed < 2, elapsed
    # Nothing was built: the revision's build was kept.
    assert len(list((platform.data_dir / "deploy").iterdir())) == builds

    listed = revisions(platform, "rev-back")
    assert [r["number"] for r in listed] == [1, 2, 3]
    assert listed[2]["changes"] == ["rollback to 1"]
    assert listed[2]["deploy"] == listed[0]["deploy"]
    assert platform.json_of("fn", "get", "--name", "rev-back")["revision"] == 3

    # Forward again, to a chosen revision.
    platform.ok("fn", "rollback", "--name", "rev-back", "--to", "2")
    assert platform.get("/function/rev-back").text == "two"
    missing = platform.cli("fn", "rollback", "--name", "rev-back", "--to", "99")
    assert missing.rc == 1, missing
    assert "revision '99' not found" in missing.err


def test_revisions_say_what_changed(platform: Platform, tmp_path: Path) -> None:
    write(tmp_path / "a.py", VERSIONED.format(version="a"))
    write(tmp_path / "b.py", VERSIONED.format(version="b"))
    platform.ok(
        "fn", "create", "--name", "rev-told", "--code", str(tmp_path / "a.py"), "--memory", "128Mi"
    )
    platform.ok("fn", "update", "--name", "rev-told", "--memory", "256Mi")
    platform.ok("fn", "update", "--name", "rev-told", "--env-var", "FOO=1")
    platform.ok("fn", "update", "--name", "rev-told", "--code", str(tmp_path / "b.py"))
    platform.ok("fn", "update", "--name", "rev-told", "--max-scale", "3")
    listed = revisions(platform, "rev-told")
    assert [r["changes"] for r in listed] == [
        ["created"],
        ["memory 128Mi→256Mi"],
        ["env-var FOO"],
        ["code"],
        ["max-scale 10→3"],
    ]
    assert listed[0]["source"] != listed[3]["source"]
    assert all(len(str(r["source"])) == 64 for r in listed)
    table = platform.ok("fn", "revisions", "--name", "rev-told").out
    assert "memory 128Mi→256Mi" in table
    assert "5*" in table  # the revision served
    assert platform.get("/function/rev-told").text == "b"


def test_only_the_newest_revisions_keep_their_builds(spawn: Spawn, tmp_path: Path) -> None:
    platform = spawn(None, "--keep-revisions", "2")
    deploy = platform.data_dir / "deploy"
    for version in range(1, 5):
        source = write(tmp_path / f"v{version}.py", VERSIONED.format(version=f"v{version}"))
        if version == 1:
            platform.ok("fn", "create", "--name", "rev-pruned", "--code", str(source))
        else:
            platform.ok("fn", "update", "--name", "rev-pruned", "--code", str(source))
        assert platform.get("/function/rev-pruned").text == f"v{version}"
    listed = revisions(platform, "rev-pruned")
    assert [(r["number"], r["pruned"]) for r in listed] == [
        (1, True),
        (2, True),
        (3, False),
        (4, False),
    ]
    kept = {str(r["deploy"]) for r in listed if not r["pruned"]}
    refused = platform.cli("fn", "rollback", "--name", "rev-pruned", "--to", "1")
    assert refused.rc == 1, refused
    assert "pruned" in refused.err
    platform.ok("fn", "rollback", "--name", "rev-pruned")
    assert platform.get("/function/rev-pruned").text == "v3"
    # Revision 5 runs revision 3's build: the same two builds are kept, the others deleted
    # (a build an instance of an older revision still ran is deleted at the next revision).
    wait_for(
        lambda: {p.name for p in deploy.iterdir()} == kept, 30, "the pruned builds to be deleted"
    )

    # After a restart the function serves its newest revision, and can still go back.
    platform.stop_cleanly()
    again = spawn(platform.data_dir, "--keep-revisions", "2")
    assert again.get("/function/rev-pruned").text == "v3"
    assert [r["number"] for r in revisions(again, "rev-pruned")] == [1, 2, 3, 4, 5]
    again.ok("fn", "rollback", "--name", "rev-pruned")
    assert again.get("/function/rev-pruned").text == "v4"


def test_a_package_build_that_does_not_load_is_refused(platform: Platform, tmp_path: Path) -> None:
    good = write(tmp_path / "good" / "main.py", VERSIONED.format(version="pkg-good")).parent
    bad = write(tmp_path / "bad" / "main.py", BROKEN["exception at import"]).parent
    platform.ok(
        "pkg", "create", "--name", "rev-shared", "--env", "python", "--src", str(good), "--wait"
    )
    platform.ok("fn", "create", "--name", "rev-on-shared", "--pkg", "rev-shared")
    assert platform.get("/function/rev-on-shared").text == "pkg-good"
    with steady_load(platform, "/function/rev-on-shared") as answers:
        result = platform.cli("pkg", "update", "--name", "rev-shared", "--src", str(bad), "--wait")
        assert result.rc == 1, result
        assert "boom at import" in result.err, result
    assert not [a for a in answers if a != (200, "pkg-good")]
    function = platform.json_of("fn", "get", "--name", "rev-on-shared")
    assert function["preflight"]["state"] == "refused"
    assert [r["number"] for r in revisions(platform, "rev-on-shared")] == [1]
    # A good build moves it on, as a revision of its own.
    newer = write(tmp_path / "newer" / "main.py", VERSIONED.format(version="pkg-newer")).parent
    platform.ok("pkg", "update", "--name", "rev-shared", "--src", str(newer), "--wait")
    assert platform.get("/function/rev-on-shared").text == "pkg-newer"
    listed = revisions(platform, "rev-on-shared")
    assert [r["changes"] for r in listed] == [["created"], ["code"]]
    assert "preflight" not in platform.json_of("fn", "get", "--name", "rev-on-shared") or (
        platform.json_of("fn", "get", "--name", "rev-on-shared")["preflight"] is None
    )


SPEC = """
apiVersion: fissile.dev/v1
kind: Function
name: rev-spec
code: ../app.py
"""


def test_spec_apply_fails_for_a_function_whose_new_code_does_not_load(
    platform: Platform, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    write(project / "app.py", VERSIONED.format(version="spec-one"))
    write(project / "specs" / "app.yaml", SPEC)
    platform.ok("spec", "init", "--dir", "specs", cwd=project)
    platform.ok("spec", "apply", "--wait", cwd=project)
    assert platform.get("/function/rev-spec").text == "spec-one"

    write(project / "app.py", BROKEN["missing module"])
    with steady_load(platform, "/function/rev-spec") as answers:
        failed = platform.cli("spec", "apply", "--wait", cwd=project)
        assert failed.rc == 1, failed
        assert "no_such_module_here" in failed.out + failed.err, failed
        assert "rev-spec" in failed.out + failed.err, failed
    assert not [a for a in answers if a != (200, "spec-one")]
    assert [r["number"] for r in revisions(platform, "rev-spec")] == [1]

    write(project / "app.py", VERSIONED.format(version="spec-two"))
    platform.ok("spec", "apply", "--wait", cwd=project)
    assert platform.get("/function/rev-spec").text == "spec-two"
    assert revisions(platform, "rev-spec")[-1]["changes"] == ["code"]


# --- Traffic splitting and canaries --------------------------------------------------------

FAILING = """
def main(request):
    return ("{version} failed", 500)
"""


def _calls(platform: Platform, path: str, count: int) -> Counter[str]:
    answers: Counter[str] = Counter()
    with httpx.Client(base_url=platform.router_url, timeout=30) as client:
        for _ in range(count):
            response = client.get(path)
            answers[f"{response.status_code} {response.text}"] += 1
    return answers


def _functions(platform: Platform, tmp_path: Path, **versions: str) -> None:
    for name, code in versions.items():
        source = write(tmp_path / f"{name}.py", code.format(version=name))
        platform.ok("fn", "create", "--name", name, "--code", str(source))


def test_a_route_splits_requests_by_weight(platform: Platform, tmp_path: Path) -> None:
    _functions(platform, tmp_path, **{"weight-a": VERSIONED, "weight-b": VERSIONED})
    platform.ok(
        "route", "create", "--name", "weighted", "--url", "/weighted",
        "--function", "weight-a=50", "--function", "weight-b=50",
    )  # fmt: skip
    route = platform.json_of("route", "get", "--name", "weighted")
    assert route["function_weights"] == {"weight-a": 50, "weight-b": 50}
    answers = _calls(platform, "/weighted", 400)
    assert set(answers) == {"200 weight-a", "200 weight-b"}, answers
    assert 160 <= answers["200 weight-a"] <= 240, answers  # 50 % ± 10 % of 400
    # One function again: every request goes to it.
    platform.ok("route", "update", "--name", "weighted", "--function", "weight-b")
    wait_for(lambda: platform.get("/weighted").text == "weight-b", 10, "the route to change")
    assert _calls(platform, "/weighted", 40) == {"200 weight-b": 40}
    # A function a route splits to cannot be deleted under it.
    platform.ok("route", "update", "--name", "weighted", "--function", "weight-a=1",
                "--function", "weight-b=3")  # fmt: skip
    refused = platform.cli("fn", "delete", "--name", "weight-a")
    assert refused.rc == 1 and "in use" in refused.err, refused
    bad = platform.cli("route", "update", "--name", "weighted", "--function", "weight-a=1",
                       "--function", "no-such-fn=1")  # fmt: skip
    assert bad.rc == 1 and "no-such-fn" in bad.err, bad


def _canary(platform: Platform, name: str) -> dict[str, Any]:
    found: dict[str, Any] = platform.json_of("canary", "get", "--name", name)
    return found


@contextmanager
def calling(platform: Platform, path: str) -> Iterator[Counter[str]]:
    """Call ``path`` in a loop while the block runs, so that a canary has requests to judge."""
    answers: Counter[str] = Counter()
    stop = threading.Event()

    def call() -> None:
        with httpx.Client(base_url=platform.router_url, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.get(path)
                    answers[f"{response.status_code} {response.text}"] += 1
                except httpx.HTTPError as exc:
                    answers[repr(exc)] += 1
                stop.wait(0.02)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    try:
        yield answers
    finally:
        stop.set()
        caller.join(30)


def test_a_canary_whose_new_function_fails_is_rolled_back(
    platform: Platform, tmp_path: Path
) -> None:
    _functions(platform, tmp_path, **{"canary-old": VERSIONED, "canary-bad": FAILING})
    platform.ok("route", "create", "--name", "canary-bad-route", "--url", "/canary-bad",
                "--function", "canary-old")  # fmt: skip
    with calling(platform, "/canary-bad") as answers:
        platform.ok(
            "canary", "create", "--name", "bad-canary", "--httptrigger", "canary-bad-route",
            "--newfunction", "canary-bad", "--oldfunction", "canary-old",
            "--increment-step", "30", "--increment-interval", "1s", "--failure-threshold", "10",
        )  # fmt: skip
        wait_for(
            lambda: _canary(platform, "bad-canary")["status"]["state"] != "pending",
            60,
            "the canary to be decided",
        )
    assert answers["500 canary-bad failed"] > 0, answers  # the new function was tried
    status = _canary(platform, "bad-canary")["status"]
    assert status["state"] == "failed", status
    assert status["weight"] == 0
    assert status["error_rate"] == 100.0
    assert "rolled back" in status["message"]
    route = platform.json_of("route", "get", "--name", "canary-bad-route")
    assert route["function_weights"] == {"canary-old": 100, "canary-bad": 0}
    assert _calls(platform, "/canary-bad", 40) == {"200 canary-old": 40}
    listed = platform.ok("canary", "list").out
    assert "bad-canary" in listed and "failed" in listed


def test_a_healthy_canary_reaches_100_percent(platform: Platform, tmp_path: Path) -> None:
    _functions(platform, tmp_path, **{"canary-v1": VERSIONED, "canary-v2": VERSIONED})
    platform.ok("route", "create", "--name", "canary-good-route", "--url", "/canary-good",
                "--function", "canary-v1")  # fmt: skip
    with calling(platform, "/canary-good") as answers:
        platform.ok(
            "canary", "create", "--name", "good-canary", "--httptrigger", "canary-good-route",
            "--newfunction", "canary-v2", "--oldfunction", "canary-v1",
            "--increment-step", "40", "--increment-interval", "1s",
        )  # fmt: skip
        wait_for(
            lambda: _canary(platform, "good-canary")["status"]["state"] != "pending",
            60,
            "the canary to be decided",
        )
    status = _canary(platform, "good-canary")["status"]
    assert (status["state"], status["weight"], status["error_rate"]) == ("succeeded", 100, 0.0)
    assert set(answers) == {"200 canary-v1", "200 canary-v2"}, answers  # never a failure
    assert _calls(platform, "/canary-good", 40) == {"200 canary-v2": 40}
    platform.ok("canary", "delete", "--name", "good-canary")
    assert "good-canary" not in {c["name"] for c in platform.json_of("canary", "list")}


@pytest.mark.slow
def test_a_canary_resumes_after_a_restart(spawn: Spawn, tmp_path: Path) -> None:
    platform = spawn(None)
    _functions(platform, tmp_path, **{"resume-v1": VERSIONED, "resume-v2": VERSIONED})
    platform.ok("route", "create", "--name", "resume-route", "--url", "/resume",
                "--function", "resume-v1")  # fmt: skip
    platform.ok(
        "canary", "create", "--name", "resume-canary", "--httptrigger", "resume-route",
        "--newfunction", "resume-v2", "--oldfunction", "resume-v1",
        "--increment-step", "25", "--increment-interval", "1s",
    )  # fmt: skip
    # Without requests the first step is taken (to 25 %) and the next one waits for some.
    wait_for(
        lambda: "waiting" in _canary(platform, "resume-canary")["status"]["message"],
        60,
        "the canary's first step",
    )
    assert _canary(platform, "resume-canary")["status"]["weight"] == 25
    platform.stop_cleanly()

    again = spawn(platform.data_dir)
    status = _canary(again, "resume-canary")["status"]
    assert (status["state"], status["weight"]) == ("pending", 25), status
    with calling(again, "/resume"):
        wait_for(
            lambda: _canary(again, "resume-canary")["status"]["state"] != "pending",
            60,
            "the resumed canary to finish",
        )
    assert _canary(again, "resume-canary")["status"]["state"] == "succeeded"
    assert _calls(again, "/resume", 20) == {"200 resume-v2": 20}


FISSION_CANARY = """
apiVersion: fission.io/v1
kind: DeploymentConfig
name: fission-canary
uid: 5c1e2f3a-8b7d-4e6f-a1b2-c3d4e5f6a7b8
---
apiVersion: fission.io/v1
kind: HTTPTrigger
metadata:
  name: fission-split
  namespace: default
spec:
  functionref:
    type: function-weights
    functionweights:
      fission-v1: 100
      fission-v2: 0
  method: GET
  relativeurl: /fission-split
---
apiVersion: fission.io/v1
kind: CanaryConfig
metadata:
  name: fission-canary
  namespace: default
spec:
  trigger: fission-split
  newfunction: fission-v2
  oldfunction: fission-v1
  weightincrement: 50
  duration: 1s
  failurethreshold: 10
  failureType: status-code
"""


def test_fission_canary_configs_apply_and_run(platform: Platform, tmp_path: Path) -> None:
    _functions(platform, tmp_path, **{"fission-v1": VERSIONED, "fission-v2": VERSIONED})
    specs = write(tmp_path / "project" / "specs" / "canary.yaml", FISSION_CANARY).parent
    applied = platform.ok("spec", "apply", "--dir", str(specs))
    assert "warning" not in applied.err, applied
    assert _calls(platform, "/fission-split", 10) == {"200 fission-v1": 10}
    with calling(platform, "/fission-split"):
        wait_for(
            lambda: _canary(platform, "fission-canary")["status"]["state"] != "pending",
            60,
            "the canary to be decided",
        )
    assert _canary(platform, "fission-canary")["status"]["state"] == "succeeded"
    assert _calls(platform, "/fission-split", 10) == {"200 fission-v2": 10}
    platform.ok("spec", "destroy", "--dir", str(specs))
    assert "fission-canary" not in {c["name"] for c in platform.json_of("canary", "list")}


def test_a_route_splits_between_a_function_and_its_previous_revision(
    platform: Platform, tmp_path: Path
) -> None:
    write(tmp_path / "one.py", VERSIONED.format(version="one"))
    write(tmp_path / "two.py", VERSIONED.format(version="two"))
    platform.ok("fn", "create", "--name", "rs-a", "--code", str(tmp_path / "one.py"))
    platform.ok("fn", "update", "--name", "rs-a", "--code", str(tmp_path / "two.py"))
    assert platform.get("/function/rs-a").text == "two"
    previous = revisions(platform, "rs-a")[0]
    builds = sorted(p.name for p in (platform.data_dir / "deploy").iterdir())

    platform.ok(
        "route", "create", "--name", "rev-split", "--url", "/rev-split",
        "--function", "rs-a=75", "--function", "rs-a@1=25",
    )  # fmt: skip
    route = platform.json_of("route", "get", "--name", "rev-split")
    assert route["function"] == "rs-a"
    assert route["function_weights"] == {"rs-a": 75, "rs-a@1": 25}
    answers = _calls(platform, "/rev-split", 400)
    assert set(answers) == {"200 one", "200 two"}, answers
    assert 60 <= answers["200 one"] <= 140, answers  # 25 % ± 10 % of 400
    # Served from revision 1's kept build: nothing was built.
    assert sorted(p.name for p in (platform.data_dir / "deploy").iterdir()) == builds
    made = platform.json_of("fn", "get", "--name", "rs-a-r1")
    assert made["deploy"] == previous["deploy"]
    assert made["labels"] == {"fissile.io/revision-of": "rs-a", "fissile.io/revision": "1"}
    assert "rs-a-r1 (revision 1 of rs-a)" in platform.ok("fn", "list").out

    # Users change the function, not its revision; neither goes while the route holds them.
    update = platform.cli("fn", "update", "--name", "rs-a-r1", "--memory", "256Mi")
    assert update.rc == 1 and "serves revision 1 of 'rs-a'" in update.err, update
    for name in ("rs-a", "rs-a-r1"):
        refused = platform.cli("fn", "delete", "--name", name)
        assert refused.rc == 1 and "in use by HTTP trigger 'rev-split'" in refused.err, refused
    unknown = platform.cli("route", "update", "--name", "rev-split", "--function", "rs-a=1",
                           "--function", "rs-a@9=1")  # fmt: skip
    assert unknown.rc == 1 and "revision 'rs-a@9' not found" in unknown.err, unknown

    # Without the split, the revision function goes.
    platform.ok("route", "update", "--name", "rev-split", "--function", "rs-a")
    names = [f["name"] for f in platform.json_of("fn", "list")]
    assert "rs-a-r1" not in names and "rs-a" in names, names
    assert not [p for p in platform.json_of("pkg", "list") if p["name"] == "rs-a-r1"]
    wait_for(lambda: platform.get("/rev-split").text == "two", 10, "the route to change")
    assert _calls(platform, "/rev-split", 20) == {"200 two": 20}
    platform.ok("route", "delete", "--name", "rev-split")
    platform.ok("fn", "delete", "--name", "rs-a")
