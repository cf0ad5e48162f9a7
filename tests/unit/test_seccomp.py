"""fissile/sandbox/seccomp.py: the filter, tried in forked children (never in pytest itself)."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fissile.sandbox import seccomp

pytestmark = pytest.mark.skipif(not seccomp.supported(), reason="seccomp filters need Linux")

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17
PTRACE_TRACEME = 0
X86_64 = platform.machine() == "x86_64"
NR = seccomp.X86_64_SYSCALLS if X86_64 else seccomp.AARCH64_SYSCALLS
# A mount that fails harmlessly (ENOENT) should the filter let it through.
MOUNT_ARGS = (b"none", b"/nonexistent-fissile-seccomp", b"tmpfs", 0, None)


def in_child(body: Callable[[], Any]) -> Any:
    """Run ``body`` in a forked child and return what it returned (JSON round trip)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        report: dict[str, Any] = {"error": "no report"}
        try:
            os.close(read_fd)
            report = {"result": body()}
        except BaseException as exc:
            report = {"error": repr(exc)}
        finally:
            try:
                os.write(write_fd, json.dumps(report).encode())
            finally:
                os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        data = reader.read()
    _, status = os.waitpid(pid, 0)
    assert data, f"child reported nothing (wait status {status:#x})"
    report = json.loads(data)
    assert "error" not in report, report["error"]
    assert os.waitstatus_to_exitcode(status) == 0
    return report["result"]


