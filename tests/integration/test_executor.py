"""fissile/executor with a real store, a real zygote, real instances and unix sockets; requests
go through fissile/router/proxy.py forward(), as the router sends them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from intkit import Harness, kill_survivors, pid_alive, until

from fissile.executor import FunctionNotFound
from fissile.executor.connection import InstanceResponse
from fissile.models import BuildState, BuildStatus, EnvironmentSpec
from fissile.router.proxy import Answer, forward

CODE = """
import os, sys, time

def main(request):
    if "sleep" in request.query:
        time.sleep(float(request.query["sleep"]))
    if "exit" in request.query:
        os._exit(int(request.query["exit"]))
    if "raise" in request.query:
        raise KeyError(request.query["raise"])
    if "print" in request.query:
        print(request.query["print"])
    return {"pid": os.getpid(), "greeting": os.environ.get("GREETING"), "body": request.text}
"""


def http(target: str = "/", body: bytes = b"") -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nhost: test\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def send(harness: Harness, function: str, target: str = "/", body: bytes = b"") -> Any:
    pool = harness.executor.function(function)
    return await forward(harness.executor, pool, http(target, body))


async def ok(harness: Harness, function: str, target: str = "/") -> dict[str, Any]:
    response = await send(harness, function, target)
    assert isinstance(response, InstanceResponse), json.loads(response.body)
    assert response.status == 200, response.body
    result: dict[str, Any] = json.loads(response.body)
    return result


def error(answer: Any) -> dict[str, Any]:
    assert isinstance(answer, Answer), f"expected an answer from the platform, got {answer!r}"
    result: dict[str, Any] = json.loads(answer.body)["error"]
    return result


async def test_cold_start_then_reuse(harness: Harness) -> None:
    harness.function("hello", CODE)
    pool = harness.executor.function("hello")
    assert pool.instances == []
    first = await ok(harness, "hello")
    second = await ok(harness, "hello")
    assert first["pid"] == second["pid"]
    assert first["pid"] not in (os.getpid(), harness.executor.environments["python"].zygote.pid)
    assert [i.pid for i in pool.instances] == [first["pid"]]
    status = harness.executor.status("hello")
    assert (status.instances, status.busy, status.restarts) == (1, 0, 0)


async def test_request_body_reaches_the_function(harness: Harness) -> None:
    harness.function("echo", CODE)
    response = await send(harness, "echo", "/", b"x" * 100_000)
    assert isinstance(response, InstanceResponse)
    assert json.loads(response.body)["body"] == "x" * 100_000


async def test_warm_pool_is_refilled(harness: Harness) -> None:
    env = harness.executor.environments["python"]
    warm = await until(lambda: list(env.warm))
    harness.function("hello", CODE)
    served = await ok(harness, "hello")
    # The warm instance became the function's instance, and a new warm one was forked.
    assert served["pid"] == warm[0].pid
    refilled = await until(lambda: list(env.warm))
    assert refilled[0].pid != served["pid"]


async def test_unknown_function(harness: Harness) -> None:
    with pytest.raises(FunctionNotFound, match="function 'nope' not found"):
        harness.executor.function("nope")


async def test_function_raising_is_a_500(harness: Harness) -> None:
    harness.function("boom", CODE)
    response = await send(harness, "boom", "/?raise=oops")
    assert isinstance(response, InstanceResponse)
    assert response.status == 500
    body = json.loads(response.body)["error"]
    assert (body["type"], body["message"], body["function"]) == ("KeyError", "'oops'", "boom")
    # The instance keeps serving.
    assert (await ok(harness, "boom"))["pid"] == harness.executor.function("boom").instances[0].pid


async def test_instance_exiting_is_a_502_naming_the_status(harness: Harness) -> None:
    harness.function("quitter", CODE)
    pid = (await ok(harness, "quitter"))["pid"]
    answer = await send(harness, "quitter", "/?exit=3")
    assert answer.status == 502
    failure = error(answer)
    assert failure["code"] == "instance_died"
    assert "exited with status 3" in failure["message"]
    await until(lambda: not pid_alive(pid))
    await until(lambda: harness.executor.status("quitter").restarts)
    status = harness.executor.status("quitter")
    assert (status.restarts, status.last_exit_reason) == (1, "exited with status 3")
    # The next request gets a fresh instance.
    assert (await ok(harness, "quitter"))["pid"] != pid


async def test_timeout_kills_the_instance(harness: Harness) -> None:
    harness.function("slow", CODE, timeout=1)
    pid = (await ok(harness, "slow"))["pid"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await send(harness, "slow", "/?sleep=10")
    assert 0.9 < loop.time() - started < 3
    assert answer.status == 504
    failure = error(answer)
    assert failure["code"] == "timeout"
    assert "did not answer within 1s; its instance was killed" in failure["message"]
    await until(lambda: not pid_alive(pid))
    status = harness.executor.status("slow")
    assert status.last_exit_reason == "timeout after 1s"
    # Killed for overrunning, which is not a crash: no restart counted, no back-off armed.
    assert (status.timeouts, status.restarts, status.failures_in_a_row) == (1, 0, 0)
    assert (await ok(harness, "slow"))["pid"] != pid


async def test_load_failure_is_a_500_naming_the_problem(harness: Harness) -> None:
    harness.function("broken", CODE, entrypoint="missing_attribute")
    answer = await send(harness, "broken")
    assert answer.status == 500
    failure = error(answer)
    assert failure["code"] == "load_failed"
    assert failure["message"] == "module 'fx_broken' has no attribute 'missing_attribute'"


async def test_crash_while_loading(harness: Harness) -> None:
    harness.function("crashy", "import os\nos._exit(7)\n")
    answer = await send(harness, "crashy")
    assert answer.status == 500
    failure = error(answer)
    assert failure["code"] == "load_failed"
    assert "instance died while loading crashy" in failure["message"]


async def test_failed_package(harness: Harness) -> None:
    harness.function("unbuilt", CODE)
    record = harness.store.get("packages", "unbuilt-pkg")
    failed = BuildStatus(state=BuildState.failed, log="pip exploded")
    harness.store.update(
        "packages", "unbuilt-pkg", {**record.data, "status": failed.model_dump(mode="json")}
    )
    answer = await send(harness, "unbuilt")
    assert answer.status == 500
    failure = error(answer)
    assert failure["code"] == "build_failed"
    assert "package 'unbuilt-pkg' failed to build" in failure["message"]


async def test_updating_env_vars_rolls_to_a_new_instance(harness: Harness) -> None:
    harness.function("roll", CODE, env_vars={"GREETING": "hello"})
    before = await ok(harness, "roll")
    assert before["greeting"] == "hello"
    (old,) = harness.executor.function("roll").instances
    harness.update_function("roll", env_vars={"GREETING": "bonjour"})
    after = await ok(harness, "roll")
    assert after["greeting"] == "bonjour"
    assert after["pid"] != before["pid"]
    await until(old.exited.is_set)
    assert not pid_alive(before["pid"])
    assert harness.executor.status("roll").restarts == 0  # retired, not crashed


async def test_updating_only_limits_keeps_the_instance(harness: Harness) -> None:
    harness.function("steady", CODE)
    before = await ok(harness, "steady")
    harness.update_function("steady", timeout=30, max_scale=3)
    assert (await ok(harness, "steady"))["pid"] == before["pid"]


async def test_rebuilt_package_rolls_to_the_new_code(harness: Harness) -> None:
    harness.function("rebuilt", "def main(request):\n    return 'v1'\n")
    response = await send(harness, "rebuilt")
    assert response.body == b"v1"
    new_deploy = harness.deploy_root / "rebuilt-v2"
    new_deploy.mkdir()
    (new_deploy / "fx_rebuilt.py").write_text("def main(request):\n    return 'v2'\n")
    record = harness.store.get("packages", "rebuilt-pkg")
    status = BuildStatus(state=BuildState.succeeded, deploy="rebuilt-v2")
    harness.store.update(
        "packages", "rebuilt-pkg", {**record.data, "status": status.model_dump(mode="json")}
    )
    assert (await send(harness, "rebuilt")).body == b"v2"


async def test_scale_out_under_concurrent_requests(harness: Harness) -> None:
    harness.function("wide", CODE, max_scale=2)
    first, second = await asyncio.gather(
        send(harness, "wide", "/?sleep=0.4"), send(harness, "wide", "/?sleep=0.4")
    )
    assert (first.status, second.status) == (200, 200), (first.body, second.body)
    pids = {json.loads(first.body)["pid"], json.loads(second.body)["pid"]}
    assert len(pids) == 2
    assert len(harness.executor.function("wide").instances) == 2


async def test_max_scale_queues_requests(harness: Harness) -> None:
    harness.function("narrow", CODE, max_scale=1)
    responses = await asyncio.gather(*(send(harness, "narrow", "/?sleep=0.1") for _ in range(3)))
    assert {r.status for r in responses} == {200}
    assert len({json.loads(r.body)["pid"] for r in responses}) == 1


async def test_min_scale_keeps_one_instance(harness: Harness) -> None:
    harness.function("warm", CODE, min_scale=1, idle_timeout=0.2)
    pool = harness.executor.function("warm")
    instances = await until(lambda: list(pool.instances))
    pid = instances[0].pid
    # Two reaper rounds later the instance is still there, unused.
    await asyncio.sleep(1.1)
    assert [i.pid for i in pool.instances] == [pid]
    assert (await ok(harness, "warm"))["pid"] == pid


async def test_idle_instances_are_reaped(harness: Harness) -> None:
    harness.function("idle", CODE, idle_timeout=0.2)
    pid = (await ok(harness, "idle"))["pid"]
    pool = harness.executor.function("idle")
    (instance,) = pool.instances
    await until(lambda: not pool.instances, timeout=3)
    await until(instance.exited.is_set)
    assert not pid_alive(pid)
    assert harness.executor.status("idle").restarts == 0
    assert (await ok(harness, "idle"))["pid"] != pid


async def test_deleting_a_function_stops_its_instances(harness: Harness) -> None:
    harness.function("doomed", CODE)
    pid = (await ok(harness, "doomed"))["pid"]
    harness.store.delete("functions", "doomed")
    with pytest.raises(FunctionNotFound):
        harness.executor.function("doomed")
    await until(lambda: not pid_alive(pid))


async def test_function_output_goes_to_its_log(harness: Harness) -> None:
    harness.function("chatty", CODE)
    await ok(harness, "chatty", "/?print=hello-from-the-function")
    log = harness.logs.function_log("chatty")
    await until(lambda: log.exists() and "hello-from-the-function" in log.read_text())
    text = log.read_text()
    assert "fissile INFO [-] instance i" in text and "ready (pid" in text


async def test_zygote_death_is_survived(harness: Harness) -> None:
    harness.function("phoenix", CODE)
    env = harness.executor.environments["python"]
    old_zygote = env.zygote
    assert old_zygote is not None and old_zygote.pid is not None
    instance_pid = (await ok(harness, "phoenix"))["pid"]
    os.kill(old_zygote.pid, signal.SIGKILL)
    # Its instances die with it (parent-death signal), and the environment restarts it.
    await until(lambda: not pid_alive(instance_pid))
    await until(lambda: env.zygote is not None and env.zygote is not old_zygote)
    assert (await ok(harness, "phoenix"))["pid"] != instance_pid


async def test_stop_leaves_no_processes(harness: Harness) -> None:
    harness.function("one", CODE)
    harness.function("two", CODE, min_scale=1)
    await ok(harness, "one")
    await until(lambda: harness.executor.function("two").instances)
    await until(lambda: harness.executor.environments["python"].warm)
    pids = harness.pids()
    assert len(pids) >= 4  # zygote, two function instances, a warm one
    assert all(pid_alive(pid) for pid in pids)
    run_dir = harness.executor.run_dir
    await harness.stop()
    # Gone when stop() returns: the zygote kills and reaps its instances before exiting.
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert not run_dir.exists()


async def test_slow_loading_is_a_503_and_the_instance_is_killed(harness: Harness) -> None:
    harness.function("slowload", "import time\ntime.sleep(30)\n" + CODE, timeout=1)

    def loading() -> list[int]:
        return [i.pid for i in harness.executor._by_pid.values() if i.function == "slowload"]

    request = asyncio.create_task(send(harness, "slowload"))
    pids = await until(loading)
    assert len(pids) == 1  # still importing
    answer = await request
    # The request waited its queue timeout (the timeout, unset) for an instance: 503.
    assert answer.status == 503
    assert error(answer) == {
        "code": "queue_timeout",
        "message": "no instance of slowload became ready within 1s; retry later",
    }
    await until(lambda: not loading())
    await until(lambda: not pid_alive(pids[0]))


async def test_concurrency_shares_one_instance(harness: Harness) -> None:
    harness.function("shared", CODE, concurrency=3, max_scale=1)
    await ok(harness, "shared")
    loop = asyncio.get_running_loop()
    started = loop.time()
    responses = await asyncio.gather(*(send(harness, "shared", "/?sleep=0.4") for _ in range(3)))
    assert loop.time() - started < 1.0  # three 0.4 s calls overlapped
    assert len({json.loads(r.body)["pid"] for r in responses}) == 1


async def test_functions_do_not_share_environment_variables(harness: Harness) -> None:
    harness.function("secretive", CODE, env_vars={"GREETING": "top-secret"})
    harness.function("nosy", CODE)
    secret = await ok(harness, "secretive")
    nosy = await ok(harness, "nosy")
    assert secret["greeting"] == "top-secret"
    assert nosy["greeting"] is None
    assert nosy["pid"] != secret["pid"]


# --- environments --------------------------------------------------------------------------


def update_environment(harness: Harness, **fields: Any) -> None:
    record = harness.store.get("environments", "python")
    harness.store.update("environments", "python", {**record.data, **fields})


async def test_new_preload_restarts_the_zygote_and_rolls_functions(harness: Harness) -> None:
    harness.function("hello", CODE)
    env = harness.executor.environments["python"]
    old_zygote = env.zygote
    assert old_zygote is not None and old_zygote.pid is not None
    before = await ok(harness, "hello")
    update_environment(harness, preload=["json", "fx_no_such_module"])
    await until(lambda: env.zygote is not None and env.zygote is not old_zygote)
    assert env.zygote is not None
    assert set(env.zygote.preload_failures) == {"fx_no_such_module"}
    assert not pid_alive(old_zygote.pid)
    after = await ok(harness, "hello")
    assert after["pid"] != before["pid"]
    assert not pid_alive(before["pid"])


async def test_poolsize_changes_resize_the_warm_pool(harness: Harness) -> None:
    env = harness.executor.environments["python"]
    zygote = env.zygote
    await until(lambda: len(env.warm) == 1)
    update_environment(harness, poolsize=3)
    await until(lambda: len(env.warm) == 3)
    pids = [i.pid for i in env.warm]
    update_environment(harness, poolsize=0)
    await until(lambda: not env.warm)
    await until(lambda: not any(pid_alive(pid) for pid in pids))
    assert env.zygote is zygote  # a pool size change needs no new zygote


async def test_deleting_the_environment_stops_its_zygote(harness: Harness) -> None:
    harness.function("orphaned", CODE)
    env = harness.executor.environments["python"]
    assert env.zygote is not None and env.zygote.pid is not None
    zygote_pid = env.zygote.pid
    harness.store.delete("environments", "python")
    assert "python" not in harness.executor.environments
    await until(lambda: not pid_alive(zygote_pid))
    answer = await send(harness, "orphaned")
    assert answer.status == 503
    assert error(answer)["message"] == "environment 'python' is not running"


def zygotes_of(env: str) -> list[int]:
    """Live zygotes of ``env`` started by this process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        wanted = [b"--env", env.encode(), b"--parent", str(os.getpid()).encode()]
        zygote = b"fissile.executor._zygote" in argv and all(w in argv for w in wanted)
        if zygote and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


