"""fissile/builder/archive.py: deterministic zips and safe extraction."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from fissile.builder.archive import ArchiveError, check_archive, extract_archive, zip_path


def make_tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "main.py").write_text("def main(request):\n    return 'hi'\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "data.txt").write_bytes(b"\x00\x01binary")
    run = root / "run.sh"
    run.write_text("#!/bin/sh\necho hi\n")
    run.chmod(0o755)
    return root


def write_zip(path: Path, entries: list[tuple[str, bytes | str, int]]) -> Path:
    """Entries are (name, data, unix mode); a mode with S_IFLNK makes a symlink entry."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


def symlink_entry(name: str, target: str) -> tuple[str, str, int]:
    return (name, target, stat.S_IFLNK | 0o777)


def file_entry(
    name: str, data: bytes | str = b"x", mode: int = 0o644
) -> tuple[str, bytes | str, int]:
    return (name, data, stat.S_IFREG | mode)


# --- zip_path ------------------------------------------------------------------------------


def test_zip_path_is_deterministic(tmp_path: Path) -> None:
    first = make_tree(tmp_path / "a")
    assert zip_path(first) == zip_path(first)
    # A copy with other timestamps and another creation order gives the same bytes.
    second = tmp_path / "b"
    (second / "pkg").mkdir(parents=True)
    for relative in ["pkg/data.txt", "run.sh", "pkg/__init__.py", "main.py"]:
        target = second / relative
        target.write_bytes((first / relative).read_bytes())
        target.chmod((first / relative).stat().st_mode)
        os.utime(target, (1_000_000_000, 1_000_000_000))
    assert zip_path(second) == zip_path(first)


