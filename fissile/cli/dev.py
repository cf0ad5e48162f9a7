"""``fissile dev``: the save-and-call loop for one project. Starts a platform of its own (a
``fissile up`` child on a throw-away data dir unless one is given), applies the project's spec
directory, and applies it again whenever a file of the project changes; only what changed is
updated (the spec plan diffs, a package by its source's hash), so only the functions whose
code or spec changed roll. Prints each request and each line the functions log. Ctrl-C (or
SIGTERM) stops the platform and everything it started."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click
import httpx

from fissile.cli._follow import Follower
from fissile.client import Client, ClientError
from fissile.executor._prctl import die_with_parent
from fissile.specs.apply import execute
from fissile.specs.plan import ORDER, make_plan
from fissile.specs.validate import load_specs

if TYPE_CHECKING:
    import watchfiles

STARTUP_TIMEOUT = 120.0  # a first start builds the python zygote; a loaded machine is slow
STOP_TIMEOUT = 30.0
POLL = 0.2  # seconds between looks at the logs


@click.command()
@click.option(
    "--specdir",
    "--dir",
    "directory",
    default="specs",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The project's spec directory; the project is the directory holding it.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the platform's state here (e.g. .fissile). [default: a temporary directory,"
    " removed on exit]",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Router address.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--api-port", default=8081, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--sandbox",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "strict", "off"]),
    help="As for `fissile up`.",
)
def dev(
    directory: Path, data_dir: Path | None, host: str, port: int, api_port: int, sandbox: str
) -> None:
    """Run the platform for this project, apply its specs, and re-apply them on every change,
    printing each request and each function's output, until Ctrl-C."""
    specdir = directory.resolve()
    if not specdir.is_dir():
        raise click.UsageError(f"no spec directory {directory} (give --specdir)")
    specs = load_specs(specdir)
    if specs.deployment is None and not specs.errors:
        raise click.UsageError(f"no DeploymentConfig in {directory}: run `fissile spec init` first")
    throwaway = data_dir is None
    data = Path(tempfile.mkdtemp(prefix="fissile-dev-")) if data_dir is None else data_dir
    data = data.resolve()
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: no waiting for an apply (a build)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stopping)
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            click.echo(line)

    router_url, api_url = f"http://{host}:{port}", f"http://127.0.0.1:{api_port}"
    child = _start(data, host, port, api_port, sandbox)
    follower = Follower(data, say)
    try:
        failed = _serve(child, follower, stop, specdir, data, router_url, api_url, say)
    finally:
        # Stopping now: more signals must not cut it short (it is bounded: STOP_TIMEOUT).
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        _stop(child)
        follower.poll()  # the last lines
        follower.close()
        if throwaway:
            shutil.rmtree(data, ignore_errors=True)
        say("stopped")
    if failed:
        sys.exit(1)


def _serve(
    child: subprocess.Popen[bytes],
    follower: Follower,
    stop: threading.Event,
    specdir: Path,
    data: Path,
    router_url: str,
    api_url: str,
    say: Callable[[str], None],
) -> bool:
    """Apply, then watch and apply again until ``stop``; whether the platform failed (did not
    start, or stopped by itself)."""
    import watchfiles  # here: every other command would pay for its import

    if not _wait_serving(child, api_url, data, stop):
        return not stop.is_set()
    project = specdir.parent
    client = Client(api_url, token=(data / "api-token").read_text().strip())
    say(f"fissile dev: {project} (specs: {specdir.relative_to(project)})")
    say(f"  router {router_url}   API {api_url}")
    say(f"  other shells: FISSILE_API={api_url} FISSILE_DATA_DIR={data} fissile ...")
    printing = threading.Thread(
        target=_print_logs, args=(follower, stop), name="fissile-dev-logs", daemon=True
    )
    printing.start()
    threading.Thread(
        target=_watch_child, args=(child, stop), name="fissile-dev-child", daemon=True
    ).start()
    apply(client, specdir, say)
    say(f"watching {project} for changes; Ctrl-C stops")
    changes = watchfiles.watch(
        project,
        watch_filter=watchfiles.DefaultFilter(
            ignore_paths=[data],
            # Not sources, and `fissile dev > dev.log` in the project must not loop.
            ignore_entity_patterns=(*watchfiles.DefaultFilter.ignore_entity_patterns, r"\.log$"),
        ),
        stop_event=stop,
        raise_interrupt=False,
    )
    for changed in changes:
        say(f"changed: {', '.join(_names(changed, project))}")
        apply(client, specdir, say)
    printing.join(5)
    client.close()
    if child.poll() is not None:
        say(f"Error: the platform stopped by itself (exit status {child.returncode})")
        return True
    return False


