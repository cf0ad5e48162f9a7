"""Declarative specs end to end: init, validate, diff, apply (and re-apply), --delete, destroy,
a failed apply finished by a second one, and a spec directory written in Fission's format."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from syskit import Platform, write
from test_packages import check_greeting, make_source

APP = """
apiVersion: fissile.dev/v1
kind: Function
name: spec-alpha
code: ../alpha.py
min_scale: 1
---
apiVersion: fissile.dev/v1
kind: Package
name: spec-beta-pkg
source: ../beta
---
apiVersion: fissile.dev/v1
kind: Function
name: spec-beta
package: spec-beta-pkg
entrypoint: beta.main
min_scale: 1
timeout: 10s
---
apiVersion: fissile.dev/v1
kind: HTTPTrigger
name: spec-alpha-route
function: spec-alpha
url: /spec-alpha
"""
BETA_ROUTE = """
---
apiVersion: fissile.dev/v1
kind: HTTPTrigger
name: spec-beta-route
function: spec-beta
url: /spec-beta/{who}
methods: [GET, POST]
"""


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def running(platform: Platform, function: str, not_in: frozenset[int] = frozenset()) -> set[int]:
    """The pids of the function's instances once it has one that is not in ``not_in``."""
    deadline = time.monotonic() + 30
    while True:
        status = platform.json_of("fn", "get", "--name", function)["status"]
        pids = set(status["pids"])
        if pids and not pids & not_in:
            return pids
        assert time.monotonic() < deadline, status
        time.sleep(0.3)


def builds(platform: Platform, *names: str) -> dict[str, Any]:
    return {n: platform.json_of("pkg", "info", "--name", n)["status"] for n in names}


def test_apply_reapply_delete_and_destroy(platform: Platform, tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project / "alpha.py", "def main(request):\n    return 'alpha one'\n")
    write(project / "beta" / "beta.py", "def main(request):\n    return {'beta': request.params}\n")
    platform.ok("spec", "init", cwd=project)
    write(project / "specs" / "app.yaml", APP + BETA_ROUTE)
    # Not from the specs: must survive --delete and destroy.
    platform.ok("fn", "create", "--name", "spec-foreign", "--code", str(project / "alpha.py"))

    valid = platform.ok("spec", "validate", cwd=project)
    assert valid.out.strip() == "specs is valid: 2 packages, 2 functions, 2 httptriggers"
    diff = platform.ok("spec", "diff", cwd=project)
    assert lines(diff.out) == [
        "create package 'spec-alpha-code'",
        "create package 'spec-beta-pkg'",
        "create function 'spec-alpha'",
        "create function 'spec-beta'",
        "create HTTP trigger 'spec-alpha-route'",
        "create HTTP trigger 'spec-beta-route'",
        "6 to create, 0 to update, 0 to delete, 0 unchanged",
    ]

    applied = platform.ok("spec", "apply", "--wait", cwd=project)
    assert "built package 'spec-alpha-code'" in applied.out
    assert lines(applied.out)[-1] == "6 created, 0 updated, 0 deleted, 0 unchanged"
    assert platform.get("/spec-alpha").text == "alpha one"
    assert platform.get("/spec-beta/ann").json() == {"beta": {"who": "ann"}}

    # Idempotent: nothing to do, nothing touched, nothing rebuilt.
    before = builds(platform, "spec-alpha-code", "spec-beta-pkg")
    alpha_pids, beta_pids = running(platform, "spec-alpha"), running(platform, "spec-beta")
    diff = platform.ok("spec", "diff", cwd=project)
    assert lines(diff.out)[-1] == "0 to create, 0 to update, 0 to delete, 6 unchanged"
    again = platform.ok("spec", "apply", "--wait", cwd=project)
    assert lines(again.out) == ["0 created, 0 updated, 0 deleted, 6 unchanged"]
    assert builds(platform, "spec-alpha-code", "spec-beta-pkg") == before

    # One function's code changes: only its package is rebuilt, only its instances roll.
    write(project / "alpha.py", "def main(request):\n    return 'alpha two'\n")
    diff = platform.ok("spec", "diff", cwd=project)
    changed = [line for line in lines(diff.out) if not line.startswith("unchanged")]
    assert changed == [
        "update package 'spec-alpha-code' (source)",
        "0 to create, 1 to update, 0 to delete, 5 unchanged",
    ]
    platform.ok("spec", "apply", "--wait", cwd=project)
    after = builds(platform, "spec-alpha-code", "spec-beta-pkg")
    assert after["spec-beta-pkg"] == before["spec-beta-pkg"]
    assert after["spec-alpha-code"]["deploy"] != before["spec-alpha-code"]["deploy"]
    assert after["spec-alpha-code"]["finished_at"] != before["spec-alpha-code"]["finished_at"]
    assert platform.get("/spec-alpha").text == "alpha two"
    new_alpha = running(platform, "spec-alpha", not_in=frozenset(alpha_pids))
    assert not new_alpha & alpha_pids
    assert running(platform, "spec-beta") == beta_pids

    # A trigger leaves the specs: kept without --delete, deleted with it.
    write(project / "specs" / "app.yaml", APP)
    diff = platform.ok("spec", "diff", cwd=project)
    assert lines(diff.out)[-2:] == [
        "delete HTTP trigger 'spec-beta-route' (not declared any more; with --delete)",
        "0 to create, 0 to update, 0 to delete, 5 unchanged",
    ]
    diff = platform.ok("spec", "diff", "--delete", cwd=project)
    assert lines(diff.out)[0] == "delete HTTP trigger 'spec-beta-route'"
    assert lines(diff.out)[-1] == "0 to create, 0 to update, 1 to delete, 5 unchanged"
    kept = platform.ok("spec", "apply", cwd=project)
    assert "kept HTTP trigger 'spec-beta-route'" in kept.out
    assert platform.get("/spec-beta/ann").status_code == 200
    deleted = platform.ok("spec", "apply", "--delete", cwd=project)
    assert lines(deleted.out) == [
        "deleted HTTP trigger 'spec-beta-route'",
        "0 created, 0 updated, 1 deleted, 5 unchanged",
    ]
    assert platform.get("/spec-beta/ann").status_code == 404
    assert platform.get("/spec-alpha").text == "alpha two"

    destroyed = platform.ok("spec", "destroy", cwd=project)
    assert lines(destroyed.out)[-1] == "5 deleted"
    functions = {f["name"] for f in platform.json_of("fn", "list")}
    packages = {p["name"] for p in platform.json_of("pkg", "list")}
    assert not {"spec-alpha", "spec-beta"} & functions
    assert not {"spec-alpha-code", "spec-beta-pkg"} & packages
    assert "spec-foreign" in functions
    diff = platform.ok("spec", "diff", cwd=project)
    assert lines(diff.out)[-1] == "5 to create, 0 to update, 0 to delete, 0 unchanged"


