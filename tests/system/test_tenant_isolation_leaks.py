"""Nothing of the supervisor reaches an instance (issue 11, findings 3-6).

A platform is started the way a careless operator would: a secret-looking variable in its
environment and an extra inherited file descriptor (a pipe whose other end the test holds). Each
hostile function then looks for what it should not find: the secret on its stack, the pipe among
its descriptors, a forged caller name, io_uring, a capability bounding set, a writable /sys,
other tenants' cgroups, another function's uid. For each: it is blocked, a neighbour keeps
answering, and the supervisor's memory stays put. Needs root (the full sandbox); skips with
the reason elsewhere, but never under CI=true.
"""

from __future__ import annotations

import errno
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from syskit import Neighbour, Platform, Spawn, write

pytestmark = pytest.mark.slow  # one dedicated platform, another started twice: ~25 s

if os.geteuid() != 0 and os.environ.get("CI") != "true":
    pytest.skip("the full sandbox needs root (namespaces, cgroups)", allow_module_level=True)

SECRET_NAME = "FISSILE_TEST_SECRET_AWS_KEY"
SECRET_VALUE = "leakcheck-7f3a9c2e41b8d6055e"
RSS_BUDGET = 50 * 1024 * 1024

STACK_SCAN = f"""
    import ctypes, os
    SECRET = {SECRET_VALUE!r}.encode()
    def main(request):
        found = {{}}
        with open("/proc/self/maps") as maps:
            for line in maps:
                if line.rstrip().endswith("[stack]"):
                    start, end = (int(part, 16) for part in line.split()[0].split("-"))
                    try:
                        with open("/proc/self/mem", "rb") as mem:
                            mem.seek(start)
                            stack = mem.read(end - start)
                        found["read_with"] = "/proc/self/mem"
                    except OSError:  # not dumpable after the uid drop: read it directly
                        stack = ctypes.string_at(start, end - start)
                        found["read_with"] = "ctypes"
                    found["stack_bytes"] = len(stack)
                    found["in_stack"] = SECRET in stack or {SECRET_NAME!r}.encode() in stack
        try:  # unreadable after the uid drop; the stack scan covers that area anyway
            with open("/proc/self/environ", "rb") as environ:
                found["in_proc_environ"] = SECRET in environ.read()
        except PermissionError:
            found["in_proc_environ"] = False
        found["in_environ"] = any(
            {SECRET_NAME!r} in key or {SECRET_VALUE!r} in value for key, value in os.environ.items()
        )
        return found
"""

FD_LIST = """
    import os
    def main(request):
        fds = {}
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                info = os.fstat(fd)
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue  # the listing's own directory descriptor, closed meanwhile
            fds[fd] = {"target": target, "file": [info.st_dev, info.st_ino]}
        return fds
"""

IO_URING = """
    import ctypes, platform
    # io_uring_setup is 425 on x86_64 and on aarch64 (the generic table) alike.
    NR = {"x86_64": 425, "aarch64": 425}[platform.machine()]
    def main(request):
        libc = ctypes.CDLL(None, use_errno=True)
        params = ctypes.create_string_buffer(120)  # struct io_uring_params
        result = libc.syscall(ctypes.c_long(NR), ctypes.c_uint(1), params)
        return {"result": result, "errno": ctypes.get_errno()}
"""

CAPS_AND_SYS = """
    import os
    def main(request):
        found = {}
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(("CapBnd:", "CapEff:", "CapPrm:")):
                    name, value = line.split(":")
                    found[name] = int(value, 16)
        for what, path in (("mkdir_sys", "/sys/fissile-probe"),
                           ("mkdir_cgroup", "/sys/fs/cgroup/fissile-probe")):
            try:
                os.mkdir(path)
                found[what] = "created"
            except OSError as exc:
                found[what] = exc.errno
        try:
            with open("/sys/kernel/mm/transparent_hugepage/enabled", "w") as handle:
                handle.write("never")
            found["write_sys"] = "written"
        except OSError as exc:
            found["write_sys"] = exc.errno
        found["cgroup_entries"] = sorted(os.listdir("/sys/fs/cgroup"))
        found["sys_readonly"] = bool(os.statvfs("/sys").f_flag & os.ST_RDONLY)
        return found
"""

CALLEE = """
    def main(request):
        return {"caller": request.headers.get("x-fissile-caller")}
"""