def libc_errno(name: str, *args: Any) -> int:
    """Call a libc function: 0 if it succeeded, else its errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    return 0 if getattr(libc, name)(*args) >= 0 else ctypes.get_errno()


def clone_errno(flags: int) -> int:
    """clone(2) as a fork with ``flags``: 0 if it succeeded, else its errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    pid = libc.syscall(ctypes.c_long(NR["clone"]), ctypes.c_ulong(flags | SIGCHLD), 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    if pid < 0:
        return ctypes.get_errno()
    os.waitpid(pid, 0)
    return 0


def test_supported_on_linux() -> None:
    if sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64"):
        assert seccomp.supported()


def test_mount_unshare_ptrace_denied() -> None:
    def body() -> list[int]:
        seccomp.install_filter()
        return [
            libc_errno("mount", *MOUNT_ARGS),
            libc_errno("umount2", b"/", 0),
            libc_errno("unshare", CLONE_NEWNS),
            libc_errno("ptrace", PTRACE_TRACEME, 0, None, None),
        ]

    assert in_child(body) == [errno.EPERM] * 4


def test_io_uring_denied() -> None:
    # Without the filter io_uring_setup(1, NULL) fails with EFAULT (or ENOSYS/EPERM where the
    # kernel has it off): EPERM alone says nothing, so the unfiltered answer is checked first.
    def setup() -> int:
        return libc_errno("syscall", ctypes.c_long(NR["io_uring_setup"]), 1, None)

    def body() -> list[int]:
        seccomp.install_filter()
        return [
            setup(),
            libc_errno("syscall", ctypes.c_long(NR["io_uring_enter"]), -1, 0, 0, 0, None),
            libc_errno("syscall", ctypes.c_long(NR["io_uring_register"]), -1, 0, None, 0),
        ]

    if in_child(setup) == errno.EPERM:
        pytest.skip("io_uring is disabled on this host (kernel.io_uring_disabled)")
    assert in_child(body) == [errno.EPERM] * 3


def test_clone_with_namespace_flags_denied_and_clone3_is_enosys() -> None:
    def body() -> list[int]:
        seccomp.install_filter()
        clone3 = libc_errno("syscall", ctypes.c_long(NR["clone3"]), None, 0)
        return [clone_errno(CLONE_NEWNS), clone_errno(CLONE_NEWUSER), clone_errno(0), clone3]

    assert in_child(body) == [errno.EPERM, errno.EPERM, 0, errno.ENOSYS]


@pytest.mark.skipif(not X86_64, reason="the x32 ABI exists on x86_64 only")
def test_x32_syscalls_denied() -> None:
    def body() -> int:
        seccomp.install_filter()
        x32_getpid = seccomp.X32_SYSCALL_BIT | 39
        return libc_errno("syscall", ctypes.c_long(x32_getpid))

    assert in_child(body) == errno.EPERM


def test_fork_subprocess_and_threads_work() -> None:
    def body() -> list[Any]:
        seccomp.install_filter()
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.write(write_fd, b"grandchild")
            finally:
                os._exit(7)
        os.close(write_fd)
        said = os.read(read_fd, 100).decode()
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        true = subprocess.run(["/bin/true"], check=False).returncode
        echo = subprocess.run(["echo", "hi"], capture_output=True, check=False).stdout.decode()
        seen: list[str] = []
        thread = threading.Thread(target=seen.append, args=("thread",))
        thread.start()
        thread.join()
        return [said, code, true, echo, seen]

    assert in_child(body) == ["grandchild", 7, 0, "hi\n", ["thread"]]


def test_files_and_sockets_work(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"

    def body() -> list[Any]:
        seccomp.install_filter()
        path.write_text("hello")
        text = path.read_text()
        path.unlink()
        left, right = socket.socketpair()
        left.sendall(b"ping")
        pair = right.recv(4).decode()
        with socket.create_server(("127.0.0.1", 0)) as server:
            client = socket.create_connection(server.getsockname())
            conn, _ = server.accept()
            client.sendall(b"tcp")
            tcp = conn.recv(3).decode()
        return [text, path.exists(), pair, tcp]

    assert in_child(body) == ["hello", False, "ping", "tcp"]


def test_custom_list_and_errno() -> None:
    def body() -> list[int]:
        seccomp.install_filter(["chroot"], errno=errno.EACCES)
        return [
            libc_errno("chroot", b"/"),
            clone_errno(CLONE_NEWNS),
            libc_errno("mount", *MOUNT_ARGS),
        ]

    chroot, clone, mount = in_child(body)
    assert chroot == errno.EACCES
    assert clone == errno.EACCES
    assert mount not in (0, errno.EACCES)  # not in the list: the kernel's own answer


def test_filter_covers_threads_started_before_it() -> None:
    def body() -> int:
        go = threading.Event()
        result: list[int] = []

        def later() -> None:
            go.wait()
            result.append(libc_errno("mount", *MOUNT_ARGS))

        thread = threading.Thread(target=later)
        thread.start()
        seccomp.install_filter()
        go.set()
        thread.join()
        return result[0]

    assert in_child(body) == errno.EPERM


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
def test_installs_after_dropping_privileges() -> None:
    def body() -> list[Any]:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        seccomp.install_filter()
        status = Path("/proc/self/status").read_text()
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        return [fields["Seccomp"].strip(), fields["NoNewPrivs"].strip(), libc_errno("setns", 0, 0)]

    assert in_child(body) == ["2", "1", errno.EPERM]


def test_bad_arguments_rejected_before_anything_is_installed() -> None:
    with pytest.raises(TypeError):
        seccomp.install_filter("mount")
    with pytest.raises(ValueError, match="no_such_call"):
        seccomp.install_filter(["mount", "no_such_call"])
    with pytest.raises(ValueError, match="errno"):
        seccomp.install_filter(errno=0)
    with pytest.raises(ValueError, match="errno"):
        seccomp.install_filter(errno=5000)


def test_program_shape() -> None:
    program = seccomp.build_program()
    assert len(program) % 8 == 0
    # Names missing on this arch (iopl on aarch64) are skipped, not errors.
    assert seccomp.build_program(["iopl", "create_module"])
    assert len(seccomp.build_program(["mount", "mount"])) == len(seccomp.build_program(["mount"]))
    assert set(seccomp.DENIED_SYSCALLS) <= (
        seccomp.X86_64_SYSCALLS.keys() | seccomp.AARCH64_SYSCALLS.keys()
    )


def run_program(program: bytes, nr: int, arch: int, arg0: int = 0) -> int:
    """Interpret the filter for one syscall, as the kernel would; returns its action."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    insns = [struct.unpack("HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x06:
            return int(k)
        else:
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        assert pc < len(insns), "jumped past the end"


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_program_semantics_per_arch(machine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: machine)
    audit_arch, table = {
        "x86_64": (0xC000003E, seccomp.X86_64_SYSCALLS),
        "aarch64": (0xC00000B7, seccomp.AARCH64_SYSCALLS),
    }[machine]
    program = seccomp.build_program()
    eperm = seccomp.SECCOMP_RET_ERRNO | errno.EPERM
    allow = seccomp.SECCOMP_RET_ALLOW

    for name in seccomp.DENIED_SYSCALLS:
        if name in table:
            assert run_program(program, table[name], audit_arch) == eperm, name
    for nr in range(450):
        if nr not in table.values():
            assert run_program(program, nr, audit_arch) == allow, nr
    assert run_program(program, table["seccomp"], audit_arch) == allow
    assert run_program(program, table["clone"], audit_arch, SIGCHLD) == allow
    assert run_program(program, table["clone"], audit_arch, 1 << 32 | SIGCHLD) == allow
    assert run_program(program, table["clone"], audit_arch, CLONE_NEWUSER | SIGCHLD) == eperm
    assert run_program(program, table["clone3"], audit_arch) == (
        seccomp.SECCOMP_RET_ERRNO | errno.ENOSYS
    )
    assert run_program(program, 0, 0x40000003) == seccomp.SECCOMP_RET_KILL_PROCESS  # i386
    x32_mount = seccomp.X32_SYSCALL_BIT | table["mount"]
    assert run_program(program, x32_mount, audit_arch) == (eperm if machine == "x86_64" else allow)
