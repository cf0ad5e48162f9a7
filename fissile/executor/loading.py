"""Loading a function into an instance, and pre-flight: loading a new revision into a fresh,
sandboxed instance of its own before any instance of the function rolls to it.

``load`` is the one loader: the function pool's specialization and the pre-flight both use it,
so a pre-flight fails exactly when a cold start of that revision would (a syntax error, a
missing module, an exception at import, a contract that does not fit, a program that does not
start), with the same message.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fissile.executor import program
from fissile.executor.errors import LoadFailed
from fissile.executor.instance import Instance, State
from fissile.models import FunctionSpec
from fissile.values.mounts import ValuesUnavailable

if TYPE_CHECKING:
    from fissile.executor.executor import Executor


async def load(
    executor: Executor, instance: Instance, spec: FunctionSpec, deploy_dir: str
) -> bytes:
    """Specialize ``instance`` as ``spec`` on the build at ``deploy_dir``: the instance's answer
    (JSON: whether the function is async, its contract), or ``LoadFailed``."""
    env = executor.environment(spec.env).spec
    instance.deploy_dir = deploy_dir
    fork_config = executor.sandbox.fork_config
    try:
        values = executor.values.prepare(
            spec,
            executor.uid_of(spec.name) if fork_config.get("drop_uid") else None,
            mounted=bool(fork_config.get("filesystem")),
        )
    except (ValuesUnavailable, OSError) as exc:
        raise LoadFailed(f"cannot give {spec.name} its secrets and config maps: {exc}") from exc
    payload: dict[str, Any] = {
        "function": spec.name,
        "deploy_dir": deploy_dir,
        "values_dir": values.directory,
        "entrypoint": spec.entrypoint,
        "contract": spec.contract or env.contract,
        "env_vars": {
            **values.env_vars,
            "FISSILE_PLATFORM_SOCKET": executor.platform_socket_for_instances(),
        },
        "concurrency": spec.concurrency or 1,
        "timeout": spec.timeout,
        "memory": spec.memory,
        "network": spec.network or env.network,
        "uid": executor.uid_of(spec.name),
    }
    if env.image != "python":
        payload.update(image=env.image, command=env.command)
    if env.image == "command":
        program.follow_output(instance)
    try:
        executor.limit(instance, spec)
    except OSError as exc:
        raise LoadFailed(f"cannot apply the limits of {spec.name}: {exc}") from exc
    try:
        response = await instance.control("/_fissile/specialize", payload, spec.timeout)
    except TimeoutError:
        raise LoadFailed(
            f"loading {spec.name} took longer than its timeout ({spec.timeout:g}s)"
        ) from None
    except Exception as exc:
        reason = instance.exit_reason or str(exc)
        raise LoadFailed(f"instance died while loading {spec.name}: {reason}") from exc
    if response.status != 200:
        raise LoadFailed(error_message(response.body))
    if env.image == "command":
        path = program.socket_of(response.body)
        await program.wait_listening(instance, env.command or "", spec.timeout, path)
    return response.body


async def preflight(executor: Executor, spec: FunctionSpec, deploy_dir: str) -> None:
    """Load ``spec`` on ``deploy_dir`` in a fresh instance, then stop it; ``LoadFailed`` with
    the load's error if it does not load. The instance is sandboxed like any other (forked
    from the same zygote or package zygote, the function's uid, limits and network) and never
    serves a request; its output goes to the function's log."""
    source = await executor.instance_source(spec.env, deploy_dir)
    instance = await source.take()
    instance.state = State.specializing
    instance.function = spec.name
    # Whatever becomes of it is no crash of the function: no restart counted, no back-off.
    instance.expected_exit = True
    try:
        await load(executor, instance, spec, deploy_dir)
    finally:
        executor.retire(instance)


def error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:500]
