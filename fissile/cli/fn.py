"""``fissile fn``: functions — create, inspect, call and read the logs of."""

from __future__ import annotations

import json
import re
import secrets
import sys
from pathlib import Path
from typing import Any

import click
import httpx

from fissile._names import NAME_MAX, NAME_PATTERN
from fissile._units import format_duration, format_memory
from fissile.cli._output import Column, done, emit, output_option
from fissile.cli._params import (
    CONTRACTS,
    DURATION,
    MEMORY,
    key_values,
    spec_options,
    upload_source,
    write_spec,
)
from fissile.cli.pkg import report_build
from fissile.client import Client, ClientError, find_token
from fissile.observability.access import text_line
from fissile.revision_targets import REVISION, REVISION_OF
from fissile.specs.write import relative_source

COLUMNS: list[Column] = [
    ("NAME", lambda f: _marked(f)),
    ("ENV", lambda f: f["env"]),
    ("PACKAGE", lambda f: f["package"]),
    ("ENTRYPOINT", lambda f: f["entrypoint"]),
    ("TIMEOUT", lambda f: format_duration(f["timeout"])),
    ("MEMORY", lambda f: format_memory(f["memory"])),
    ("SCALE", lambda f: f"{f['min_scale']}-{f['max_scale']}"),
    ("INSTANCES", lambda f: f["status"]["instances"]),
    ("RESTARTS", lambda f: f["status"]["restarts"]),
]


def _marked(function: dict[str, Any]) -> str:
    """A revision function (serving a route's a@3) is told apart from users' functions."""
    labels = function.get("labels") or {}
    of = labels.get(REVISION_OF)
    if of is None:
        return str(function["name"])
    return f"{function['name']} (revision {labels.get(REVISION)} of {of})"


# Every field of models.FunctionSpec (tests/unit/test_cli_fn.py checks): one missing here is
# reset to its default by every `fn update`. Not derived from the model, to keep pydantic out of
# the CLI's imports.
SPEC_FIELDS = (
    "name",
    "env",
    "package",
    "entrypoint",
    "contract",
    "timeout",
    "memory",
    "cpu",
    "min_scale",
    "max_scale",
    "concurrency",
    "idle_timeout",
    "queue_timeout",
    "queue_limit",
    "async_retries",
    "env_vars",
    "secrets",
    "configmaps",
    "network",
    "labels",
)


def _settings(options: dict[str, Any]) -> dict[str, Any]:
    """Options given on the command line, under their API field names."""
    fields = {
        "entrypoint": options.get("entrypoint"),
        "contract": options.get("contract"),
        "timeout": options.get("timeout"),
        "memory": options.get("memory"),
        "cpu": options.get("cpu"),
        "min_scale": options.get("min_scale"),
        "max_scale": options.get("max_scale"),
        "concurrency": options.get("concurrency"),
        "idle_timeout": options.get("idle_timeout"),
        "async_retries": options.get("async_retries"),
        "queue_timeout": options.get("queue_timeout"),
        "queue_limit": options.get("queue_limit"),
        "network": options.get("network"),
    }
    settings = {k: v for k, v in fields.items() if v is not None}
    if options.get("env_vars"):
        settings["env_vars"] = key_values(options["env_vars"], "--env-var")
    if options.get("secret_env"):
        # The env var holds a reference; the value is put in when an instance starts.
        for variable, ref in key_values(options["secret_env"], "--secret-env").items():
            name, sep, key = ref.partition("/")
            if not sep or not name or not key:
                raise click.BadParameter(f"{ref!r} is not SECRET/KEY", param_hint="--secret-env")
            settings.setdefault("env_vars", {})[variable] = f"${{secret:{name}/{key}}}"
    for option in ("secrets", "configmaps"):
        if options.get(option):
            settings[option] = list(dict.fromkeys(options[option]))
    return settings


