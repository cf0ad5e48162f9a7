"""The sandbox's decisions, without namespaces: modes, degraded hosts, the per-function uid, and
what an instance keeps of its environment."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
from collections.abc import Callable
from pathlib import Path

import pytest

import fissile.sandbox as sandbox
from fissile.sandbox import (
    Capabilities,
    Sandbox,
    SandboxUnavailable,
    apply_sandbox,
    enter_function,
    seccomp,
    uid_for,
)
from fissile.sandbox import capabilities as capabilities_module


def _caps(**missing: str) -> Capabilities:
    caps = Capabilities({name: name not in missing for name in sandbox.FEATURES})
    caps.reasons.update(missing)
    return caps


def _prepare(tmp_path: Path, mode: str) -> Sandbox:
    return Sandbox.prepare(
        mode, str(tmp_path / "data"), str(tmp_path / "data" / "deploy"), str(tmp_path / "stage")
    )


def test_strict_refuses_a_host_without_full_isolation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "probe", lambda: _caps(cgroup_memory="needs root"))
    with pytest.raises(SandboxUnavailable, match="cgroup_memory: needs root"):
        _prepare(tmp_path, "strict")


def test_auto_uses_what_the_host_allows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        sandbox, "probe", lambda: _caps(mount_namespace="needs root", cgroup_memory="needs root")
    )
    prepared = _prepare(tmp_path, "auto")
    assert prepared.fork_config["namespaces"] is False
    assert "filesystem" not in prepared.fork_config
    assert prepared.fork_config["cgroups"] is False
    assert prepared.fork_config["seccomp"] is True
    assert prepared.summary().startswith(
        "sandbox: DEGRADED, missing mount_namespace, cgroup_memory"
    )
    assert prepared.active()["seccomp"] is True


def test_full_isolation_plans_a_filesystem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "probe", lambda: _caps())
    prepared = _prepare(tmp_path, "auto")
    plan = prepared.fork_config["filesystem"]
    assert plan["deploy_root"] == str(tmp_path / "data" / "deploy")
    assert "/usr" in plan["binds"]
    assert not any(p.startswith(str(tmp_path / "data")) for p in plan["binds"])
    assert prepared.summary().startswith("sandbox: full isolation")


def test_the_values_root_is_planned_and_masked_under_a_bind(tmp_path: Path) -> None:
    from fissile.sandbox.filesystem import plan

    # A values root under a bound directory (the fallback below /tmp with a virtualenv there)
    # is masked like the data dir; its own bind goes to the root-only /.values.
    bound = next(p for p in ("/usr", "/etc") if os.path.isdir(p))
    values = f"{bound}/fissile-values-1-x"
    made = plan(str(tmp_path / "data"), str(tmp_path / "deploy"), "", 0, None, values)
    assert made["values_root"] == values
    assert values in made["masks"]
    unbound = plan(str(tmp_path / "data"), str(tmp_path / "deploy"), "", 0, None, "/nowhere/v")
    assert "/nowhere/v" not in unbound["masks"]


def test_off_keeps_processes_and_rlimits_only(tmp_path: Path) -> None:
    prepared = _prepare(tmp_path, "off")
    assert not any(prepared.fork_config.values())
    assert [name for name, on in prepared.active().items() if on] == ["process", "rlimits"]


def test_unknown_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sandbox mode"):
        _prepare(tmp_path, "paranoid")


def test_uid_is_stable_unprivileged_and_differs_between_functions() -> None:
    assert uid_for("hello") == uid_for("hello")
    assert uid_for("hello") != uid_for("world")
    assert all(100_000 <= uid_for(f"fn-{i}") < 165_000 for i in range(200))


def test_probe_without_root_reports_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    caps = capabilities_module.probe()
    assert caps.supported["process"] and caps.supported["rlimits"]
    assert not caps.supported["pid_namespace"]
    assert caps.reasons["pid_namespace"] == "needs root"
    assert not caps.full


def _in_child(check: object) -> int:
    """Run ``check`` in a forked child (it changes process-wide state); its exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            check()  # type: ignore[operator]
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_degraded_entry_scrubs_the_environment_and_bounds_data(tmp_path: Path) -> None:
    def check() -> None:
        os.environ["FISSILE_TOKEN"] = "secret"
        os.environ["AWS_SECRET_ACCESS_KEY"] = "secret"
        # Scrubbed as the instance starts, while warm: before any function is known.
        apply_sandbox({})
        assert "FISSILE_TOKEN" not in os.environ and "AWS_SECRET_ACCESS_KEY" not in os.environ
        assert os.environ["HOME"] == "/tmp" and "PATH" in os.environ
        deploy = enter_function(
            {},
            {
                "function": "f",
                "deploy_dir": str(tmp_path),
                "env_vars": {"MINE": "1"},
                "memory": 64 << 20,
            },
        )
        assert deploy == str(tmp_path)
        assert "FISSILE_TOKEN" not in os.environ and "AWS_SECRET_ACCESS_KEY" not in os.environ
        assert os.environ["MINE"] == "1" and os.environ["HOME"] == "/tmp"
        soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
        assert soft != resource.RLIM_INFINITY
        try:
            bytearray(256 << 20)
        except MemoryError:
            return
        raise AssertionError("allocating 4x --memory succeeded")

    assert _in_child(check) == 0


def test_network_none_needs_network_namespaces(tmp_path: Path) -> None:
    def check() -> None:
        with pytest.raises(SandboxUnavailable, match="--network none needs network namespaces"):
            enter_function({}, {"function": "f", "deploy_dir": str(tmp_path), "network": "none"})

    assert _in_child(check) == 0


@pytest.mark.skipif(not seccomp.supported(), reason="seccomp is not available on this host")
def test_seccomp_filter_is_installed_in_two_stages(tmp_path: Path) -> None:
    """While warm, specialization's own syscalls stay allowed; once specialized, the whole
    list is denied."""
    libc = ctypes.CDLL(None, use_errno=True)
    table = {"x86_64": seccomp.X86_64_SYSCALLS, "aarch64": seccomp.AARCH64_SYSCALLS}
    keyctl = table[platform.machine()]["keyctl"]

    def denied(call: Callable[[], int]) -> bool:
        ctypes.set_errno(0)
        return call() == -1 and ctypes.get_errno() == errno.EPERM

    def check() -> None:
        apply_sandbox({"seccomp": True})
        assert denied(lambda: libc.syscall(keyctl, 0, 0, 0, 0, 0))
        assert denied(lambda: libc.ptrace(0, 0, None, None))
        # umount2 of a path that is no mount point: allowed, so EINVAL, not EPERM.
        assert not denied(lambda: libc.umount2(str(tmp_path).encode(), 0))
        enter_function({"seccomp": True}, {"function": "f", "deploy_dir": str(tmp_path)})
        assert denied(lambda: libc.umount2(str(tmp_path).encode(), 0))
        assert denied(lambda: libc.unshare(0x00020000))
        assert denied(lambda: libc.syscall(keyctl, 0, 0, 0, 0, 0))

    assert _in_child(check) == 0