def apply(client: Client, specdir: Path, say: Callable[[str], None] = click.echo) -> bool:
    """Make the platform match the spec directory: what it declares created or updated, what
    this deployment made and it no longer declares deleted. Errors are printed, not raised:
    the loop goes on to the next change."""
    specs = load_specs(specdir)
    for warning in specs.warnings:
        say(f"warning: {warning}")
    if specs.deployment is None and not specs.errors:
        say(f"{specdir}: no DeploymentConfig: run `fissile spec init --dir {specdir}` first")
        return False
    for error in specs.errors:
        say(str(error))
    if specs.errors or specs.deployment is None:
        say("nothing applied: fix the specs and save again")
        return False
    try:
        live = {kind: client.list(kind) for kind in ORDER}
        plan = make_plan(specs.resources, live, specs.deployment.id, delete=True)
        for problem in plan.errors:
            say(problem)
        if plan.errors:
            say("nothing applied: fix the specs and save again")
            return False
        if not plan.changes:
            say("no change to apply")
            return True
        outcome = execute(client, plan, wait=True, echo=say)
    except ClientError as exc:
        say(f"Error: {exc.message}")
        return False
    if not outcome.ok:
        assert outcome.failed is not None
        say(f"failed: {outcome.failed}: {outcome.error}")
        return False
    return True


def _names(changed: set[tuple[watchfiles.Change, str]], project: Path) -> list[str]:
    """The files changed, without an editor's temporary files (made and gone in one batch)."""
    from watchfiles import Change

    added = {path for change, path in changed if change == Change.added}
    gone = {path for change, path in changed if change == Change.deleted}
    names = {path for _, path in changed if not (path in added and path in gone)}
    return sorted(str(Path(path).relative_to(project)) for path in names) or ["(temporary files)"]


def _start(
    data: Path, host: str, port: int, api_port: int, sandbox: str
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "fissile",
        "up",
        "--data-dir",
        str(data),
        "--host",
        host,
        "--port",
        str(port),
        "--api-host",
        "127.0.0.1",
        "--api-port",
        str(api_port),
        "--sandbox",
        sandbox,
        "--log-level",
        "warning",
        "--access-log",
        "json",
    ]
    # A session of its own: the terminal's Ctrl-C reaches this process only, which stops the
    # platform once (a second signal would hurry it); it dies with this process if killed.
    return subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    die_with_parent(signal.SIGTERM)


def _wait_serving(
    child: subprocess.Popen[bytes], api_url: str, data: Path, stop: threading.Event
) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and not stop.is_set():
        if child.poll() is not None:
            click.echo(f"Error: the platform did not start (exit status {child.returncode})")
            return False
        try:
            if httpx.get(f"{api_url}/healthz", timeout=2).status_code == 200 and (
                (data / "api-token").exists()
            ):
                return True
        except httpx.HTTPError:
            pass
        stop.wait(0.2)
    if not stop.is_set():
        click.echo(f"Error: the platform did not answer at {api_url} in {STARTUP_TIMEOUT:g}s")
    return False


def _print_logs(follower: Follower, stop: threading.Event) -> None:
    while not stop.wait(POLL):
        try:
            follower.poll()
        except OSError as exc:
            follower.echo(f"cannot read the logs: {exc}")


def _watch_child(child: subprocess.Popen[bytes], stop: threading.Event) -> None:
    child.wait()
    stop.set()


def _stop(child: subprocess.Popen[bytes]) -> None:
    """SIGINT, as Ctrl-C would, and the time to stop cleanly; then SIGKILL to what is left of
    its process group."""
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGINT)
    try:
        child.wait(STOP_TIMEOUT)
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(child.pid, signal.SIGKILL)  # its group: the child is not reaped yet
    except ProcessLookupError:
        pass
    child.wait()
