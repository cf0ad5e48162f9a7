"""Bad inputs and misbehaving functions: clear errors, and the platform keeps serving."""

from __future__ import annotations

import os
import re
import signal
import stat
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from syskit import (
    Platform,
    assert_one_line_error,
    descendants,
    error_of,
    free_port,
    run_cli,
    wait_gone,
    write,
)


@pytest.fixture(scope="module")
def steady(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A function and route that must keep answering while everything else here goes wrong;
    returns the platform's zygotes, which must survive too."""
    source = write(tmp_path_factory.mktemp("steady") / "steady.py", "def main(): return 'steady'\n")
    platform.ok("fn", "create", "--name", "steady", "--code", str(source))
    platform.ok("route", "create", "--function", "steady", "--url", "/steady")
    assert platform.get("/steady").text == "steady"
    zygotes = sorted(p.pid for p in platform.children() if p.comm.startswith("fz-"))
    assert zygotes, platform.children()
    return {"zygotes": zygotes}


def fn_names(platform: Platform) -> list[str]:
    return [f["name"] for f in platform.json_of("fn", "list")]


def packages(platform: Platform) -> list[dict[str, object]]:
    result: list[dict[str, object]] = platform.json_of("pkg", "list")
    return result


# -- unknown and duplicate names -----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("fn", "get", "--name", "missing-fn"),
        ("fn", "delete", "--name", "missing-fn"),
        ("fn", "logs", "--name", "missing-fn"),
        ("fn", "test", "--name", "missing-fn"),
        ("fn", "update", "--name", "missing-fn", "--env-var", "A=1"),
        ("pkg", "info", "--name", "missing-pkg"),
        ("pkg", "delete", "--name", "missing-pkg"),
        ("route", "get", "--name", "missing-route"),
        ("route", "delete", "--name", "missing-route"),
        ("env", "get", "--name", "missing-env"),
        ("fn", "create", "--name", "orphan", "--pkg", "missing-pkg"),
    ],
    ids=lambda args: "-".join(args[:2]) if isinstance(args, tuple) else str(args),
)
def test_unknown_name_is_one_line_error(platform: Platform, args: tuple[str, ...]) -> None:
    missing = next(a for a in args if a.startswith("missing-"))
    assert_one_line_error(platform.cli(*args), "not found", missing)


def test_duplicate_names_are_refused(platform: Platform, steady: object, tmp_path: Path) -> None:
    source = write(tmp_path / "dup.py", "def main(): return 'second'\n")
    before = packages(platform)

    result = platform.cli("fn", "create", "--name", "steady", "--code", str(source))
    assert_one_line_error(result, "already exists", "steady")
    # The package uploaded for the refused function was not left behind.
    assert packages(platform) == before
    assert platform.get("/steady").text == "steady"

    platform.ok("pkg", "create", "--name", "dup-pkg", "--env", "python", "--src", str(source))
    again = platform.cli(
        "pkg", "create", "--name", "dup-pkg", "--env", "python", "--src", str(source)
    )
    assert_one_line_error(again, "already exists", "dup-pkg")

    platform.ok("route", "create", "--name", "dup-route", "--function", "steady", "--url", "/dup1")
    again = platform.cli(
        "route", "create", "--name", "dup-route", "--function", "steady", "--url", "/dup2"
    )
    assert_one_line_error(again, "already exists", "dup-route")

    assert_one_line_error(platform.cli("env", "create", "--name", "python"), "already exists")


def test_unreachable_api_is_one_line_error() -> None:
    result = run_cli(f"http://127.0.0.1:{free_port()}", "fn", "list")
    assert_one_line_error(result, "cannot reach")


def test_usage_errors_exit_nonzero_without_traceback(platform: Platform) -> None:
    for args in (
        ("fn", "create", "--name", "x"),  # no source
        ("route", "create", "--function", "steady"),  # neither --url nor --prefix
        ("fn", "create", "--name", "x", "--code", "/no/such/file.py"),
        ("fn", "update", "--name", "steady", "--timeout", "soon"),
    ):
        result = platform.cli(*args)
        assert result.rc == 2, result
        assert "Traceback" not in result.err, result
        assert "Error" in result.err, result


