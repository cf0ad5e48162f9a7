"""fissile/runtime/logs.py: tagging what a function logs and prints with its level and
invocation id."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from fissile.runtime import logs
from fissile.runtime.logs import MARK, LineHandler, invocation, level_name, tagged_stream


def split(text: str) -> list[str]:
    # Not str.splitlines: it also splits at MARK (a record separator).
    return text.removesuffix("\n").split("\n")


def file_stream(path: Path) -> TextIO:
    """A text stream on a file, line-buffered, as an instance's stdout is on its pipe."""
    return open(path, "w", buffering=1, encoding="utf-8")


def test_a_stream_tags_each_line_once_however_it_is_written(tmp_path: Path) -> None:
    stream = tagged_stream(file_stream(tmp_path / "out"), "STDOUT")
    print("hello", file=stream)  # two writes: the text, then the newline
    stream.write("two\nlines\npartial")
    stream.write(" end\n")
    stream.writelines(["a\n", "b\n"])
    stream.buffer.write(b"raw bytes\n")
    stream.write("x" * 20000 + "\n")  # past the text layer's chunk: still one tag
    stream.flush()
    lines = split((tmp_path / "out").read_text())
    assert lines[-1] == f"{MARK}STDOUT - " + "x" * 20000
    assert lines[:-1] == [
        f"{MARK}STDOUT - hello",
        f"{MARK}STDOUT - two",
        f"{MARK}STDOUT - lines",
        f"{MARK}STDOUT - partial end",
        f"{MARK}STDOUT - a",
        f"{MARK}STDOUT - b",
        f"{MARK}STDOUT - raw bytes",
    ]
    assert stream.write("") == 0


def test_records_carry_their_level_and_every_line_of_a_traceback() -> None:
    target = io.StringIO()
    logger = logging.getLogger("test_runtime_logs")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = LineHandler(target)
    logger.addHandler(handler)
    token = invocation.set("inv-1")
    try:
        logger.warning("careful: %s", "x")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
        logger.log(25, "between info and warning")
    finally:
        invocation.reset(token)
        logger.removeHandler(handler)
    lines = split(target.getvalue())
    assert lines[0] == f"{MARK}WARNING inv-1 careful: x"
    assert lines[1] == f"{MARK}ERROR inv-1 failed"
    assert lines[2] == f"{MARK}ERROR inv-1 Traceback (most recent call last):"
    assert f"{MARK}ERROR inv-1 ValueError: boom" in lines
    assert lines[-1] == f"{MARK}INFO inv-1 between info and warning"
    assert all(line.startswith(MARK) for line in lines)


def test_level_names() -> None:
    assert level_name(logging.DEBUG) == "DEBUG"
    assert level_name(5) == "DEBUG"
    assert level_name(45) == "ERROR"
    assert level_name(60) == "CRITICAL"


def test_invocation_ids_are_one_word() -> None:
    assert logs.invocation_tag("") == "-"
    assert logs.invocation_tag("abc-0001") == "abc-0001"
    assert logs.invocation_tag("a b\nc") == "a_b_c"


def test_each_thread_and_task_sees_its_own_invocation(tmp_path: Path) -> None:
    stream = tagged_stream(file_stream(tmp_path / "out"), "STDOUT")

    def call(n: int) -> None:
        token = invocation.set(f"t{n}")
        try:
            stream.write(f"from {n}\n")
        finally:
            invocation.reset(token)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(call, range(8)))

    async def task(n: int) -> None:
        invocation.set(f"a{n}")
        await asyncio.sleep(0.01 * (3 - n))  # interleaved: each resumes in its own context
        stream.write(f"from {n}\n")

    async def main() -> None:
        await asyncio.gather(*(task(n) for n in range(3)))

    asyncio.run(main())
    stream.flush()
    lines = set(split((tmp_path / "out").read_text()))
    assert {f"{MARK}STDOUT t{n} from {n}" for n in range(8)} <= lines
    assert {f"{MARK}STDOUT a{n} from {n}" for n in range(3)} <= lines
    assert invocation.get() == "-"


def test_install_routes_logging_print_and_flask_through_tags() -> None:
    # In a process of its own: install() changes the interpreter's streams and root logger.
    script = textwrap.dedent(
        """
        import logging, sys, warnings
        import flask
        from fissile.runtime import logs
        logs.install()
        logs.invocation.set("inv-9")
        logging.getLogger("fn").info("via a named logger")
        logging.getLogger().debug("not shown: below INFO")
        logging.info("via the root")
        print("printed")
        print("to stderr", file=sys.stderr)
        app = flask.Flask("fn2")
        app.logger.info("via flask")
        warnings.warn("old api")
        logs.error("Traceback (most recent call last):\\nValueError: x")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert split(done.stdout) == [f"{MARK}STDOUT inv-9 printed"]
    err = split(done.stderr)
    assert err[:4] == [
        f"{MARK}INFO inv-9 via a named logger",
        f"{MARK}INFO inv-9 via the root",
        f"{MARK}STDERR inv-9 to stderr",
        f"{MARK}INFO inv-9 via flask",  # once: Flask added no handler of its own
    ]
    assert err[4].startswith(f"{MARK}WARNING inv-9 ") and "UserWarning: old api" in err[4]
    assert err[-2:] == [
        f"{MARK}ERROR inv-9 Traceback (most recent call last):",
        f"{MARK}ERROR inv-9 ValueError: x",
    ]
    assert all(line.startswith(MARK) for line in err)
