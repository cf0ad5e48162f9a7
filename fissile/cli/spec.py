"""``fissile spec``: a directory of YAML files declaring resources, applied idempotently."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fissile.client import Client, ClientError
from fissile.specs import deployment
from fissile.specs.apply import execute
from fissile.specs.documents import SpecError
from fissile.specs.plan import ORDER, Plan, Step, make_plan
from fissile.specs.validate import SpecSet, load_specs

dir_option = click.option(
    "--dir",
    "--specdir",
    "directory",
    default="specs",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The spec directory.",
)


@click.group()
def spec() -> None:
    """Declarative specs: YAML files for every resource, applied idempotently."""


@spec.command()
@dir_option
@click.option("--name", default=None, help="Name of the deployment [default: the project's].")
@click.option("--id", "--deployid", "ident", default=None, help="Deployment id [default: new].")
def init(directory: Path, name: str | None, ident: str | None) -> None:
    """Create a spec directory with its deployment id."""
    path = deployment.init(directory, name, ident)
    click.echo(f"created {path}; add resources with `--spec` on create commands or by hand")


def _load(directory: Path) -> SpecSet:
    """Load and validate; print warnings, and on errors print every one of them and exit."""
    specs = load_specs(directory)
    for warning in specs.warnings:
        click.echo(f"warning: {warning}", err=True)
    if specs.deployment is None and not specs.errors:
        specs.errors.append(
            SpecError(
                directory,
                0,
                "",
                f"no DeploymentConfig: run `fissile spec init --dir {directory}` first",
            )
        )
    if specs.errors:
        for error in specs.errors:
            click.echo(str(error), err=True)
        count = len(specs.errors)
        raise ClientError(f"{count} error{'s' * (count != 1)} in {directory}; nothing was changed")
    return specs


def _plan(client: Client, specs: SpecSet, delete: bool) -> Plan:
    assert specs.deployment is not None
    live = {kind: client.list(kind) for kind in ORDER}
    for resource in specs.resources:
        if resource.kind == "secrets":
            resource.digest = client.secret_digest(resource.body)
    plan = make_plan(specs.resources, live, specs.deployment.id, delete)
    if plan.errors:
        for error in plan.errors:
            click.echo(error, err=True)
        count = len(plan.errors)
        raise ClientError(f"{count} error{'s' * (count != 1)} in the plan; nothing was changed")
    return plan


@spec.command()
@dir_option
def validate(directory: Path) -> None:
    """Check every spec file; print every error with its file, line and field."""
    specs = _load(directory)
    counts: dict[str, int] = {}
    for resource in specs.resources:
        counts[resource.kind] = counts.get(resource.kind, 0) + 1
    summary = ", ".join(f"{counts[k]} {k}" for k in ORDER if k in counts) or "no resources"
    click.echo(f"{directory} is valid: {summary}")


def _print_plan(plan: Plan, show_unchanged: bool = False) -> None:
    for step in plan.steps:
        if step.action != "unchanged" or show_unchanged:
            click.echo(str(step))
    for step in plan.orphans:
        click.echo(f"{step} (not declared any more; with --delete)")


@spec.command()
@dir_option
@click.option("--delete", is_flag=True, help="Count the deletes apply --delete would make.")
def diff(directory: Path, delete: bool) -> None:
    """Show what apply would create, update and delete."""
    specs = _load(directory)
    with Client() as client:
        plan = _plan(client, specs, delete)
    _print_plan(plan, show_unchanged=True)
    click.echo(plan.summary())


@spec.command()
@dir_option
@click.option("--delete", is_flag=True, help="Delete what this directory made and no longer has.")
@click.option("--wait", is_flag=True, help="Wait for builds and fail on a failed one.")
def apply(directory: Path, delete: bool, wait: bool) -> None:
    """Create or update resources to match the spec directory."""
    specs = _load(directory)
    with Client() as client:
        plan = _plan(client, specs, delete)
        _execute(client, plan, wait)
    for step in plan.orphans:
        click.echo(f"kept {str(step).split(' ', 1)[1]}: not declared any more (use --delete)")
    counts = {a: plan.count(a) for a in ("create", "update", "delete", "unchanged")}
    click.echo(
        f"{counts['create']} created, {counts['update']} updated, {counts['delete']} deleted,"
        f" {counts['unchanged']} unchanged"
    )


def _execute(client: Client, plan: Plan, wait: bool) -> None:
    outcome = execute(client, plan, wait=wait, echo=click.echo)
    if outcome.ok:
        return
    click.echo(f"failed: {outcome.failed}: {outcome.error}", err=True)
    click.echo(f"applied: {_steps(outcome.done)}", err=True)
    click.echo(f"not applied: {_steps(outcome.not_done)}", err=True)
    click.echo("Error: the spec was applied only in part; fix it and apply again", err=True)
    sys.exit(1)


def _steps(steps: list[Step]) -> str:
    return "; ".join(str(step) for step in steps) or "nothing"


@spec.command()
@dir_option
def destroy(directory: Path) -> None:
    """Delete every resource this spec directory's deployment created."""
    specs = load_specs(directory)
    if specs.deployment is None:
        raise ClientError(f"no deployment id in {directory}: nothing to destroy")
    with Client() as client:
        live = {kind: client.list(kind) for kind in ORDER}
        plan = make_plan([], live, specs.deployment.id, delete=True)
        _execute(client, plan, wait=False)
    click.echo(f"{plan.count('delete')} deleted")