def _settings_options(func: Any) -> Any:
    options = [
        click.option(
            "--entrypoint", default=None, help="module.func, func or module:app [default: main]"
        ),
        click.option(
            "--contract",
            type=click.Choice(CONTRACTS),
            default=None,
            help="How the function is called: native, fission, lambda, ... [default: the"
            " environment's, auto]",
        ),
        click.option("--timeout", type=DURATION, default=None, help="e.g. 60s [default: 60s]"),
        click.option("--memory", type=MEMORY, default=None, help="e.g. 256Mi [default: 256Mi]"),
        click.option(
            "--cpu", type=float, default=None, help="CPU cores (enforced by the sandbox)."
        ),
        click.option(
            "--min-scale", type=int, default=None, help="Instances kept warm [default: 0]"
        ),
        click.option("--max-scale", type=int, default=None, help="Instance limit [default: 10]"),
        click.option(
            "--concurrency", type=int, default=None, help="Requests per instance [1; async: 100]"
        ),
        click.option("--idle-timeout", type=DURATION, default=None, help="Reap after [120s]"),
        click.option(
            "--async-retries",
            type=click.IntRange(0, 20),
            default=None,
            help="Retries of a failed asynchronous invocation [0]",
        ),
        click.option(
            "--queue-timeout",
            type=DURATION,
            default=None,
            help="Longest wait for a free instance, then 503 [default: the timeout]",
        ),
        click.option(
            "--queue-limit",
            type=click.IntRange(1, 100_000),
            default=None,
            help="Requests that may wait, then 429 [10 x max-scale x concurrency, <= 1000]",
        ),
        click.option(
            "--env-var",
            "env_vars",
            multiple=True,
            help="KEY=VALUE (repeat); a value may hold ${secret:NAME/KEY}.",
        ),
        click.option(
            "--secret",
            "secrets",
            multiple=True,
            help="Mount a secret at /secrets/default/NAME/ (repeat).",
        ),
        click.option(
            "--configmap",
            "configmaps",
            multiple=True,
            help="Mount a config map at /configs/default/NAME/ (repeat).",
        ),
        click.option(
            "--secret-env",
            "secret_env",
            multiple=True,
            help="VAR=SECRET/KEY: an env var with a secret's value (repeat).",
        ),
        click.option(
            "--network",
            type=click.Choice(["host", "none"]),
            default=None,
            help="host, or none: a private loopback only [default: the environment's]",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _owned_package(client: Client, function: str, env: str, source: str) -> str:
    """Upload ``source`` as a new package owned by ``function`` and wait for its build."""
    name = f"{function[:52]}-{secrets.token_hex(4)}"
    sha = upload_source(client, source)
    client.create("packages", {"name": name, "env": env, "source": sha, "owner": function})
    package = client.wait_for_build(name)
    if package["status"]["state"] == "failed":
        try:
            client.delete("packages", name)
        finally:
            report_build(package)
    return name


def _check_code(code: str | None) -> None:
    """``--code`` is one source file: a directory (``--code /tmp``) would ship everything in
    it, sockets and all."""
    if code is None:
        return
    path = Path(code)
    if path.is_dir():
        raise click.BadParameter(f"{code} is a directory; use --src for one", param_hint="--code")
    if path.exists() and not path.is_file():
        raise click.BadParameter(f"{code} is not a regular file", param_hint="--code")


def _backoff(status: dict[str, Any]) -> str:
    if not status.get("backoff"):
        return "-"
    failures = status.get("failures_in_a_row", 0)
    return f"next start in {status['backoff']:.1f}s ({failures} failures in a row)"


def _queue(function: dict[str, Any]) -> str:
    timeout = function.get("queue_timeout") or function["timeout"]
    limit = function["status"].get("queue_limit") or function.get("queue_limit")
    waiting = f"up to {limit}" if limit else "a bounded number of requests"
    return f"{waiting} waiting, each at most {format_duration(timeout)}"


def _overload(status: dict[str, Any]) -> str:
    return (
        f"{status.get('rejected', 0)} refused (429), {status.get('queue_timeouts', 0)} waited"
        f" too long (503), {status.get('timeouts', 0)} timed out (504)"
    )


def _concurrency(function: dict[str, Any]) -> str:
    if function.get("concurrency") is not None:
        return str(function["concurrency"])
    return f"{function['status'].get('concurrency', 1)} (default: 1, async def: 100)"


def _instances(status: dict[str, Any]) -> str:
    """Current and desired instances, as the autoscaler sees them."""
    line = (
        f"{status['instances']} current, {status.get('desired', 0)} desired"
        f" ({status['busy']} busy, {status['starting']} starting,"
        f" {status.get('queued', 0)} queued)"
    )
    return line + (" panic: scaling for a burst" if status.get("panic") else "")


@click.group()
def fn() -> None:
    """Functions: code plus entrypoint, environment, limits and scaling."""


@fn.command()
@click.option("--name", required=True)
@click.option("--env", "env", default="python", show_default=True)
@click.option("--code", default=None, help="A single source file.")
@click.option("--src", default=None, help="A source directory or zip (built like a package).")
@click.option("--pkg", "package", default=None, help="An existing package.")
@_settings_options
@spec_options
def create(
    name: str,
    env: str,
    code: str | None,
    src: str | None,
    package: str | None,
    spec: bool,
    specdir: Path,
    **options: Any,
) -> None:
    """Create a function from a file, a source directory/zip, or a package."""
    if sum(x is not None for x in (code, src, package)) != 1:
        raise click.UsageError("give exactly one of --code, --src or --pkg")
    _check_code(code)
    if spec:
        fields: dict[str, Any] = {"name": name, "env": env}
        if code is not None:
            fields["code"] = relative_source(specdir, code)
        elif src is not None:
            fields["src"] = relative_source(specdir, src)
        else:
            fields["package"] = package
        write_spec(specdir, "Function", {**fields, **_settings(options)})
        return
    if not re.fullmatch(NAME_PATTERN, name) or len(name) > NAME_MAX:
        # Checked here, not only by the API: the package made for --code/--src comes first.
        raise ClientError(
            f"invalid function name {name!r}: use at most 63 lowercase letters, digits and '-',"
            " starting and ending with a letter or digit"
        )
    with Client() as client:
        created_package = None
        if package is None:
            created_package = _owned_package(client, name, env, code or src or "")
            package = created_package
        body = {"name": name, "env": env, "package": package, **_settings(options)}
        try:
            client.create("functions", body)
        except ClientError:
            if created_package is not None:
                client.delete("packages", created_package)
            raise
    done(f"function '{name}' created")


@fn.command()
@click.option("--name", required=True)
@click.option("--env", "env", default=None)
@click.option("--code", default=None, help="New source file.")
@click.option("--src", default=None, help="New source directory or zip.")
@click.option("--pkg", "package", default=None, help="Switch to another package.")
@_settings_options
def update(
    name: str,
    env: str | None,
    code: str | None,
    src: str | None,
    package: str | None,
    **options: Any,
) -> None:
    """Change a function; new code rolls its instances (in-flight requests finish first)."""
    if sum(x is not None for x in (code, src, package)) > 1:
        raise click.UsageError("give at most one of --code, --src or --pkg")
    _check_code(code)
    with Client() as client:
        current = client.get("functions", name)
        body = {k: current[k] for k in SPEC_FIELDS if k in current}
        if env is not None:
            body["env"] = env
        source = code or src
        old_package = None
        if package is not None:
            body["package"] = package
        elif source is not None:
            old_package = current["package"]
            body["package"] = _owned_package(client, name, body["env"], source)
        body.update(_settings(options))
        try:
            updated = client.update("functions", name, body)
        except ClientError:
            if old_package is not None:
                # Refused (its pre-flight could not load it, say): the package made for it
                # goes; the function keeps its own.
                client.delete("packages", body["package"])
            raise
        if old_package is not None:
            owner = client.get("packages", old_package).get("owner")
            if owner == name:
                client.delete("packages", old_package)
    revision = updated.get("revision")
    done(f"function '{name}' updated" + (f" (revision {revision})" if revision else ""))


REVISION_COLUMNS: list[Column] = [
    ("REVISION", lambda r: r["number"]),
    ("CREATED", lambda r: str(r["created_at"])[:19].replace("T", " ")),
    ("SOURCE", lambda r: (r.get("source") or "")[:12]),
    ("BUILD", lambda r: "pruned" if r.get("pruned") else (r.get("deploy") or "")[:12]),
    ("CHANGES", lambda r: ", ".join(r["changes"])),
]


@fn.command()
@click.option("--name", required=True)
@output_option
def revisions(name: str, output: str) -> None:
    """List a function's revisions: when, its source and build, and what changed."""
    with Client() as client:
        found = client.revisions(name)
        current = client.get("functions", name).get("revision")
    if output != "table":
        emit(found, output, REVISION_COLUMNS)
        return
    marked = [
        {**r, "number": f"{r['number']}*" if r["number"] == current else r["number"]} for r in found
    ]
    emit(marked, output, REVISION_COLUMNS)


@fn.command()
@click.option("--name", required=True)
@click.option(
    "--to", "to", type=click.IntRange(1), default=None, help="Revision [default: the previous]"
)
def rollback(name: str, to: int | None) -> None:
    """Serve an earlier revision again, without building (itself a new revision)."""
    with Client() as client:
        function = client.rollback(name, to)
    done(f"function '{name}' rolled back (revision {function.get('revision')})")


@fn.command()
@click.option("--name", required=True)
@output_option
def get(name: str, output: str) -> None:
    """Show a function, with its instances, restarts and last exit reason."""
    with Client() as client:
        function = client.get("functions", name)
    if output != "table":
        emit(function, output, COLUMNS)
        return
    status = function["status"]
    rows = [
        ("Name", function["name"]),
        ("Env", function["env"]),
        ("Package", function["package"]),
        ("Entrypoint", function["entrypoint"]),
        ("Contract", _contract(function)),
        ("Timeout", format_duration(function["timeout"])),
        ("Memory", format_memory(function["memory"])),
        ("CPU", function.get("cpu") or "-"),
        ("Scale", f"min {function['min_scale']}, max {function['max_scale']}"),
        ("Concurrency", _concurrency(function)),
        ("Idle timeout", format_duration(function["idle_timeout"])),
        ("Async retries", function.get("async_retries", 0)),
        ("Queue", _queue(function)),
        ("Env vars", ", ".join(f"{k}={v}" for k, v in function["env_vars"].items()) or "-"),
        ("Secrets", _refs(function.get("secrets"))),
        ("Config maps", _refs(function.get("configmaps"))),
        ("Network", function.get("network") or "(environment's)"),
        ("Instances", _instances(status)),
        ("Restarts", status["restarts"]),
        ("Back-off", _backoff(status)),
        ("Overload", _overload(status)),
        ("Last exit", status.get("last_exit_reason") or "-"),
        ("Last crash", status.get("last_crash_at") or "-"),
        ("Revision", _revision(function)),
    ]
    for key, value in rows:
        click.echo(f"{key + ':':<15}{value}")


def _refs(references: list[dict[str, str]] | None) -> str:
    """Names only, with a namespace other than default shown."""
    names = [
        r["name"] if r.get("namespace", "default") == "default" else f"{r['namespace']}/{r['name']}"
        for r in references or []
    ]
    return ", ".join(names) or "-"


def _revision(function: dict[str, Any]) -> str:
    """The revision served and, when its package's new build is being loaded or was refused,
    that pre-flight."""
    line = str(function.get("revision") or "-")
    preflight = function.get("preflight")
    if preflight:
        build = str(preflight.get("deploy", ""))[:12]
        if preflight.get("state") == "refused":
            first = str(preflight.get("error") or "").splitlines()[-1:] or [""]
            line += f" (build {build} refused: {first[0]})"
        else:
            line += f" (pre-flight of build {build} running)"
    return line


def _contract(function: dict[str, Any]) -> str:
    """What was asked for and, once an instance loaded the function, what is in effect."""
    asked = function.get("contract")
    in_effect = function["status"].get("contract")
    if asked is None:
        return f"{in_effect} (the environment's)" if in_effect else "the environment's"
    if in_effect and in_effect != asked:
        return f"{in_effect} ({asked})"
    return str(asked)


@fn.command("list")
@output_option
def list_(output: str) -> None:
    """List functions."""
    with Client() as client:
        emit(client.list("functions"), output, COLUMNS)


@fn.command()
@click.option("--name", required=True)
def delete(name: str) -> None:
    """Delete a function (and the package created for it)."""
    with Client() as client:
        client.delete("functions", name)
    done(f"function '{name}' deleted")


@fn.command()
@click.option("--name", required=True)
@click.option("--method", "-X", default="GET", show_default=True)
@click.option("--body", "-b", default=None, help="Request body.")
@click.option("--body-file", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--header", "-H", "headers", multiple=True, help="'Name: value' (repeat).")
@click.option(
    "--subpath",
    default="",
    help="The path the function is asked for, e.g. /items/3: through its route when one of"
    " its routes serves it (the function sees /items/3), else at /function/NAME/items/3.",
)
@click.option("--timeout", type=DURATION, default=300.0, show_default=True)
@click.option(
    "--async",
    "asynchronous",
    is_flag=True,
    help="Queue an asynchronous invocation and print its id (see `fissile invocation`).",
)
def test(
    name: str,
    method: str,
    body: str | None,
    body_file: str | None,
    headers: tuple[str, ...],
    subpath: str,
    timeout: float,
    asynchronous: bool,
) -> None:
    """Call a function through the router and print its response (or, with --async, the id
    of the queued invocation)."""
    if body is not None and body_file is not None:
        raise click.UsageError("give --body or --body-file, not both")
    content = Path(body_file).read_bytes() if body_file else (body or "").encode()
    header_map: dict[str, str] = {}
    for header in headers:
        key, sep, value = header.partition(":")
        if not sep:
            raise click.BadParameter(f"{header!r} is not 'Name: value'", param_hint="-H")
        header_map[key.strip()] = value.strip()
    if subpath and not subpath.startswith("/"):
        subpath = "/" + subpath
    with Client() as client:
        client.get("functions", name)
        router = client.info()["router_url"]
        routed = bool(subpath) and _routes_to(client, name, method.upper(), subpath)
    if routed:
        # As the route hands it over: the function sees the path itself, with its params.
        url = f"{router}{subpath}"
        if asynchronous:
            header_map["prefer"] = "respond-async"
    else:
        url = f"{router}/{'async-function' if asynchronous else 'function'}/{name}{subpath}"
        if subpath:
            # A direct call's path is its whole URL path (the router rewrites no path): say
            # so, as a function routing on its path may not expect it.
            direct = f"/function/{name}{subpath.partition('?')[0]}"
            click.echo(
                f"note: no route of {name} serves {method.upper()} {subpath.partition('?')[0]};"
                f" the function sees the direct call's path {direct}",
                err=True,
            )
        token = find_token()
        if token:
            # The platform token opens a locked function door (fissile up --function-door);
            # the router never passes an X-Fissile-* header on to a function.
            header_map["x-fissile-token"] = token
    try:
        response = httpx.request(
            method.upper(), url, content=content, headers=header_map, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise ClientError(f"calling {url} failed: {exc}") from None
    if asynchronous and response.status_code == 202:
        accepted = response.json()
        click.echo(accepted["id"])
        click.echo(f"status: {accepted['status_url']}", err=True)
        return
    sys.stdout.buffer.write(response.content)
    if response.content and not response.content.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    if response.status_code >= 400:
        click.echo(f"Error: {name} answered HTTP {response.status_code}", err=True)
        sys.exit(1)


def _routes_to(client: Client, function: str, method: str, target: str) -> bool:
    """Whether the router would send ``method target`` to ``function`` through one of its
    routes (not a webhook's, which wants a signature), matching as the router does."""
    from fissile.models import HTTPTriggerSpec
    from fissile.router.routes import MethodNotAllowed, Route, RouteTable

    webhooks: set[str] = set()
    routes = []
    for trigger in client.list("httptriggers"):
        if trigger.get("webhook_secret") or trigger.get("auth", "none") != "none":
            webhooks.add(trigger["name"])  # wants credentials: called by name instead
        fields = {k: trigger[k] for k in HTTPTriggerSpec.model_fields if k in trigger}
        for secret in ("webhook_secret", "auth", "basic_users", "jwt"):
            fields.pop(secret, None)
        routes.append(Route.from_trigger(HTTPTriggerSpec.model_validate(fields)))
    try:
        match = RouteTable(routes).match(method, target.partition("?")[0])
    except MethodNotAllowed:
        return False
    return (
        match is not None
        and match.route.function == function
        and match.route.trigger not in webhooks
    )


@fn.command()
@click.option("--name", required=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option(
    "--tail",
    type=int,
    default=None,
    help="Lines of history to show first (of those that pass the filters).  [default: 200,"
    " or all with --since]",
)
@click.option(
    "--since", help="Only lines since then: a duration back (10m, 2h, 1d) or an ISO time."
)
@click.option(
    "--level",
    type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
    help="Only lines of this level and above (printed output ranks as info, stderr as warning).",
)
@click.option("--instance", help="Only lines of this instance (fissile: the platform's notes).")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line (time, instance, level, invocation_id, message, source).",
)
@click.option(
    "--requests",
    is_flag=True,
    help="Print the function's last requests through the router instead (its access log,"
    " at most 200, oldest first).",
)
def logs(
    name: str,
    follow: bool,
    tail: int | None,
    requests: bool,
    since: str | None,
    level: str | None,
    instance: str | None,
    output: str,
) -> None:
    """Print a function's log: what it logged and printed, and the platform's notes about it."""
    with Client() as client:
        if requests:
            if follow:
                raise click.UsageError("--requests cannot be followed (yet): drop --follow")
            records = client.requests(name, limit=max(1, min(tail or 200, 200)))
            for record in records:
                if "warning" in record:  # a cluster node that did not answer
                    click.echo(f"warning: {record['warning']}", err=True)
                    continue
                if output == "json":
                    click.echo(json.dumps(record))
                else:
                    click.echo(text_line(record), nl=False)
            return
        try:
            for chunk in client.logs(
                name,
                follow=follow,
                tail=tail,
                since=since,
                level=level,
                instance=instance,
                json=output == "json",
            ):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