FORGER = """
    import http.client, json, os, socket
    def main(request, context):
        honest = context.invoke("callee").json()
        # The client side is in the function's hands: lie in the header it sends.
        context.function = "billing-admin"
        through_context = context.invoke("callee").json()
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(os.environ["FISSILE_PLATFORM_SOCKET"])
        raw = http.client.HTTPConnection("fissile")
        raw.sock = sock
        raw.request("POST", "/invoke/callee", body=b"",
                    headers={"x-fissile-caller": "billing-admin"})
        by_hand = json.loads(raw.getresponse().read())
        return {"honest": honest, "context": through_context, "raw": by_hand}
"""

SPAWNER = """
    import asyncio, sys
    FORKED_WITH_YAML = "yaml" in sys.modules  # from a package zygote that imported it
    async def main(request):
        # The event loop's child watcher needs libuv's signal lock pipe: closing the inherited
        # descriptors must have kept it.
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('child ran')", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await child.communicate()
        return {
            "out": out.decode().strip(),
            "status": child.returncode,
            "package_zygote": FORKED_WITH_YAML,
        }
"""

# The same forked from a package zygote (the import cache makes one for functions importing
# yaml), which makes libuv's pipe anew once more.
CACHED_SPAWNER = SPAWNER + "    import yaml\n"

NEIGHBOUR = """
    def main(request):
        return {"ok": True}
"""

FUNCTIONS = {
    "stackscan": STACK_SCAN,
    "fdlist": FD_LIST,
    "iouring": IO_URING,
    "capsys": CAPS_AND_SYS,
    "callee": CALLEE,
    "forger": FORGER,
    "spawner": SPAWNER,
    "cached-spawner": CACHED_SPAWNER,
    "neighbour": NEIGHBOUR,
}


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture(scope="module")
def leaky_host(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Platform, list[int]]]:
    """A strict platform with a secret in its environment and an inherited pipe; yields it
    and the pipe's inode."""
    read_end, write_end = os.pipe()
    platform = Platform(tmp_path_factory.mktemp("leaks") / "data", ("--sandbox", "strict"))
    platform.extra_env = {SECRET_NAME: SECRET_VALUE}
    platform.pass_fds = (read_end,)
    try:
        platform.start()
        code = tmp_path_factory.mktemp("leak-code")
        platform.ok_many(
            *(
                ("fn", "create", "--name", name, "--code", str(write(code / f"{name}.py", src)))
                for name, src in FUNCTIONS.items()
            )
        )
        assert platform.get("/function/neighbour").status_code == 200
        leaked = os.fstat(read_end)
        yield platform, [leaked.st_dev, leaked.st_ino]
        platform.stop_cleanly()
    finally:
        platform.abandon()
        os.close(read_end)
        os.close(write_end)


@pytest.fixture
def contained(leaky_host: tuple[Platform, list[int]]) -> Iterator[Platform]:
    """The platform, watched: a neighbour answers throughout, and the supervisor's RSS grows
    by less than RSS_BUDGET."""
    platform, _ = leaky_host
    before = rss(platform.pid)
    with Neighbour(platform):
        yield platform
    grown = rss(platform.pid) - before
    assert grown < RSS_BUDGET, f"the supervisor grew by {grown / 2**20:.1f} MiB"


def call(platform: Platform, name: str) -> Any:
    response = platform.get(f"/function/{name}", timeout=60.0)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_secret_is_in_the_supervisor_but_not_on_an_instance_stack(
    leaky_host: tuple[Platform, list[int]], contained: Platform
) -> None:
    platform, _ = leaky_host
    # Not vacuous: the supervisor does hold it.
    assert SECRET_VALUE.encode() in Path(f"/proc/{platform.pid}/environ").read_bytes()
    found = call(contained, "stackscan")
    assert found["stack_bytes"] > 0, found
    assert found["in_stack"] is False, found
    assert found["in_proc_environ"] is False, found
    assert found["in_environ"] is False, found