# -- archives ------------------------------------------------------------------------------


def test_malformed_archive_is_refused(platform: Platform, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"this is not a zip file\x00\xff" * 10)

    result = platform.cli("fn", "create", "--name", "garbage-fn", "--src", str(garbage))
    assert_one_line_error(result, "not a valid zip")
    result = platform.cli(
        "pkg", "create", "--name", "garbage-pkg", "--env", "python", "--src", str(garbage)
    )
    assert_one_line_error(result, "not a valid zip")
    assert "garbage-fn" not in fn_names(platform)
    assert "garbage-pkg" not in [p["name"] for p in packages(platform)]


def _zip(path: Path, entries: dict[str, str], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def test_zip_slip_is_refused(platform: Platform, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    slip = _zip(tmp_path / "slip.zip", {"main.py": "def main(): return 1\n", "../evil.py": "x=1"})

    result = platform.cli("fn", "create", "--name", "slip-fn", "--src", str(slip), cwd=work)
    assert_one_line_error(result, "zip slip", "../evil.py")
    result = platform.cli(
        "pkg", "create", "--name", "slip-pkg", "--env", "python", "--src", str(slip), "--wait"
    )
    assert_one_line_error(result, "zip slip")

    assert "slip-fn" not in fn_names(platform)
    assert "slip-pkg" not in [p["name"] for p in packages(platform)]
    data_dir = platform.data_dir
    assert not list(data_dir.parent.rglob("evil.py")), "an entry escaped the data dir"
    assert not (work.parent / "evil.py").exists()


def test_absolute_and_escaping_symlink_entries_are_refused(
    platform: Platform, tmp_path: Path
) -> None:
    absolute = _zip(tmp_path / "abs.zip", {"main.py": "def main(): 1\n", "/tmp/abs-evil.py": "x"})
    assert_one_line_error(
        platform.cli("fn", "create", "--name", "abs-fn", "--src", str(absolute)), "absolute path"
    )
    link = _zip(
        tmp_path / "link.zip", {"main.py": "def main(): 1\n"}, {"passwd": "../../etc/passwd"}
    )
    assert_one_line_error(
        platform.cli("fn", "create", "--name", "link-fn", "--src", str(link)), "outside"
    )
    names = fn_names(platform)
    assert "abs-fn" not in names and "link-fn" not in names


# -- failing builds ------------------------------------------------------------------------


def test_failing_build_command(platform: Platform, tmp_path: Path) -> None:
    source = write(tmp_path / "src" / "main.py", "def main(): return 'never'\n").parent
    result = platform.cli(
        "pkg", "create", "--name", "bad-build", "--env", "python", "--src", str(source),
        "--buildcmd", "echo marker-before-failure; exit 3", "--wait",
    )  # fmt: skip
    assert result.rc == 1, result
    assert "marker-before-failure" in result.err, result  # the build log is shown
    assert "status 3" in result.err
    assert result.err.strip().splitlines()[-1].startswith("Error: ")
    assert "Traceback" not in result.err

    info = platform.ok("pkg", "info", "--name", "bad-build")
    assert "Status:   failed" in info.out, info
    assert "marker-before-failure" in info.out
    listed = {p["name"]: p for p in packages(platform)}
    assert listed["bad-build"]["status"]["state"] == "failed"  # type: ignore[index]

    # A function cannot be created on a failed package.
    refused = platform.cli("fn", "create", "--name", "on-bad-build", "--pkg", "bad-build")
    assert refused.rc == 1, refused
    assert "failed to build" in refused.err
    assert "on-bad-build" not in fn_names(platform)


def test_failing_requirements_install(platform: Platform, tmp_path: Path) -> None:
    source = tmp_path / "src"
    write(source / "main.py", "def main(): return 'never'\n")
    write(source / "requirements.txt", "./no-such-local-lib\n")

    result = platform.cli("fn", "create", "--name", "bad-reqs", "--src", str(source))
    assert result.rc == 1, result
    assert "pip install" in result.err, result  # the build log is shown
    assert "no-such-local-lib" in result.err
    assert "failed to build" in result.err.strip().splitlines()[-1]

    assert "bad-reqs" not in fn_names(platform)
    # The package made for the refused function is gone too.
    assert not [p for p in packages(platform) if p.get("owner") == "bad-reqs"]


# -- misbehaving functions -----------------------------------------------------------------


def _fn_log(platform: Platform, name: str, needle: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = platform.ok("fn", "logs", "--name", name).out
        if needle in log or time.monotonic() > deadline:
            return log
        time.sleep(0.1)


def test_function_that_raises(platform: Platform, tmp_path: Path) -> None:
    write(
        tmp_path / "raiser.py",
        """
        def main(request):
            if request.query.get("ok"):
                return "fine"
            raise ValueError("the answer is not 42")
        """,
    )
    platform.ok("fn", "create", "--name", "raiser", "--code", str(tmp_path / "raiser.py"))

    response = platform.get("/function/raiser")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "ValueError"
    assert error["message"] == "the answer is not 42"

    log = _fn_log(platform, "raiser", "ValueError: the answer is not 42")
    assert "Traceback (most recent call last)" in log, log
    assert "ValueError: the answer is not 42" in log
    assert "raiser.py" in log
    # Same instance keeps serving.
    assert platform.get("/function/raiser?ok=1").text == "fine"


def test_function_that_fails_to_import(platform: Platform, tmp_path: Path) -> None:
    write(tmp_path / "broken.py", "def main(:\n    return 1\n")
    platform.ok("fn", "create", "--name", "broken-syntax", "--code", str(tmp_path / "broken.py"))
    response = platform.get("/function/broken-syntax")
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "load_failed"
    assert "SyntaxError" in error["message"]


def test_function_that_never_returns(platform: Platform, tmp_path: Path) -> None:
    write(
        tmp_path / "spinner.py",
        """
        def main(request):
            if request.query.get("spin"):
                while True:
                    pass
            return "quick"
        """,
    )
    platform.ok(
        "fn", "create", "--name", "spinner", "--code", str(tmp_path / "spinner.py"),
        "--timeout", "2s",
    )  # fmt: skip
    assert platform.get("/function/spinner").text == "quick"

    started = time.monotonic()
    response = platform.get("/function/spinner?spin=1", timeout=30)
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert error_of(response)["code"] == "timeout"
    assert 1.9 <= elapsed <= 4.5, elapsed

    # Its instance was killed (no CPU left burning), and a new one serves.
    assert platform.get("/function/spinner").text == "quick"
    log = _fn_log(platform, "spinner", "timeout")
    assert "timeout after 2s" in log, log
    status = platform.json_of("fn", "get", "--name", "spinner")["status"]
    assert status["timeouts"] >= 1 and status["restarts"] == 0  # a timeout is not a crash
    # The instance that spun (named in the log; its process is ``fi-<id>``) is gone, not
    # left burning a CPU. The shared platform runs other tests' instances too: only its own.
    killed = re.search(r"instance (\S+) killed: timeout", log)
    assert killed is not None, log
    deadline = time.monotonic() + 30
    while (
        burning := [p for p in platform.children() if p.comm == f"fi-{killed.group(1)}"]
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not burning, burning


def test_function_whose_import_never_finishes(platform: Platform, tmp_path: Path) -> None:
    write(tmp_path / "stuck.py", "import time\ntime.sleep(3600)\n\ndef main():\n    return 1\n")
    platform.ok(
        "fn", "create", "--name", "stuck-import", "--code", str(tmp_path / "stuck.py"),
        "--timeout", "2s",
    )  # fmt: skip
    started = time.monotonic()
    response = platform.get("/function/stuck-import", timeout=30)
    assert 1.9 <= time.monotonic() - started <= 4.5
    # It waited its queue timeout (the timeout, unset) for an instance that never got ready.
    assert response.status_code == 503, response.text
    assert error_of(response)["code"] == "queue_timeout"
    assert response.headers["retry-after"] == "1"
    # The instance stuck importing does not stay behind.
    deadline = time.monotonic() + 5
    while platform.json_of("fn", "get", "--name", "stuck-import")["status"]["starting"]:
        assert time.monotonic() < deadline, "the stuck instance was never given up"
        time.sleep(0.1)


def test_processes_a_function_starts_end_with_it(platform: Platform, tmp_path: Path) -> None:
    write(
        tmp_path / "spawner.py",
        """
        import subprocess

        def main():
            subprocess.Popen(["sleep", "301"])
            return "spawned"
        """,
    )
    platform.ok("fn", "create", "--name", "spawner", "--code", str(tmp_path / "spawner.py"))
    assert platform.get("/function/spawner").text == "spawned"
    [instance] = platform.json_of("fn", "get", "--name", "spawner")["status"]["pids"]
    # The child's pid inside the instance means nothing here: find it below the instance.
    [proc] = [p for p in descendants(instance).values() if p.comm == "sleep"]
    platform.ok("fn", "delete", "--name", "spawner")
    assert not wait_gone([proc]), "a function's child process outlived the function"


@pytest.mark.parametrize(
    ("crash", "cause"),
    [
        ("import ctypes; ctypes.string_at(0)", "SIGSEGV"),
        ("import os; os._exit(7)", "exited with status 7"),
    ],
    ids=["segfault", "os-exit"],
)
def test_function_that_dies(platform: Platform, tmp_path: Path, crash: str, cause: str) -> None:
    name = f"dies-{abs(hash(cause)) % 10_000}"
    write(
        tmp_path / "dies.py",
        f"""
        def main(request):
            if request.query.get("die"):
                {crash}
            return "alive"
        """,
    )
    platform.ok("fn", "create", "--name", name, "--code", str(tmp_path / "dies.py"))
    assert platform.get(f"/function/{name}").text == "alive"

    response = platform.get(f"/function/{name}?die=1")
    assert response.status_code == 502, response.text
    error = error_of(response)
    assert error["code"] == "instance_died"
    assert cause in error["message"], error

    # A fresh instance serves the next request; the crash is on record.
    assert platform.get(f"/function/{name}").text == "alive"
    shown = platform.ok("fn", "get", "--name", name).out
    assert "Restarts:      1" in shown, shown
    assert cause in shown


def test_platform_keeps_serving(platform: Platform, steady: dict[str, object]) -> None:
    """Run last in this module: after all of the above, the platform is still whole."""
    assert platform.process is not None and platform.process.poll() is None
    response = platform.get("/steady")
    assert response.status_code == 200
    assert response.text == "steady"
    zygotes = sorted(p.pid for p in platform.children() if p.comm.startswith("fz-"))
    assert zygotes == steady["zygotes"], "a zygote was restarted"
    assert os.path.isdir(platform.data_dir)


def test_instance_killed_from_outside(platform: Platform, tmp_path: Path) -> None:
    """An operator (or the kernel's OOM killer) SIGKILLs an instance mid-request. (A function
    cannot SIGKILL itself: it is PID 1 of its namespace, see docs/security.md.)"""
    write(
        tmp_path / "sleeper.py",
        """
        import time
        def main(request):
            if request.query.get("sleep"):
                time.sleep(30)
            return "alive"
        """,
    )
    platform.ok("fn", "create", "--name", "killed", "--code", str(tmp_path / "sleeper.py"))
    assert platform.get("/function/killed").text == "alive"
    [pid] = platform.json_of("fn", "get", "--name", "killed")["status"]["pids"]
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(platform.get, "/function/killed?sleep=1", timeout=30)
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        response = pending.result()
    assert response.status_code == 502, response.text
    assert "killed by signal 9 (SIGKILL)" in error_of(response)["message"]
    assert platform.get("/function/killed").text == "alive"
