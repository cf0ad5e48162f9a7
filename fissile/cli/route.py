"""``fissile route`` (alias ``httptrigger``): URLs that call functions."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import click

from fissile.cli._edge import apply_edge, describe, edge_options
from fissile.cli._output import Column, done, emit, output_option
from fissile.cli._params import spec_options, write_spec
from fissile.client import Client

COLUMNS: list[Column] = [
    ("NAME", lambda t: t["name"]),
    ("METHODS", lambda t: t["methods"]),
    ("URL", lambda t: t.get("url") or f"{t.get('prefix')}/*"),
    ("FUNCTION", lambda t: _functions(t)),
    ("EDGE", describe),
]


def _functions(trigger: dict[str, Any]) -> str:
    weights = trigger.get("function_weights") or {}
    if not weights:
        return str(trigger["function"])
    return ",".join(f"{name}={weight}" for name, weight in weights.items())


def parse_targets(values: tuple[str, ...]) -> tuple[str, dict[str, int]]:
    """``--function`` values: one NAME, or NAME=WEIGHT for each function of a split. The
    route's ``function`` (the first named) and its weights (empty without a split)."""
    if not values:
        raise click.UsageError("give --function")
    if len(values) == 1 and "=" not in values[0]:
        return values[0], {}
    weights: dict[str, int] = {}
    for value in values:
        name, equals, weight = value.partition("=")
        if not equals or not name or not weight.strip().isdigit():
            raise click.BadParameter(
                f"{value!r}: with several functions, give each as NAME=WEIGHT (a whole number)",
                param_hint="--function",
            )
        if name in weights:
            raise click.BadParameter(f"{name!r} is named twice", param_hint="--function")
        weights[name] = int(weight)
    # The route's own function is a plain one: a revision target (a@3) is only ever a share.
    plain = [name for name in weights if "@" not in name]
    if not plain:
        raise click.BadParameter(
            "a split needs at least one function that is not a revision (NAME=WEIGHT)",
            param_hint="--function",
        )
    return plain[0], weights


FUNCTION_HELP = (
    "The function to call; or NAME=WEIGHT, repeated, to split requests by weight"
    " (--function a=90 --function b=10); NAME@REVISION is one of a function's revisions"
    " (--function a=90 --function a@3=10)."
)


def _name_for(function: str) -> str:
    base = re.sub(r"[^a-z0-9-]", "-", function.lower()).strip("-")[:50] or "route"
    return f"{base}-{secrets.token_hex(3)}"


@click.group()
def route() -> None:
    """HTTP triggers: routes from the router to functions."""


@route.command()
@click.option("--name", default=None, help="Trigger name [default: generated].")
@click.option("--function", "functions", multiple=True, required=True, help=FUNCTION_HELP)
@click.option("--url", default=None, help="Path template, e.g. /students/{id}.")
@click.option("--prefix", default=None, help="Serve this path and everything under it.")
@click.option("--method", "methods", multiple=True, help="HTTP method (repeat; ANY for all).")
@click.option(
    "--webhook-secret",
    default=None,
    envvar="FISSILE_WEBHOOK_SECRET",
    help="Require a GitHub-style X-Hub-Signature-256 HMAC of the body made with this secret"
    " [env: FISSILE_WEBHOOK_SECRET].",
)
@edge_options
@output_option
@spec_options
def create(
    name: str | None,
    functions: tuple[str, ...],
    url: str | None,
    prefix: str | None,
    methods: tuple[str, ...],
    webhook_secret: str | None,
    output: str,
    spec: bool,
    specdir: Path,
    **edge: Any,
) -> None:
    """Route a URL to a function."""
    if (url is None) == (prefix is None):
        raise click.UsageError("give exactly one of --url or --prefix")
    function, weights = parse_targets(functions)
    body: dict[str, Any] = {
        "name": name or _name_for(function),
        "function": function,
        "url": url,
        "prefix": prefix,
        "methods": list(methods) or ["GET"],
    }
    if weights:
        body["function_weights"] = weights
    if webhook_secret:
        body["webhook_secret"] = webhook_secret
    apply_edge(body, edge)
    if spec:
        write_spec(specdir, "HTTPTrigger", body)
        return
    with Client() as client:
        created = client.create("httptriggers", body)
    if output == "table":
        done(f"route '{created['name']}' created: {' '.join(created['methods'])} {url or prefix}")
    else:
        emit(created, output, COLUMNS)


@route.command("list")
@click.option("--function", default=None, help="Only routes to this function.")
@output_option
def list_(function: str | None, output: str) -> None:
    """List routes."""
    with Client() as client:
        triggers = client.list("httptriggers")
    if function:
        triggers = [
            t
            for t in triggers
            if t["function"] == function or function in (t.get("function_weights") or {})
        ]
    emit(triggers, output, COLUMNS)


@route.command()
@click.option("--name", required=True)
@output_option
def get(name: str, output: str) -> None:
    """Show one route."""
    with Client() as client:
        emit(client.get("httptriggers", name), output, COLUMNS)


@route.command()
@click.option("--name", required=True)
@click.option("--function", "functions", multiple=True, help=FUNCTION_HELP)
@click.option("--url", default=None)
@click.option("--prefix", default=None)
@click.option("--method", "methods", multiple=True)
@click.option("--webhook-secret", default=None, help="Set or change the webhook secret.")
@click.option("--no-webhook-secret", is_flag=True, help="Stop checking signatures.")
@click.option("--no-cors", is_flag=True, help="Drop the CORS policy.")
@click.option("--no-basic-user", "drop_users", multiple=True, help="Remove a basic-auth user.")
@edge_options
def update(
    name: str,
    functions: tuple[str, ...],
    url: str | None,
    prefix: str | None,
    methods: tuple[str, ...],
    webhook_secret: str | None,
    no_webhook_secret: bool,
    no_cors: bool,
    drop_users: tuple[str, ...],
    **edge: Any,
) -> None:
    """Change a route."""
    fields = (
        "name",
        "function",
        "function_weights",
        "url",
        "prefix",
        "methods",
        "webhook_secret",
        "labels",
        *("host", "cors", "auth", "basic_users", "jwt", "rate", "burst"),
    )
    with Client() as client:
        current = client.get("httptriggers", name)
        # A read shows the secret masked; sent back so, it is kept as it is.
        body = {k: current[k] for k in fields if k in current}
        if webhook_secret:
            body["webhook_secret"] = webhook_secret
        if no_webhook_secret:
            body["webhook_secret"] = None
        if functions:
            body["function"], body["function_weights"] = parse_targets(functions)
        if url:
            body["url"], body["prefix"] = url, None
        if prefix:
            body["prefix"], body["url"] = prefix, None
        if methods:
            body["methods"] = list(methods)
        if no_cors:
            body["cors"] = None
        users = dict(body.get("basic_users") or {})
        for user in drop_users:
            if users.pop(user, None) is None:
                raise click.BadParameter(f"route {name!r} has no user {user!r}")
        body["basic_users"] = users
        apply_edge(body, edge)
        client.update("httptriggers", name, body)
    done(f"route '{name}' updated")


@route.command()
@click.option("--name", required=True)
def delete(name: str) -> None:
    """Delete a route."""
    with Client() as client:
        client.delete("httptriggers", name)
    done(f"route '{name}' deleted")
