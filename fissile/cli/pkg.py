"""``fissile pkg``: packages (source archives built into deploy directories)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fissile.cli._output import Column, done, emit, output_option
from fissile.cli._params import spec_options, upload_source, write_spec
from fissile.client import Client, ClientError
from fissile.specs.write import relative_source

COLUMNS: list[Column] = [
    ("NAME", lambda p: p["name"]),
    ("ENV", lambda p: p["env"]),
    ("STATUS", lambda p: p["status"]["state"]),
    ("SOURCE", lambda p: p["source"][:12]),
    ("BUILDCMD", lambda p: p.get("buildcmd")),
    ("OWNER", lambda p: p.get("owner")),
]

src_option = click.option(
    "--src",
    "--sourcearchive",
    "src",
    help="Source: a directory, a zip, or a single file.",
)


def report_build(package: dict[str, Any]) -> None:
    """Raise with the build log if the package failed to build."""
    status = package["status"]
    if status["state"] == "failed":
        click.echo(status["log"].rstrip(), err=True)
        raise ClientError(f"package '{package['name']}' failed to build (log above)")


def report_rollout(client: Client, package: dict[str, Any]) -> None:
    """Wait for the functions on a freshly built package to move to it; raise with the load
    errors of those whose pre-flight refused it (they keep their revision)."""
    refused = client.wait_for_rollout(package)
    for function, error in refused.items():
        click.echo(f"function '{function}': {error}", err=True)
    if refused:
        raise ClientError(
            f"package '{package['name']}' was built, but {', '.join(sorted(refused))} refused"
            " it (their pre-flight could not load it; they keep serving their revision)"
        )


@click.group()
def pkg() -> None:
    """Packages: source code plus a build that installs its dependencies."""


@pkg.command()
@click.option("--name", required=True)
@click.option("--env", "env", required=True, help="Environment the package is built for.")
@src_option
@click.option("--buildcmd", default=None, help="Build command, run with $SRC_PKG and $DEPLOY_PKG.")
@click.option("--wait/--no-wait", default=False, help="Wait for the build and show its result.")
@spec_options
def create(
    name: str,
    env: str,
    src: str | None,
    buildcmd: str | None,
    wait: bool,
    spec: bool,
    specdir: Path,
) -> None:
    """Upload a source and start its build."""
    if src is None:
        raise click.UsageError("--src is required")
    if spec:
        source = relative_source(specdir, src)
        fields = {"name": name, "env": env, "source": source, "buildcmd": buildcmd}
        write_spec(specdir, "Package", fields)
        return
    with Client() as client:
        sha = upload_source(client, src)
        body = {"name": name, "env": env, "source": sha, "buildcmd": buildcmd}
        package = client.create("packages", body)
        if wait:
            package = client.wait_for_build(name)
            report_build(package)
    done(f"package '{name}' created ({package['status']['state']})")


@pkg.command()
@click.option("--name", required=True)
@src_option
@click.option("--buildcmd", default=None)
@click.option("--wait/--no-wait", default=False)
def update(name: str, src: str | None, buildcmd: str | None, wait: bool) -> None:
    """Replace a package's source or build command; functions on it roll once it is built."""
    with Client() as client:
        body = client.get("packages", name)
        spec = {k: body.get(k) for k in ("name", "env", "source", "buildcmd", "owner", "labels")}
        if src is not None:
            spec["source"] = upload_source(client, src)
        if buildcmd is not None:
            spec["buildcmd"] = buildcmd or None
        package = client.update("packages", name, spec)
        if wait:
            package = client.wait_for_build(name)
            report_build(package)
            report_rollout(client, package)
    done(f"package '{name}' updated ({package['status']['state']})")


@pkg.command()
@click.option("--name", required=True)
@output_option
def info(name: str, output: str) -> None:
    """Show a package's build status and build log."""
    with Client() as client:
        package = client.get("packages", name)
    if output != "table":
        emit(package, output, COLUMNS)
        return
    status = package["status"]
    click.echo(f"Name:     {package['name']}")
    click.echo(f"Env:      {package['env']}")
    click.echo(f"Source:   {package['source']}")
    click.echo(f"Buildcmd: {package.get('buildcmd') or '-'}")
    click.echo(f"Status:   {status['state']}")
    click.echo(f"Deploy:   {status.get('deploy') or '-'}")
    click.echo("Build log:")
    click.echo(status.get("log") or "(empty)")


@pkg.command()
@click.option("--name", required=True)
@click.option("--wait/--no-wait", default=False)
def rebuild(name: str, wait: bool) -> None:
    """Build a package again (a failed one, or to pick up new dependency releases)."""
    with Client() as client:
        package = client.rebuild(name)
        if wait:
            package = client.wait_for_build(name)
            report_build(package)
            report_rollout(client, package)
    done(f"package '{name}' rebuilding" if not wait else f"package '{name}' rebuilt")


@pkg.command("list")
@output_option
def list_(output: str) -> None:
    """List packages."""
    with Client() as client:
        emit(client.list("packages"), output, COLUMNS)


@pkg.command()
@click.option("--name", required=True)
def delete(name: str) -> None:
    """Delete a package no function uses."""
    with Client() as client:
        client.delete("packages", name)
    done(f"package '{name}' deleted")
