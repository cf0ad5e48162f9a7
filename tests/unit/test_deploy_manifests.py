"""deploy/kubernetes: every manifest is valid Kubernetes (checked offline against the API
schemas), every `fissile up` flag in it parses, and probes and Services reach the ports that
serve what they ask for."""

from __future__ import annotations

import inspect
import re
import subprocess
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from fissile.cli.up import up

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
FORMS = ("single-node", "cluster")


def _versions() -> tuple[str, str]:
    """The oldest release the installed kubernetes-validate bundles from 1.30 on (the first
    with the container field appArmorProfile), and the newest it bundles."""
    bundled = sorted(
        {tuple(int(part) for part in v.split(".")[:2]) for v in all_versions()},
    )
    oldest = next(v for v in bundled if v >= (1, 30))
    return ".".join(map(str, oldest)), ".".join(map(str, bundled[-1]))


VERSIONS = _versions()
# What the downward API and Secrets give the container, standing in for the real values.
FIELD_VALUES = {"metadata.name": "fissile-5d8f7-abcde", "status.podIP": "10.1.2.3"}
SECRET_VALUE = "postgresql://fissile:pw@db:5432/fissile"
_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources"}
_CLUSTER_SCOPED = {"Namespace"}


def render(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl kustomize directory` gives for the subset of kustomize these files use
    (resources and a namespace); anything else in a kustomization fails here."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(kustomization) <= _KUSTOMIZATION_KEYS, (directory, set(kustomization))
    assert kustomization["kind"] == "Kustomization"
    objects: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in _CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
    return objects


def examples(form: str) -> list[dict[str, Any]]:
    """The Secrets the operator makes from the *.example.yaml files (never applied as they are)."""
    found = []
    for directory in (ROOT / "base", ROOT / form):
        for path in sorted(directory.glob("*.example.yaml")):
            found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def workload(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] in ("StatefulSet", "Deployment", "DaemonSet")]
    return found


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [c for c in workload(objects)["spec"]["template"]["spec"]["containers"]]
    assert found["name"] == "fissile"
    return found


def environment(objects: list[dict[str, Any]], spec: dict[str, Any]) -> dict[str, str]:
    """The variables the container's $(VAR) references can use, from its env and envFrom."""
    maps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    values: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        values.update(maps[source["configMapRef"]["name"]])
    for variable in spec.get("env", []):
        if "value" in variable:
            values[variable["name"]] = variable["value"]
        elif "fieldRef" in variable["valueFrom"]:
            values[variable["name"]] = FIELD_VALUES[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            assert "secretKeyRef" in variable["valueFrom"], variable
            values[variable["name"]] = SECRET_VALUE
    return values


def expand(arg: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        assert match.group(1) in values, f"$({match.group(1)}) is not defined for the container"
        return values[match.group(1)]

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, arg)


def up_args(objects: list[dict[str, Any]]) -> list[str]:
    """The container's `fissile up` arguments with every $(VAR) resolved."""
    spec = container(objects)
    assert spec["command"][-1].endswith("entrypoint.sh")
    values = environment(objects, spec)
    args = [expand(str(arg), values) for arg in spec["args"]]
    assert args[0] == "up"
    return args[1:]


def option_value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("form", FORMS)
def test_every_manifest_is_valid_kubernetes(form: str, version: str) -> None:
    objects = render(ROOT / form) + examples(form)
    kinds = sorted(o["kind"] for o in objects)
    assert {"Namespace", "ConfigMap", "Service", "Secret"} <= set(kinds), kinds
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {exc.path}")


def test_a_misspelt_field_is_caught() -> None:
    # The check above would pass anything if the schemas were not strict.
    objects = render(ROOT / "single-node")
    broken = workload(objects)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"path": "/healthz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_every_yaml_file_is_used() -> None:
    used: set[Path] = set()
    for kustomization in ROOT.rglob("kustomization.yaml"):
        used.add(kustomization)
        for entry in yaml.safe_load(kustomization.read_text())["resources"]:
            used.add((kustomization.parent / entry).resolve())
    for path in ROOT.rglob("*.yaml"):
        if path.name.endswith(".example.yaml") or path.parent.name == "chart-values":
            continue
        assert path.resolve() in used, f"{path} is in no kustomization"


def test_the_single_node_form_runs_todays_fissile_up() -> None:
    args = up_args(render(ROOT / "single-node"))
    # click parses every flag and value as `fissile up` would, without running it.
    context = up.make_context("up", args)
    assert context.params["sandbox"] == "strict"
    assert str(context.params["token_file"]) == "/etc/fissile/token/api-token"
    assert str(context.params["data_dir"]) == "/var/lib/fissile"


def test_the_cluster_form_runs_fissile_up_in_cluster_mode() -> None:
    args = up_args(render(ROOT / "cluster"))
    context = up.make_context("up", args)
    assert str(context.params["secrets_key_file"]) == "/etc/fissile/secrets-key/secrets.key"
    assert context.params["cluster"] is True
    assert context.params["store_url"] == SECRET_VALUE
    assert context.params["nats_url"] == "nats://fissile-nats.fissile.svc:4222"
    assert context.params["node_name"] == FIELD_VALUES["metadata.name"]
    # Peers forward to the pod's router, on the port the container serves it.
    assert context.params["advertise"] == f"{FIELD_VALUES['status.podIP']}:8080"
    # What `fissile up` checks before starting accepts them (the pod's name is a node name).
    from fissile.cli.up import _cluster_options

    name, address = _cluster_options(
        context.params["store_url"],
        context.params["nats_url"],
        context.params["node_name"],
        context.params["advertise"],
        "0.0.0.0",
        8080,
        None,
    )
    assert (name, address) == (FIELD_VALUES["metadata.name"], "10.1.2.3:8080")


def test_a_flag_fissile_up_lacks_is_caught() -> None:
    args = up_args(render(ROOT / "single-node"))
    with pytest.raises(click.NoSuchOption):
        up.make_context("up", [*args, "--no-such-flag"])


@pytest.mark.parametrize("form", FORMS)
def test_probes_and_services_reach_the_ports_that_serve_them(form: str) -> None:
    objects = render(ROOT / form)
    args = up_args(objects)
    spec = container(objects)
    ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
    # The router serves /_fissile/healthz on --port, the control API /healthz on --api-port.
    assert ports["http"] == int(option_value(args, "--port"))
    assert ports["api"] == int(option_value(args, "--api-port"))
    assert option_value(args, "--host") == option_value(args, "--api-host") == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe"):
        assert spec[probe]["httpGet"] == {"path": "/healthz", "port": "api"}, probe
    assert spec["livenessProbe"]["httpGet"] == {"path": "/_fissile/healthz", "port": "http"}

    labels = workload(objects)["spec"]["template"]["metadata"]["labels"]
    services = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "Service"}
    assert [p["targetPort"] for p in services["fissile-router"]["ports"]] == ["http"]
    assert [p["targetPort"] for p in services["fissile-api"]["ports"]] == ["api"]
    for service in services.values():
        assert service["selector"].items() <= labels.items()
        assert {p["targetPort"] for p in service["ports"]} <= set(ports)


def test_the_paths_the_probes_use_are_the_ones_fissile_serves() -> None:
    # Both handlers need a running platform; their sources name the paths they answer
    # (tests/system start platforms and wait on the API's /healthz).
    from fissile.controlplane.app import create_api
    from fissile.router.app import Router

    assert '@app.get("/healthz"' in inspect.getsource(create_api)
    assert 'path == "/_fissile/healthz"' in inspect.getsource(Router)


@pytest.mark.parametrize("form", FORMS)
def test_everything_the_pod_names_exists(form: str) -> None:
    objects = render(ROOT / form) + examples(form)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    pod = workload(objects)["spec"]["template"]["spec"]
    assert workload(objects)["metadata"]["namespace"] == "fissile"
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert ("Secret", volume["secret"]["secretName"]) in names
            # fissile refuses a secrets key others can read; the token is as private.
            assert volume["secret"]["defaultMode"] == 0o400
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in names
    for variable in container(objects).get("env", []):
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            (secret,) = [o for o in objects if o["kind"] == "Secret" and
                         o["metadata"]["name"] == ref["name"]]  # fmt: skip
            assert ref["key"] in secret["stringData"]
    mounts = {m["name"]: m["mountPath"] for m in container(objects)["volumeMounts"]}
    args = up_args(objects)
    assert option_value(args, "--data-dir") == mounts["data"]
    assert option_value(args, "--token-file").startswith(mounts["token"] + "/")


@pytest.mark.parametrize("form", FORMS)
def test_the_sandbox_gets_what_it_needs(form: str) -> None:
    objects = render(ROOT / form)
    security = container(objects)["securityContext"]
    assert security["privileged"] is True
    assert security["seccompProfile"] == {"type": "Unconfined"}
    (namespace,) = [o for o in objects if o["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_the_entrypoint_is_valid_shell_ending_in_fissile(tmp_path: Path) -> None:
    (entrypoint,) = [
        o for o in render(ROOT / "single-node") if o["metadata"]["name"] == "fissile-entrypoint"
    ]
    script = tmp_path / "entrypoint.sh"
    script.write_text(entrypoint["data"]["entrypoint.sh"])
    checked = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert script.read_text().rstrip().endswith('exec fissile "$@"')


def test_the_chart_values_are_yaml_mappings() -> None:
    for path in sorted((ROOT / "cluster" / "chart-values").glob("*.yaml")):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
