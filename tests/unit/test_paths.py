"""hutch.paths: the file helpers the launch path uses instead of pathlib."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hutch.paths import (
    NotRegular,
    ancestors,
    find_project_root,
    others_can_write,
    read_regular,
    replace_text,
)


def test_replace_text_writes_whole_with_mode_and_directories(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file"
    replace_text(str(target), "one\n", mode=0o640, dir_mode=0o700)
    replace_text(str(target), "two\n", mode=0o640)
    assert target.read_text() == "two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    # As os.makedirs: dir_mode is the last directory's; those above it get the default.
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700 & ~_umask()
    assert sorted(os.listdir(target.parent)) == ["file"]  # no temporary file left


def test_replace_text_leaves_no_temporary_file_when_it_fails(tmp_path: Path) -> None:
    target = tmp_path / "dir-in-the-way"
    target.mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OSError):
        replace_text(str(target), "x")
    assert os.listdir(tmp_path) == ["dir-in-the-way"]
    assert os.listdir(target) == []


def test_ancestors_are_paths_parents() -> None:
    for path in ("/", "/a", "/a/b/c"):
        assert ancestors(path) == [str(p) for p in (Path(path), *Path(path).parents)]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- the project-root search: only markers that the user alone controls ----------


def _search(cwd: Path, uid: int | None = None) -> tuple[str, list[str]]:
    said: list[str] = []
    root = find_project_root(str(cwd), None, said.append, uid)
    return root, said


def test_search_uses_the_users_own_hutch_toml(tmp_path: Path) -> None:
    (tmp_path / "hutch.toml").write_text("")
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    assert _search(inner) == (str(tmp_path), [])


def test_search_passes_over_a_hutch_toml_of_another_user(tmp_path: Path) -> None:
    (tmp_path / "hutch.toml").write_text("")
    inner = tmp_path / "repo"
    inner.mkdir()
    (inner / ".git").mkdir()
    # Everything here is the test runner's: as seen by another uid, none of it is safe.
    other = os.geteuid() + 1
    root, said = _search(inner, uid=other)
    assert root == str(inner.resolve())  # neither marker counts: the current directory
    assert len(said) == 2
    assert str(tmp_path / "hutch.toml") in said[0] and f"not to you (uid {other})" in said[0]
    assert str(inner / ".git") in said[1]


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o757])
def test_search_passes_over_a_directory_others_can_write(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hutch.toml").write_text("")
    inner = shared / "x" / "repo"
    inner.mkdir(parents=True)
    # Control: while only its owner can write it, the file marks the root.
    shared.chmod(0o755)
    assert _search(inner) == (str(shared), [])
    shared.chmod(mode)  # sticky (/tmp's 1777) included: anyone may create the name
    root, said = _search(inner)
    assert root == str(inner)
    assert said == [f"ignoring {shared / 'hutch.toml'}: {shared} is not safe (others can write it); "
                    "only markers that you alone control choose the project"]  # fmt: skip


def test_search_passes_over_a_hutch_toml_others_can_write(tmp_path: Path) -> None:
    config = tmp_path / "hutch.toml"
    config.write_text("")
    config.chmod(0o666)
    root, said = _search(tmp_path)
    assert root == str(tmp_path) and len(said) == 1 and "others can write it" in said[0]


def test_search_finds_a_fifo_as_the_marker_and_loading_it_fails(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "hutch.toml")
    inner = tmp_path / "sub"
    inner.mkdir()
    assert _search(inner) == (str(tmp_path), [])


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_read_regular_refuses_what_is_not_a_file_without_waiting(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x"
    if kind == "fifo":
        os.mkfifo(path)  # a plain open() for reading would wait for a writer forever
    else:
        path.mkdir()
    with pytest.raises(NotRegular):
        read_regular(str(path))
    (tmp_path / "f").write_bytes(b"ok")
    assert read_regular(str(tmp_path / "f")) == b"ok"


def test_group_write_counts_unless_the_group_is_the_users_own_private_one() -> None:
    import grp
    import pwd

    def st(mode: int, gid: int) -> os.stat_result:
        return os.stat_result((mode, 0, 0, 1, os.geteuid(), gid, 0, 0, 0, 0))

    assert others_can_write(st(0o40777, os.getegid()))
    assert not others_can_write(st(0o40755, os.getegid() + 1))
    assert others_can_write(st(0o40775, os.getegid() + 1))  # another group's members
    members = grp.getgrgid(os.getegid()).gr_mem
    user = pwd.getpwuid(os.geteuid()).pw_name
    if any(m != user for m in members):
        pytest.skip("the runner's own group has other members here")
    assert not others_can_write(st(0o40775, os.getegid()))


FULL_DISK = """
import resource, sys
from hutch.paths import write_private
# The file may not grow past 10 bytes: writes beyond fail (EFBIG), as on a full disk.
resource.setrlimit(resource.RLIMIT_FSIZE, (10, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    write_private(sys.argv[1], "a record much longer than ten bytes\\n")
except OSError as err:
    print(err.errno)
"""


def test_a_record_write_that_fails_leaves_the_old_record_or_none(tmp_path: Path) -> None:
    import errno
    import subprocess
    import sys

    fresh, old = tmp_path / "fresh.json", tmp_path / "old.json"
    old.write_text("the old record\n")
    for target in (fresh, old):
        done = subprocess.run([sys.executable, "-c", FULL_DISK, str(target)], capture_output=True,
                              text=True, check=True)  # fmt: skip
        assert done.stdout.strip() == str(errno.EFBIG)
    # Nothing torn, no 0-byte file, no temporary file: a reader sees the old file or none.
    assert sorted(os.listdir(tmp_path)) == ["old.json"]
    assert old.read_text() == "the old record\n"
