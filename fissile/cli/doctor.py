"""``fissile doctor``: which isolation this host supports, and which is active."""

from __future__ import annotations

import click

from fissile.cli._output import emit, output_option
from fissile.client import Client, ClientError


@click.command()
@output_option
def doctor(output: str) -> None:
    """Show the isolation features this host supports and which ones are active, for
    instances and for package builds.

    "Active" comes from the running platform when the API answers, else it is what
    `fissile up --sandbox auto` would use here.
    """
    from fissile.builder.sandbox import BUILD_LAYERS, build_layers
    from fissile.sandbox import FEATURES, probe

    caps = probe()
    source = "if started with --sandbox auto"
    active = dict(caps.supported)
    try:
        with Client(timeout=3.0) as client:
            info = client.info()
        active = info.get("sandbox_active") or active
        source = f"running platform, --sandbox {info.get('sandbox_mode', '?')}"
    except ClientError:
        pass
    builds = build_layers(active)
    rows = [
        {
            "feature": name,
            "supported": "yes" if caps.supported.get(name) else "no",
            "active": "yes" if active.get(name) else "no",
            "builds": "yes" if builds.get(name) else "no",
            "stops": description,
            "why_not": caps.reasons.get(name, ""),
        }
        for name, description in FEATURES.items()
    ]
    if output != "table":
        emit(rows, output, [])
        return
    emit(
        rows,
        output,
        [
            ("FEATURE", lambda r: r["feature"]),
            ("SUPPORTED", lambda r: r["supported"]),
            ("ACTIVE", lambda r: r["active"]),
            ("BUILDS", lambda r: r["builds"]),
            ("WHAT IT STOPS", lambda r: r["stops"]),
            ("WHY NOT", lambda r: r["why_not"] or ""),
        ],
    )
    click.echo(f"\nactive: {source}")
    click.echo("builds: the layers package builds get (a build runs code from its source too)")
    for name, why in BUILD_LAYERS.items():
        if active.get(name):
            click.echo(f"  no {name} for builds: {why}")
    click.echo(caps.summary())