def test_validation_errors_name_file_line_and_field(platform: Platform, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    platform.ok("spec", "init", cwd=project)
    write(project / "f.py", "def main(request):\n    return 'x'\n")
    write(
        project / "specs" / "bad.yaml",
        """
        apiVersion: fissile.dev/v1
        kind: Function
        name: spec-invalid
        code: ../f.py
        timeout: soon
        ---
        apiVersion: fissile.dev/v1
        kind: HTTPTrigger
        name: spec-invalid-route
        function: spec-invalid
        url: no-slash
        ---
        apiVersion: fissile.dev/v1
        kind: KubernetesWatchTrigger
        name: spec-tick
        """,
    )
    for command in ("validate", "apply"):
        result = platform.cli("spec", command, cwd=project)
        assert result.rc == 1, result
        assert "Traceback" not in result.err
        errors = result.err.strip().splitlines()
        assert errors[0].startswith("specs/bad.yaml:5: timeout: "), result
        assert errors[1].startswith("specs/bad.yaml:11: url: "), result
        assert errors[2] == (
            "specs/bad.yaml:14: kind: kind KubernetesWatchTrigger"
            " is not supported yet by this fissile"
        )
        assert errors[3] == "Error: 3 errors in specs; nothing was changed"
    assert "spec-invalid" not in {f["name"] for f in platform.json_of("fn", "list")}


def test_failed_apply_reports_and_a_second_apply_finishes(
    platform: Platform, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    platform.ok("spec", "init", cwd=project)
    write(project / "g.py", "def main(request):\n    return 'g'\n")
    platform.ok("fn", "create", "--name", "spec-squatter", "--code", str(project / "g.py"))
    platform.ok("route", "create", "--function", "spec-squatter", "--url", "/spec-taken")
    spec = """
    apiVersion: fissile.dev/v1
    kind: Function
    name: spec-gamma
    code: ../g.py
    ---
    apiVersion: fissile.dev/v1
    kind: HTTPTrigger
    name: spec-gamma-route
    function: spec-gamma
    url: URL
    ---
    apiVersion: fissile.dev/v1
    kind: HTTPTrigger
    name: spec-gamma-other
    function: spec-gamma
    url: /spec-gamma-other
    """
    write(project / "specs" / "gamma.yaml", spec.replace("URL", "/spec-taken"))
    failed = platform.cli("spec", "apply", cwd=project)
    assert failed.rc == 1, failed
    err = failed.err.strip().splitlines()
    assert err[0].startswith("failed: create HTTP trigger 'spec-gamma-route': "), failed
    assert "already routes /spec-taken" in err[0]
    assert err[1] == "applied: create package 'spec-gamma-code'; create function 'spec-gamma'"
    assert err[2] == "not applied: create HTTP trigger 'spec-gamma-other'"
    assert err[3].startswith("Error: the spec was applied only in part")

    write(project / "specs" / "gamma.yaml", spec.replace("URL", "/spec-gamma"))
    fixed = platform.ok("spec", "apply", cwd=project)
    assert lines(fixed.out) == [
        "created HTTP trigger 'spec-gamma-route'",
        "created HTTP trigger 'spec-gamma-other'",
        "2 created, 0 updated, 0 deleted, 2 unchanged",
    ]
    assert platform.get("/spec-gamma").text == "g"
    assert platform.get("/spec-taken").text == "g"
    platform.ok("spec", "destroy", cwd=project)


def test_create_commands_write_specs_that_apply(platform: Platform, tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project / "w.py", "def main(request):\n    return 'written'\n")
    platform.ok("spec", "init", cwd=project)
    wrote = platform.ok(
        "fn", "create", "--name", "spec-written", "--code", "w.py", "--timeout", "5s", "--spec",
        cwd=project,
    )  # fmt: skip
    assert wrote.out.strip() == "wrote specs/function-spec-written.yaml"
    platform.ok(
        "route", "create", "--name", "spec-written", "--function", "spec-written",
        "--url", "/spec-written", "--spec", cwd=project,
    )  # fmt: skip
    assert "spec-written" not in {f["name"] for f in platform.json_of("fn", "list")}
    text = (project / "specs" / "function-spec-written.yaml").read_text()
    assert "code: ../w.py" in text and "timeout: 5.0" in text
    platform.ok("spec", "apply", "--wait", cwd=project)
    assert platform.get("/spec-written").text == "written"
    assert platform.json_of("fn", "get", "--name", "spec-written")["timeout"] == 5.0
    platform.ok("spec", "destroy", cwd=project)


# -- Fission's format ------------------------------------------------------------------------

FISSION_SPECS = {
    # `fission spec init`
    "fission-deployment-config.yaml": """
        # This file is generated by the 'fission spec init' command.
        apiVersion: fission.io/v1
        kind: DeploymentConfig
        name: fission-demo
        uid: 8d7c8e5e-7a2b-4f0e-9a51-7a2f7d0c3b11
        """,
    # `fission env create --spec --name python --image fission/python-env`
    "env-python.yaml": """
        apiVersion: fission.io/v1
        kind: Environment
        metadata:
          creationTimestamp: null
          name: python
          namespace: default
        spec:
          builder:
            command: build
            image: fission/python-builder
          imagepullsecret: ""
          keeparchive: false
          poolsize: 3
          resources: {}
          runtime:
            image: fission/python-env
          version: 3
        """,
    # `fission fn create --spec --name spec-fhello --env python --code hello.py`
    "function-spec-fhello.yaml": """
        include:
        - hello.py
        kind: ArchiveUploadSpec
        name: hello-py-q3xz

        ---
        apiVersion: fission.io/v1
        kind: Package
        metadata:
          creationTimestamp: null
          name: spec-fhello-9b1c
          namespace: default
        spec:
          deployment:
            checksum: {}
            type: url
            url: archive://hello-py-q3xz
          environment:
            name: python
            namespace: default
          source:
            checksum: {}
        status:
          buildstatus: pending
        ---
        apiVersion: fission.io/v1
        kind: Function
        metadata:
          creationTimestamp: null
          name: spec-fhello
          namespace: default
        spec:
          InvokeStrategy:
            ExecutionStrategy:
              ExecutorType: poolmgr
              MaxScale: 0
              MinScale: 0
              SpecializationTimeout: 120
              TargetCPUPercent: 0
            StrategyType: execution
          concurrency: 500
          environment:
            name: python
            namespace: default
          functionTimeout: 60
          idletimeout: 120
          package:
            functionName: main
            packageref:
              name: spec-fhello-9b1c
              namespace: default
          requestsPerPod: 1
          resources: {}
        """,
    # `fission pkg create --spec --src "sourcepkg/*" --env python --buildcmd ./build.sh`,
    # `fission fn create --spec --name spec-fgreet --pkg ... --entrypoint handler.main`
    "function-spec-fgreet.yaml": """
        include:
        - sourcepkg/*
        kind: ArchiveUploadSpec
        name: sourcepkg-k2j4
        ---
        apiVersion: fission.io/v1
        kind: Package
        metadata:
          name: spec-fgreet-pkg
          namespace: default
        spec:
          buildcmd: ./build.sh
          deployment:
            checksum: {}
          environment:
            name: python
            namespace: default
          source:
            checksum: {}
            type: url
            url: archive://sourcepkg-k2j4
        status:
          buildstatus: pending
        ---
        apiVersion: fission.io/v1
        kind: Function
        metadata:
          name: spec-fgreet
          namespace: default
        spec:
          InvokeStrategy:
            ExecutionStrategy:
              ExecutorType: newdeploy
              MaxScale: 3
              MinScale: 1
              TargetCPUPercent: 80
            StrategyType: execution
          environment:
            name: python
            namespace: default
          functionTimeout: 30
          idletimeout: 60
          package:
            functionName: handler.main
            packageref:
              name: spec-fgreet-pkg
              namespace: default
          requestsPerPod: 2
          resources:
            limits:
              cpu: 500m
              memory: 128Mi
        """,
    # `fission route create --spec --name ... --function ... --url ...`
    "route-spec-fhello.yaml": """
        apiVersion: fission.io/v1
        kind: HTTPTrigger
        metadata:
          creationTimestamp: null
          name: spec-fhello-route
          namespace: default
        spec:
          createingress: false
          functionref:
            functionweights: null
            name: spec-fhello
            type: name
          host: ""
          ingressconfig:
            annotations: null
            host: '*'
            path: /spec-fhello
            tls: ""
          method: GET
          prefix: ""
          relativeurl: /spec-fhello
        ---
        apiVersion: fission.io/v1
        kind: HTTPTrigger
        metadata:
          name: spec-fgreet-route
          namespace: default
        spec:
          functionref:
            name: spec-fgreet
            type: name
          methods:
          - GET
          relativeurl: /spec-fgreet
        """,
}
BUILD_SH = """#!/bin/sh
pip3 install -r ${SRC_PKG}/requirements.txt -t ${SRC_PKG} && cp -r ${SRC_PKG} ${DEPLOY_PKG}
"""


def test_fission_spec_directory_applies_and_serves(platform: Platform, tmp_path: Path) -> None:
    project = tmp_path / "fission-project"
    write(project / "hello.py", 'def main():\n    return "Hello, world!"\n')
    source = make_source(project / "sourcepkg", "libs/mylib")
    write(source / "build.sh", BUILD_SH).chmod(0o755)
    for name, text in FISSION_SPECS.items():
        write(project / "specs" / name, text)

    valid = platform.ok("spec", "validate", cwd=project)
    assert "specs is valid: 1 environments, 2 packages, 2 functions, 2 httptriggers" in valid.out
    warnings = [line for line in valid.err.splitlines() if line.startswith("warning: ")]
    assert (
        "warning: specs/env-python.yaml:9: spec.builder.command: has no equivalent in fissile;"
        " ignored"
    ) in warnings
    newdeploy = "spec.InvokeStrategy.ExecutionStrategy.ExecutorType: executor newdeploy"
    assert any(newdeploy in warning for warning in warnings)

    applied = platform.ok("spec", "apply", "--wait", cwd=project)
    # The built-in python environment is what Fission's env-python.yaml declares: left alone.
    assert lines(applied.out)[-1] == "6 created, 0 updated, 0 deleted, 1 unchanged"
    hello = platform.get("/spec-fhello")
    assert (hello.status_code, hello.text) == (200, "Hello, world!")
    greet = platform.get("/spec-fgreet?name=ann")
    assert greet.status_code == 200, greet.text
    assert greet.json()["greeting"] == "greetings, ann"
    check_greeting(platform, "spec-fgreet")
    function = platform.json_of("fn", "get", "--name", "spec-fgreet")
    assert (function["min_scale"], function["max_scale"], function["concurrency"]) == (1, 3, 2)
    assert (function["timeout"], function["idle_timeout"], function["cpu"]) == (30.0, 60.0, 0.5)
    assert function["memory"] == 128 * 1024**2

    again = platform.ok("spec", "apply", cwd=project)
    assert lines(again.out) == ["0 created, 0 updated, 0 deleted, 7 unchanged"]
    platform.ok("spec", "destroy", cwd=project)
    assert platform.get("/spec-fhello").status_code == 404
    assert "python" in {e["name"] for e in platform.json_of("env", "list")}
