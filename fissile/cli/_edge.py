"""The edge options of ``route create`` and ``route update``: host, CORS, auth, rate."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def edge_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--host", default=None, help="Serve only requests for this host name."),
        click.option(
            "--cors-origin",
            "cors_origins",
            multiple=True,
            help="Origin allowed to call from a browser (repeat; '*' for any).",
        ),
        click.option(
            "--cors-methods", default=None, help="Comma-separated methods [default: the route's]."
        ),
        click.option("--cors-headers", default=None, help="Comma-separated request headers."),
        click.option(
            "--cors-credentials", is_flag=True, default=None, help="Allow cookies/Authorization."
        ),
        click.option("--cors-max-age", type=click.IntRange(0, 86400), default=None),
        click.option(
            "--auth",
            type=click.Choice(["none", "apikey", "basic", "jwt"]),
            default=None,
            help="Who may call [default: none].",
        ),
        click.option(
            "--basic-user",
            "basic_users",
            multiple=True,
            metavar="USER:PASSWORD",
            help="A basic-auth user (repeat); the password is hashed before it leaves the CLI.",
        ),
        click.option(
            "--basic-users-file",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            default=None,
            help="USER:PASSWORD lines (keeps passwords off the command line).",
        ),
        click.option(
            "--jwt-secret",
            default=None,
            envvar="FISSILE_JWT_SECRET",
            help="HMAC secret of the tokens [env: FISSILE_JWT_SECRET].",
        ),
        click.option(
            "--jwt-jwks-file", default=None, help="JWKS file of the tokens' public keys (absolute)."
        ),
        click.option("--jwt-audience", default=None, help="Required 'aud' claim."),
        click.option("--jwt-issuer", default=None, help="Required 'iss' claim."),
        click.option("--jwt-algorithm", "jwt_algorithms", multiple=True, help="Accepted (repeat)."),
        click.option("--rate", default=None, help="Most requests, such as 100/s, 600/m."),
        click.option("--burst", type=click.IntRange(1), default=None, help="Requests at once."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), command)


def apply_edge(body: dict[str, Any], values: dict[str, Any]) -> None:
    """Set the edge fields of a trigger's ``body`` from the options given (others kept)."""
    from fissile.router.passwords import hash_password

    if values["host"] is not None:
        body["host"] = values["host"] or None
    cors = dict(body.get("cors") or {})
    if values["cors_origins"]:
        cors["origins"] = list(values["cors_origins"])
    if values["cors_methods"] is not None:
        cors["methods"] = _split(values["cors_methods"])
    if values["cors_headers"] is not None:
        cors["headers"] = _split(values["cors_headers"])
    if values["cors_credentials"] is not None:
        cors["credentials"] = values["cors_credentials"]
    if values["cors_max_age"] is not None:
        cors["max_age"] = values["cors_max_age"]
    if cors:
        if not cors.get("origins"):
            raise click.UsageError("CORS needs at least one --cors-origin")
        body["cors"] = cors
    if values["auth"] is not None:
        body["auth"] = values["auth"]
    lines = list(values["basic_users"])
    if values["basic_users_file"] is not None:
        lines += [
            line.strip()
            for line in values["basic_users_file"].read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if lines:
        users = dict(body.get("basic_users") or {})
        for line in lines:
            user, colon, password = line.partition(":")
            if not colon or not user or not password:
                raise click.BadParameter(
                    f"{user or line!r} is not USER:PASSWORD", param_hint="--basic-user"
                )
            # Hashed here: neither the API's log nor a spec file ever holds the password.
            users[user] = hash_password(password)
        body["basic_users"] = users
    jwt = dict(body.get("jwt") or {})
    if values["jwt_secret"] is not None:
        jwt["secret"], jwt["jwks_file"] = values["jwt_secret"], None
    if values["jwt_jwks_file"] is not None:
        jwt["jwks_file"], jwt["secret"] = str(Path(values["jwt_jwks_file"]).resolve()), None
    for option, key in (("jwt_audience", "audience"), ("jwt_issuer", "issuer")):
        if values[option] is not None:
            jwt[key] = values[option] or None
    if values["jwt_algorithms"]:
        jwt["algorithms"] = list(values["jwt_algorithms"])
    if jwt:
        body["jwt"] = jwt
    if values["rate"] is not None:
        body["rate"] = values["rate"] or None
        if not body["rate"]:
            body["burst"] = None
    if values["burst"] is not None:
        body["burst"] = values["burst"]


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def describe(trigger: dict[str, Any]) -> str:
    """The edge settings of a route in a few words, for the table."""
    parts = []
    if trigger.get("host"):
        parts.append(f"host={trigger['host']}")
    if trigger.get("auth", "none") != "none":
        parts.append(f"auth={trigger['auth']}")
    if trigger.get("cors"):
        parts.append("cors=" + json.dumps(",".join(trigger["cors"].get("origins", []))))
    if trigger.get("rate"):
        parts.append(f"rate={trigger['rate']}")
    return " ".join(parts)