async def test_an_environment_deleted_while_its_zygote_starts_leaves_none(
    harness: Harness,
) -> None:
    # The delete stopped the pool before its zygote was there to stop: the zygote then
    # finished starting and served a deleted environment, its process never reaped.
    spec = EnvironmentSpec(name="brief", poolsize=1)
    harness.store.create("environments", "brief", spec.model_dump(mode="json"))
    await until(lambda: zygotes_of("brief"), timeout=30)  # started, not yet ready
    harness.store.delete("environments", "brief")
    await until(lambda: not zygotes_of("brief"), timeout=30)
    assert "brief" not in harness.executor.environments


async def test_stopping_while_a_zygote_starts_leaves_none(harness: Harness) -> None:
    spec = EnvironmentSpec(name="late", poolsize=1)
    harness.store.create("environments", "late", spec.model_dump(mode="json"))
    await until(lambda: zygotes_of("late"), timeout=30)  # started, not yet ready
    await harness.stop()
    assert zygotes_of("late") == []  # killed and reaped by the time stop returns


SUPERVISOR = """
import asyncio, json, sys
from pathlib import Path
from fissile.executor import Executor
from fissile.models import EnvironmentSpec
from fissile.observability import LogBook
from fissile.store.sqlite import SQLiteStore

async def main():
    root, preload, wait_serving = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "serving"
    store = SQLiteStore(root / "fissile.db")
    env = EnvironmentSpec(name="python", poolsize=2, preload=[preload] if preload else [])
    store.create("environments", "python", env.model_dump(mode="json"))
    executor = Executor(store, root / "deploy", LogBook(root / "logs"))
    await executor.start()
    pool = executor.environments["python"]
    while len(pool.warm) < 2:
        await asyncio.sleep(0.01)
    if wait_serving:
        for instance in pool.warm:
            await instance.control("/_fissile/healthz", {}, 10)
    print(json.dumps([pool.zygote.pid, *(i.pid for i in pool.warm)]), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""

# Preloaded into the zygote: a forked instance waits for the zygote to be gone before it goes on
# with its setup (os.setsid comes right before the parent-death signal is armed). That forces the
# order of a race that is otherwise hit only under load.
SLOW_CHILD = """
import os, time

