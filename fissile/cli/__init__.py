"""The ``fissile`` command: one module per resource group, each thin (parse, call, print)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
import httpx

import fissile
from fissile.cli import (
    apikey,
    canary,
    dev,
    doctor,
    env,
    fn,
    invocation,
    mqt,
    node,
    pkg,
    route,
    secret,
    spec,
    stats,
    store,
    timer,
    topic,
    up,
    watch,
)
from fissile.client import ClientError


class _Group(click.Group):
    """Turns API and usage errors into one line on stderr and a non-zero exit, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as exc:
            click.echo(f"Error: {exc.message}", err=True)
            sys.exit(1)
        except httpx.TransportError as exc:
            # The client names the API in its own errors; this is the net under the rest.
            click.echo(f"Error: connection failed: {exc or type(exc).__name__}", err=True)
            sys.exit(1)
        except BrokenPipeError:
            # The reader went away (`fissile inv list | head`): not an error of ours.
            sys.stderr.close()
            os._exit(0)
        except OSError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(fissile.__version__, prog_name="fissile")
def cli() -> None:
    """fissile: serverless functions on your own machine, with millisecond cold starts.

    The CLI talks to the control API at $FISSILE_API (default http://127.0.0.1:8081).
    """


cli.add_command(up.up)
cli.add_command(dev.dev)
cli.add_command(doctor.doctor)
cli.add_command(env.env)
cli.add_command(pkg.pkg)
cli.add_command(pkg.pkg, name="package")
cli.add_command(fn.fn)
cli.add_command(fn.fn, name="function")
cli.add_command(route.route)
cli.add_command(apikey.apikey)
cli.add_command(route.route, name="httptrigger")
cli.add_command(route.route, name="ht")
cli.add_command(canary.canary)
cli.add_command(canary.canary, name="canary-config")
cli.add_command(spec.spec)
cli.add_command(secret.secret)
cli.add_command(secret.configmap)
cli.add_command(invocation.invocation)
cli.add_command(invocation.invocation, name="inv")
cli.add_command(timer.timer)
cli.add_command(timer.timer, name="tt")
cli.add_command(mqt.mqt)
cli.add_command(mqt.mqt, name="mqtrigger")
cli.add_command(topic.topic)
cli.add_command(watch.watch)
cli.add_command(store.store)
cli.add_command(stats.top)
cli.add_command(node.node)
fn.fn.add_command(stats.fn_stats)


def main() -> None:
    cli(prog_name="fissile")