def test_an_instance_holds_only_its_socket_output_and_runtime_descriptors(
    leaky_host: tuple[Platform, list[int]], contained: Platform
) -> None:
    platform, leaked = leaky_host

    def file_of(fd: str) -> list[int] | None:
        try:
            info = os.stat(f"/proc/{platform.pid}/fd/{fd}")
        except FileNotFoundError:
            return None  # closed between the listing and the stat (the supervisor is busy)
        return [info.st_dev, info.st_ino]

    # Not vacuous: the supervisor holds the pipe, and its log file on 1 and 2.
    assert leaked in [file_of(fd) for fd in os.listdir(f"/proc/{platform.pid}/fd")]
    supervisor_log = [file_of("1"), file_of("2")]
    fds = {int(fd): info for fd, info in call(contained, "fdlist").items()}
    assert fds[0]["target"] == "/dev/null", fds
    assert fds[1]["target"].startswith("pipe:"), fds
    assert fds[2]["target"] == fds[1]["target"], fds
    for fd, info in fds.items():
        assert info["file"] != leaked, (fd, fds)
        assert info["file"] not in supervisor_log, (fd, fds)
    pipes: dict[str, list[int]] = {}
    for fd, info in fds.items():
        if fd > 2 and info["target"].startswith("pipe:"):
            pipes.setdefault(info["target"], []).append(fd)
    others = {
        fd: info["target"]
        for fd, info in fds.items()
        if fd > 2
        and not info["target"].startswith(("socket:", "anon_inode:", "pipe:"))
        and info["target"] != "/dev/null"
    }
    # Sockets (its listener, the router's connection to it), the event loop's anonymous
    # inodes, pipes with both ends here (the loop's own wake-up pipes) and /dev/null (libuv
    # keeps one open in reserve for when accept() runs out of descriptors): nothing else.
    assert others == {}, fds
    assert all(len(ends) == 2 for ends in pipes.values()), fds
    assert fds[1]["target"] not in pipes, fds


@pytest.mark.parametrize("name", ["spawner", "cached-spawner"])
def test_the_runtime_keeps_what_it_needs_to_start_processes(contained: Platform, name: str) -> None:
    answer = call(contained, name)
    assert answer == {"out": "child ran", "status": 0, "package_zygote": name != "spawner"}


def test_io_uring_is_denied(contained: Platform) -> None:
    found = call(contained, "iouring")
    assert found["result"] == -1, found
    assert found["errno"] in (errno.EPERM, errno.ENOSYS), found


def test_no_capabilities_and_a_read_only_sys_without_cgroups(contained: Platform) -> None:
    found = call(contained, "capsys")
    assert found["CapBnd"] == 0, found
    assert found["CapEff"] == 0 and found["CapPrm"] == 0, found
    assert found["mkdir_sys"] == errno.EROFS, found
    assert found["mkdir_cgroup"] in (errno.EROFS, errno.ENOENT), found
    assert found["write_sys"] in (errno.EROFS, errno.ENOENT, errno.EACCES), found
    assert found["sys_readonly"] is True, found
    # The host's hierarchies (every instance's group with its figures) are not mounted here.
    assert found["cgroup_entries"] == [], found


def test_the_platform_names_the_caller(contained: Platform) -> None:
    found = call(contained, "forger")
    assert found["honest"] == {"caller": "forger"}, found
    assert found["context"] == {"caller": "forger"}, found
    assert found["raw"] == {"caller": "forger"}, found


def test_a_client_cannot_name_a_caller_through_the_router(contained: Platform) -> None:
    response = contained.get("/function/callee", headers={"x-fissile-caller": "billing-admin"})
    assert response.status_code == 200, response.text
    assert response.json() == {"caller": None}


UID_PROBE = """
    import os
    def main(request):
        return {"uid": os.getuid()}
"""


def colliding_names() -> tuple[str, str]:
    """Two function names that the old ``crc32(name) % 65000`` gave one uid."""
    seen: dict[int, str] = {}
    for i in range(100_000):
        name = f"uid-{i}"
        bucket = zlib.crc32(name.encode()) % 65_000
        if bucket in seen:
            return seen[bucket], name
        seen[bucket] = name
    raise AssertionError("no collision found")


def test_colliding_names_get_distinct_uids_that_survive_a_restart(
    spawn: Spawn, tmp_path: Path
) -> None:
    first, second = colliding_names()
    platform = spawn(None, "--sandbox", "strict")
    code = write(tmp_path / "uid.py", UID_PROBE)
    platform.ok_many(
        ("fn", "create", "--name", first, "--code", str(code)),
        ("fn", "create", "--name", second, "--code", str(code)),
        ("fn", "create", "--name", "neighbour", "--code", str(write(tmp_path / "n.py", NEIGHBOUR))),
    )
    before = rss(platform.pid)
    with Neighbour(platform):
        uids = {name: call(platform, name)["uid"] for name in (first, second)}
    assert rss(platform.pid) - before < RSS_BUDGET
    assert uids[first] != uids[second], uids
    assert all(uid >= 100_000 for uid in uids.values()), uids
    platform.stop_cleanly()
    restarted = spawn(platform.data_dir, "--sandbox", "strict")
    assert {name: call(restarted, name)["uid"] for name in uids} == uids
    restarted.stop_cleanly()