_ZYGOTE = os.getpid()
_setsid = os.setsid

def _setsid_after_the_zygote_died():
    deadline = time.monotonic() + 10
    while os.getppid() == _ZYGOTE and time.monotonic() < deadline:
        time.sleep(0.01)
    return _setsid()

os.setsid = _setsid_after_the_zygote_died
"""


async def run_supervisor(
    root: Path, preload: str, wait: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, list[int]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SUPERVISOR,
        str(root),
        preload,
        wait,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process, json.loads(line)


async def test_no_orphans_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    process, pids = await run_supervisor(tmp_path, "", "serving")
    try:
        assert len(pids) == 3 and all(pid_alive(pid) for pid in pids)
        process.kill()
        await process.wait()
        # The zygote and its instances follow their parent (PR_SET_PDEATHSIG).
        await until(lambda: not any(pid_alive(pid) for pid in pids))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        kill_survivors(pids)


async def test_no_orphans_when_the_zygote_dies_while_forking(tmp_path: Path) -> None:
    (tmp_path / "preload").mkdir()
    (tmp_path / "preload" / "fx_slow_child.py").write_text(SLOW_CHILD)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "preload")}
    process, pids = await run_supervisor(tmp_path, "fx_slow_child", "forked", env)
    zygote, *instances = pids
    try:
        # The supervisor is frozen (it cannot kill the instances it knows of), the zygote is
        # killed while its new instances are still setting up, then the supervisor dies too.
        os.kill(process.pid, signal.SIGSTOP)
        os.kill(zygote, signal.SIGKILL)
        await until(lambda: not pid_alive(zygote))
        process.kill()
        await process.wait()
        await until(lambda: not any(pid_alive(pid) for pid in instances), timeout=2)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        kill_survivors(pids)  # the orphans this test made


async def test_too_many_waiting_requests_are_429(harness: Harness) -> None:
    harness.function("busy", CODE, max_scale=1, queue_limit=1)
    await ok(harness, "busy")
    pool = harness.executor.function("busy")
    running = asyncio.create_task(send(harness, "busy", "/?sleep=0.5"))
    await until(lambda: pool.instances[0].inflight == 1)
    waiting = asyncio.create_task(send(harness, "busy"))
    await until(lambda: pool.waiters)
    answer = await send(harness, "busy")
    assert answer.status == 429
    assert error(answer) == {
        "code": "overloaded",
        "message": "function busy is at capacity (its queue of 1 is full); retry later",
    }
    assert (b"retry-after", b"1") in answer.headers
    assert [r.status for r in await asyncio.gather(running, waiting)] == [200, 200]
    assert harness.executor.status("busy").rejected == 1