def test_zip_path_changes_with_content(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    before = zip_path(root)
    (root / "main.py").write_text("def main(request):\n    return 'bye'\n")
    assert zip_path(root) != before


def test_zip_path_of_a_single_file(tmp_path: Path) -> None:
    source = tmp_path / "hello.py"
    source.write_text("def main(request):\n    return 'hi'\n")
    with zipfile.ZipFile(io.BytesIO(zip_path(source))) as archive:
        assert archive.namelist() == ["hello.py"]
        assert archive.read("hello.py") == source.read_bytes()


def test_zip_path_skips_caches_and_bytecode(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    for junk in ["__pycache__/main.cpython-311.pyc", ".git/HEAD", ".venv/bin/python"]:
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("junk")
    (root / "stale.pyc").write_bytes(b"junk")
    with zipfile.ZipFile(io.BytesIO(zip_path(root))) as archive:
        assert sorted(archive.namelist()) == [
            "main.py",
            "pkg/__init__.py",
            "pkg/data.txt",
            "run.sh",
        ]


def test_zip_path_records_executable_bits(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    with zipfile.ZipFile(io.BytesIO(zip_path(root))) as archive:
        assert archive.getinfo("run.sh").external_attr >> 16 == stat.S_IFREG | 0o755
        assert archive.getinfo("main.py").external_attr >> 16 == stat.S_IFREG | 0o644


def test_zip_path_of_something_missing(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="neither a file nor a directory"):
        zip_path(tmp_path / "missing")


def test_zip_path_keeps_symlinks_inside_the_source(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    (root / "pkg" / "alias.txt").symlink_to("data.txt")
    (root / "up.py").symlink_to("pkg/../main.py")
    (root / "linked-dir").symlink_to("pkg")
    with zipfile.ZipFile(io.BytesIO(zip_path(root))) as archive:
        alias = archive.getinfo("pkg/alias.txt")
        assert stat.S_ISLNK(alias.external_attr >> 16)
        assert archive.read(alias) == b"data.txt"
        assert archive.read("linked-dir") == b"pkg"
        assert archive.read("up.py") == b"pkg/../main.py"


@pytest.mark.parametrize("target", ["../outside.txt", "/etc/passwd", "pkg/../../outside.txt"])
def test_zip_path_refuses_symlinks_escaping_the_source(tmp_path: Path, target: str) -> None:
    root = make_tree(tmp_path / "a")
    (root / "escape").symlink_to(target)
    with pytest.raises(ArchiveError, match="points outside the source"):
        zip_path(root)


def test_zip_path_refuses_a_chain_of_links_leading_out(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a")
    (root / "pkg" / "up").symlink_to("..")
    (root / "x").symlink_to("pkg/up/..")
    with pytest.raises(ArchiveError, match=r"x: symlink to pkg/up/\.\. points outside the source"):
        zip_path(root)


# --- check_archive -------------------------------------------------------------------------


def test_check_archive_summary(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(zip_path(make_tree(tmp_path / "src")))
    summary = check_archive(path)
    assert summary.files == 4
    expected = sum(p.stat().st_size for p in (tmp_path / "src").rglob("*") if p.is_file())
    assert summary.extracted_bytes == expected


@pytest.mark.parametrize("name", ["../x", "a/../../x", "a/../b", "..\\x"])
def test_zip_slip_is_rejected(tmp_path: Path, name: str) -> None:
    path = write_zip(tmp_path / "a.zip", [file_entry(name)])
    with pytest.raises(ArchiveError, match="zip slip"):
        check_archive(path)


@pytest.mark.parametrize("name", ["/etc/passwd", "C:/windows/x", "\\abs"])
def test_absolute_paths_are_rejected(tmp_path: Path, name: str) -> None:
    path = write_zip(tmp_path / "a.zip", [file_entry(name)])
    with pytest.raises(ArchiveError, match="absolute path"):
        check_archive(path)


@pytest.mark.parametrize("target", ["../../etc", "/etc/passwd", "sub/../../x"])
def test_escaping_symlinks_are_rejected(tmp_path: Path, target: str) -> None:
    path = write_zip(tmp_path / "a.zip", [symlink_entry("link", target)])
    with pytest.raises(ArchiveError, match="points outside the archive"):
        check_archive(path)


def test_symlinks_inside_are_allowed_and_recreated(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "a.zip",
        [
            file_entry("data/real.txt", b"payload"),
            symlink_entry("data/alias.txt", "real.txt"),
            symlink_entry("sub/up.txt", "../data/real.txt"),
        ],
    )
    assert check_archive(path).files == 3
    dest = tmp_path / "out"
    extract_archive(path, dest)
    assert os.readlink(dest / "data" / "alias.txt") == "real.txt"
    assert (dest / "data" / "alias.txt").read_bytes() == b"payload"
    assert (dest / "sub" / "up.txt").read_bytes() == b"payload"


def test_symlink_chains_cannot_escape(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "a.zip",
        [symlink_entry("d/b", ".."), symlink_entry("a", "d/b/.."), file_entry("a/pwned")],
    )
    box = tmp_path / "box"
    dest = box / "dest"
    dest.mkdir(parents=True)
    try:
        extract_archive(path, dest)
    except ArchiveError:
        pass
    assert not (box / "pwned").exists()


def test_entries_below_a_symlink_or_a_file_are_refused(tmp_path: Path) -> None:
    through_link = write_zip(
        tmp_path / "link.zip", [symlink_entry("lib", "pkg"), file_entry("lib/x.py")]
    )
    with pytest.raises(ArchiveError, match=r"lib/x\.py: lies below lib"):
        check_archive(through_link)
    under_file = write_zip(tmp_path / "file.zip", [file_entry("a"), file_entry("a/b")])
    with pytest.raises(ArchiveError, match="a/b: lies below a"):
        check_archive(under_file)


def test_garbage_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "garbage.zip"
    path.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(ArchiveError, match="not a valid zip archive"):
        check_archive(path)


def test_empty_file_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "empty.zip"
    path.write_bytes(b"")
    with pytest.raises(ArchiveError, match="not a valid zip archive"):
        check_archive(path)


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="unreadable archive"):
        check_archive(tmp_path / "missing.zip")


def test_size_limit(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "a.zip", [file_entry("big", b"0" * 3000), file_entry("more")])
    assert check_archive(path, max_extracted=3001).extracted_bytes == 3001
    with pytest.raises(ArchiveError, match="expands to more than"):
        check_archive(path, max_extracted=3000)


def test_corrupt_crc(tmp_path: Path) -> None:
    payload = b"hello, this payload will be corrupted"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("a.txt", payload)
    data = buffer.getvalue()
    offset = data.index(payload)
    corrupted = data[:offset] + b"J" + data[offset + 1 :]
    path = tmp_path / "corrupt.zip"
    path.write_bytes(corrupted)
    with pytest.raises(ArchiveError, match=r"a\.txt: corrupt entry \(CRC mismatch\)"):
        check_archive(path)


# --- extract_archive -----------------------------------------------------------------------


def test_extract_recreates_files_and_modes(tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src")
    path = tmp_path / "a.zip"
    path.write_bytes(zip_path(source))
    dest = tmp_path / "out"
    extract_archive(path, dest)
    for relative in ["main.py", "pkg/__init__.py", "pkg/data.txt", "run.sh"]:
        assert (dest / relative).read_bytes() == (source / relative).read_bytes()
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "main.py").stat().st_mode) == 0o644


def test_extract_keeps_the_owner_able_to_read_and_write(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "a.zip", [file_entry("ro.txt", b"x", mode=0o444)])
    extract_archive(path, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out" / "ro.txt").stat().st_mode) == 0o644


def test_extract_directory_entries(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("empty/"), b"")
        archive.writestr("full/f.txt", b"1")
    path = tmp_path / "a.zip"
    path.write_bytes(buffer.getvalue())
    extract_archive(path, tmp_path / "out")
    assert (tmp_path / "out" / "empty").is_dir()
    assert (tmp_path / "out" / "full" / "f.txt").read_bytes() == b"1"


def test_extract_checks_first(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "a.zip", [file_entry("ok.txt"), file_entry("../evil.txt")])
    dest = tmp_path / "box" / "out"
    with pytest.raises(ArchiveError, match="zip slip"):
        extract_archive(path, dest)
    assert not (tmp_path / "box" / "evil.txt").exists()
    assert not (dest / "ok.txt").exists()


# --- links resolved against the whole tree --------------------------------------------------


def test_a_chain_of_links_each_inside_on_its_own_is_refused(tmp_path: Path) -> None:
    # The reported exploit: x climbs seven levels through real directories and one link, and
    # evil.py walks through x to /dev/zero. Each link passes the per-link check alone.
    deep = "p0/p1/p2/p3/p4/p5/p6"
    entries = [file_entry(f"{deep}/keep.txt")]
    entries.append(symlink_entry(f"{deep}/up", "../../../../../../.."))
    entries.append(symlink_entry("x", f"{deep}/up/../../.."))
    entries.append(symlink_entry("evil.py", "x/dev/zero"))
    path = write_zip(tmp_path / "a.zip", entries)
    with pytest.raises(ArchiveError, match="through other links in it"):
        check_archive(path)


def test_a_link_to_a_link_to_outside_is_refused(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "a.zip",
        [
            symlink_entry("a/b/c", "../.."),
            symlink_entry("a/hop", "b/c/.."),
            symlink_entry("z", "a/hop"),
        ],
    )
    with pytest.raises(ArchiveError, match=r"a/hop: symlink to b/c/\.\. points outside"):
        check_archive(path)


def test_a_link_loop_is_refused(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "a.zip",
        [symlink_entry("one", "two"), symlink_entry("two", "one"), file_entry("main.py")],
    )
    with pytest.raises(ArchiveError, match="symlink loop"):
        check_archive(path)


def test_a_link_to_an_absolute_path_via_an_intermediate_is_refused(tmp_path: Path) -> None:
    direct = write_zip(
        tmp_path / "direct.zip",
        [symlink_entry("passwd", "hop"), symlink_entry("hop", "/etc/passwd")],
    )
    with pytest.raises(ArchiveError, match="hop: symlink to /etc/passwd points outside"):
        check_archive(direct)
    # Spelled relatively: d/abs climbs through d/root (the archive's top) and once above it.
    path = write_zip(
        tmp_path / "a.zip",
        [
            symlink_entry("d/root", ".."),
            symlink_entry("d/abs", "root/d/root/../etc/passwd"),
            symlink_entry("passwd", "d/abs"),
        ],
    )
    with pytest.raises(ArchiveError, match="points outside the archive"):
        check_archive(path)


def test_legit_relative_links_through_other_links_are_accepted(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "a.zip",
        [
            file_entry("lib/v2/real.py", b"VALUE = 2\n"),
            symlink_entry("lib/current", "v2"),
            symlink_entry("pkg/real.py", "../lib/current/real.py"),
            symlink_entry("alias.py", "pkg/real.py"),
            symlink_entry("pkg/up", "../lib/current/.."),
        ],
    )
    assert check_archive(path).files == 5
    dest = tmp_path / "out"
    extract_archive(path, dest)
    assert (dest / "alias.py").read_bytes() == b"VALUE = 2\n"
    assert (dest / "pkg" / "up" / "v2" / "real.py").is_file()


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_an_entry_twice_is_refused(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "a.zip", [symlink_entry("main.py", "other.py"), file_entry("main.py")]
    )
    with pytest.raises(ArchiveError, match=r"main\.py: appears twice"):
        check_archive(path)


def test_a_link_target_longer_than_path_max_is_refused(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "a.zip", [symlink_entry("long", "a/" * 2048)])
    with pytest.raises(ArchiveError, match="long: symlink target longer than 4095 bytes"):
        check_archive(path)
