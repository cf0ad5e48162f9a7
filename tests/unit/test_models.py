"""fissile/models.py: validation of every resource's spec."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from fissile.models import (
    READ_MODELS,
    SPEC_MODELS,
    TRIGGER_KINDS,
    BuildState,
    EnvironmentSpec,
    Function,
    FunctionSpec,
    HTTPTriggerSpec,
    Package,
    PackageSpec,
)

SHA = "a" * 64


def fn(**fields: Any) -> FunctionSpec:
    return FunctionSpec(**{"name": "hello", "env": "python", "package": "pkg", **fields})


def trigger(**fields: Any) -> HTTPTriggerSpec:
    return HTTPTriggerSpec(**{"name": "t", "function": "hello", **fields})


def error_locations(exc: ValidationError) -> list[tuple[Any, ...]]:
    return [tuple(error["loc"]) for error in exc.errors()]


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "hello", "hello-world", "a1", "1a", "x" * 63])
def test_valid_names(name: str) -> None:
    assert EnvironmentSpec(name=name).name == name


@pytest.mark.parametrize(
    "name", ["", "Bad_Name", "UPPER", "-lead", "trail-", "under_score", "dot.ted", "x" * 64, "a b"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        EnvironmentSpec(name=name)
    assert error_locations(info.value) == [("name",)]


# --- environments --------------------------------------------------------------------------


def test_environment_defaults() -> None:
    env = EnvironmentSpec(name="python")
    assert (env.image, env.poolsize, env.preload) == ("python", 3, [])


@pytest.mark.parametrize(
    "image",
    ["fission/python-env", "fission/python-env:latest", "ghcr.io/fission/python-env-3.11:1.2"],
)
def test_fission_image_names_map_to_python(image: str) -> None:
    assert EnvironmentSpec(name="e", image=image).image == "python"


@pytest.mark.parametrize("image", ["node", "fission/node-env", "fission/python-envy"])
def test_unknown_image_rejected(image: str) -> None:
    with pytest.raises(ValidationError, match="unsupported image"):
        EnvironmentSpec(name="e", image=image)


@pytest.mark.parametrize("poolsize", [-1, 10**9])
def test_poolsize_bounds(poolsize: int) -> None:
    with pytest.raises(ValidationError) as info:
        EnvironmentSpec(name="e", poolsize=poolsize)
    assert error_locations(info.value) == [("poolsize",)]


def test_poolsize_bound_follows_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from fissile import _host

    assert _host.max_poolsize() >= 1
    monkeypatch.setattr(_host, "max_poolsize", lambda: 200)
    assert EnvironmentSpec(name="e", poolsize=200).poolsize == 200  # past the old fixed 64
    with pytest.raises(ValidationError, match="at most 200 on this host"):
        EnvironmentSpec(name="e", poolsize=201)


def test_preload_module_names() -> None:
    assert EnvironmentSpec(name="e", preload=["numpy", "os.path"]).preload == ["numpy", "os.path"]
    with pytest.raises(ValidationError, match="is not a module name"):
        EnvironmentSpec(name="e", preload=["not-a-module"])
    with pytest.raises(ValidationError, match="is not a module name"):
        EnvironmentSpec(name="e", preload=["a..b"])


def test_unknown_fields_are_forbidden() -> None:
    with pytest.raises(ValidationError) as info:
        EnvironmentSpec(name="e", bogus=1)  # type: ignore[call-arg]
    assert error_locations(info.value) == [("bogus",)]


# --- packages ------------------------------------------------------------------------------


def test_package_source_must_be_a_sha256() -> None:
    assert PackageSpec(name="p", env="python", source=SHA).source == SHA
    for bad in ["abc", "A" * 64, "g" * 64, "a" * 65]:
        with pytest.raises(ValidationError) as info:
            PackageSpec(name="p", env="python", source=bad)
        assert error_locations(info.value) == [("source",)]


def test_package_read_model_has_pending_status() -> None:
    package = Package(name="p", env="python", source=SHA)
    assert package.status.state is BuildState.pending
    assert package.status.deploy is None
    assert package.generation == 0


def test_package_buildcmd_length_limit() -> None:
    with pytest.raises(ValidationError):
        PackageSpec(name="p", env="python", source=SHA, buildcmd="x" * 4097)


# --- functions -----------------------------------------------------------------------------


def test_function_defaults() -> None:
    spec = fn()
    assert spec.entrypoint == "main"
    assert spec.timeout == 60.0
    assert spec.memory == 256 * 1024**2
    # Unset concurrency: 1 for a sync function, more for async def (decided at specialization).
    assert (spec.min_scale, spec.max_scale, spec.concurrency) == (0, 10, None)
    assert spec.idle_timeout == 120.0
    assert spec.env_vars == {}


def test_function_units_are_parsed() -> None:
    spec = fn(timeout="500ms", memory="128Mi", idle_timeout="2m")
    assert spec.timeout == 0.5
    assert spec.memory == 128 * 1024**2
    assert spec.idle_timeout == 120.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout", 0),
        ("timeout", "0s"),
        ("timeout", 86401),
        ("timeout", "forever"),
        ("memory", "1Mi"),
        ("memory", "lots"),
        ("cpu", 0),
        ("cpu", 65),
        ("min_scale", -1),
        ("max_scale", 0),
        ("concurrency", 0),
        ("idle_timeout", -1),
        ("entrypoint", "1bad"),
        ("entrypoint", "mod.func()"),
        ("entrypoint", "a..b"),
    ],
)
def test_function_field_errors(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        fn(**{field: value})
    assert error_locations(info.value) == [(field,)]


@pytest.mark.parametrize(
    ("field", "value"),
    [("memory", None), ("memory", 268435456.5), ("timeout", None), ("idle_timeout", None)],
)
def test_function_unit_fields_with_wrong_json_types_are_validation_errors(
    field: str, value: Any
) -> None:
    with pytest.raises(ValidationError):
        fn(**{field: value})


def test_min_scale_cannot_exceed_max_scale() -> None:
    with pytest.raises(ValidationError, match=r"min_scale \(3\) cannot exceed max_scale \(2\)"):
        fn(min_scale=3, max_scale=2)
    assert fn(min_scale=2, max_scale=2).min_scale == 2


def test_entrypoints() -> None:
    assert fn(entrypoint="handler").entrypoint == "handler"
    assert fn(entrypoint="pkg.module.handler").entrypoint == "pkg.module.handler"


def test_env_var_names() -> None:
    assert fn(env_vars={"A_1": "x", "_B": "y"}).env_vars == {"A_1": "x", "_B": "y"}
    with pytest.raises(ValidationError):
        fn(env_vars={"1A": "x"})
    with pytest.raises(ValidationError):
        fn(env_vars={"A-B": "x"})


def test_code_fields_change_only_for_code_changes() -> None:
    base = fn(env_vars={"A": "1", "B": "2"})
    same = fn(env_vars={"B": "2", "A": "1"}, timeout=5, min_scale=1, idle_timeout=3)
    assert base.code_fields() == same.code_fields()
    for changed in [
        fn(env_vars={"A": "1", "B": "3"}),
        fn(env_vars={"A": "1", "B": "2"}, entrypoint="other"),
        fn(env_vars={"A": "1", "B": "2"}, package="pkg2"),
        fn(env_vars={"A": "1", "B": "2"}, memory="512Mi"),
        fn(env_vars={"A": "1", "B": "2"}, cpu=0.5),
    ]:
        assert changed.code_fields() != base.code_fields()


def test_function_read_model_round_trips_through_json() -> None:
    original = Function(**fn(timeout="1.5s").model_dump())
    again = Function.model_validate(original.model_dump(mode="json"))
    assert again == original
    assert again.status.instances == 0


# --- HTTP triggers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("/", "/"),
        ("/hello", "/hello"),
        ("/hello/", "/hello"),
        ("/students/{id}", "/students/{id}"),
        ("/items/{id:[0-9]+}", "/items/{id:[0-9]+}"),
        ("/a/b-c/d.e/~f", "/a/b-c/d.e/~f"),
        ("/functions", "/functions"),
    ],
)
def test_trigger_urls(url: str, stored: str) -> None:
    assert trigger(url=url).url == stored


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("hello", "must start with '/'"),
        ("/a//b", "invalid path segment ''"),
        ("/a b", "invalid path segment"),
        ("/a?x=1", "invalid path segment"),
        ("/{1bad}", "invalid path segment"),
        ("/{id:[0-9}", "invalid pattern"),
        ("/function/hello", "reserved"),
        ("/function", "reserved"),
        ("/_fissile/healthz", "reserved"),
        ("/" + "a" * 1024, "at most 1024"),
    ],
)
def test_trigger_url_errors(url: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        trigger(url=url)


def test_trigger_methods_are_normalised() -> None:
    assert trigger(url="/x").methods == ["GET"]
    assert trigger(url="/x", methods=["get", "Post", "GET"]).methods == ["GET", "POST"]
    assert trigger(url="/x", methods=["GET", "any"]).methods == ["*"]
    assert trigger(url="/x", methods=["*"]).methods == ["*"]


@pytest.mark.parametrize(
    ("methods", "message"), [([], "at least one method"), (["FETCH"], "unknown HTTP method")]
)
def test_trigger_method_errors(methods: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        trigger(url="/x", methods=methods)


def test_trigger_needs_exactly_one_of_url_or_prefix() -> None:
    with pytest.raises(ValidationError, match="exactly one of url or prefix"):
        trigger()
    with pytest.raises(ValidationError, match="exactly one of url or prefix"):
        trigger(url="/a", prefix="/b")
    assert trigger(prefix="/static/").prefix == "/static"


def test_prefix_cannot_hold_params() -> None:
    with pytest.raises(ValidationError, match="cannot hold"):
        trigger(prefix="/a/{id}")


def test_registries_cover_every_kind() -> None:
    kinds = {
        "environments",
        "packages",
        "functions",
        "secrets",
        "configmaps",
        *TRIGGER_KINDS,
        "apikeys",
        "canaries",
    }
    assert set(SPEC_MODELS) == kinds
    assert set(READ_MODELS) == kinds
    for kind, model in SPEC_MODELS.items():
        if kind == "secrets":
            # Write-only values: a read has keys and sizes, never the data.
            assert "data" not in READ_MODELS[kind].model_fields
            continue
        assert issubclass(READ_MODELS[kind], model)


def test_trigger_kinds_validate_their_fields() -> None:
    from fissile.models import MessageQueueTriggerSpec, TimeTriggerSpec, WatchTriggerSpec

    mq = MessageQueueTriggerSpec(name="m", function="f", topic="in")
    assert (mq.mqtype, mq.maxretries, mq.concurrency) == ("embedded", 3, 1)
    with pytest.raises(ValidationError, match="must differ from topic"):
        MessageQueueTriggerSpec(name="m", function="f", topic="in", errortopic="in")
    with pytest.raises(ValidationError, match="takes no broker_url"):
        MessageQueueTriggerSpec(name="m", function="f", topic="in", broker_url="x://y")
    with pytest.raises(ValidationError, match="mqtype"):
        MessageQueueTriggerSpec(name="m", function="f", topic="in", mqtype="sqs")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="topic"):
        MessageQueueTriggerSpec(name="m", function="f", topic="a topic")

    assert TimeTriggerSpec(name="t", function="f", cron="@every 5m").timezone == "UTC"
    with pytest.raises(ValidationError, match="unknown time zone"):
        TimeTriggerSpec(name="t", function="f", cron="@hourly", timezone="Mars/Base")

    assert WatchTriggerSpec(name="w", function="f", event="function.*").event == "function.*"
    for event in ("function.eaten", "nothing.*", "FUNCTION.CREATED"):
        with pytest.raises(ValidationError):
            WatchTriggerSpec(name="w", function="f", event=event)


def test_webhook_secrets_are_not_trivially_short() -> None:
    with pytest.raises(ValidationError, match="at least 8"):
        trigger(url="/hook", webhook_secret="short")


def test_the_fission_fastapi_image_implies_its_contract() -> None:
    from fissile.models import EnvironmentSpec

    for image in (
        "fission/python-fastapi-env",
        "ghcr.io/fission/python-fastapi-env:latest",
        "fission/python-fastapi-env-3.11",
    ):
        env = EnvironmentSpec(name="fastapi", image=image)
        assert (env.image, env.contract) == ("python", "fission-fastapi")
    explicit = EnvironmentSpec(name="e", image="fission/python-fastapi-env", contract="native")
    assert explicit.contract == "native"
    assert EnvironmentSpec(name="p", image="fission/python-env").contract == "auto"


def test_function_contracts_and_entrypoints() -> None:
    from pydantic import ValidationError

    from fissile.models import FunctionSpec

    base = {"name": "f", "env": "python", "package": "p"}
    assert FunctionSpec(**base).contract is None
    for entrypoint in (
        "",
        "main",
        "mod.main",
        "app:app",
        "my.site.wsgi:application",
        "hello-world.main",
    ):
        assert FunctionSpec(**base, entrypoint=entrypoint).entrypoint == entrypoint
    for bad in ("a:b:c", "1mod.main", "mod.", ":app", "mod:1x"):
        with pytest.raises(ValidationError):
            FunctionSpec(**base, entrypoint=bad)
    with pytest.raises(ValidationError):
        FunctionSpec(**base, contract="soap")
