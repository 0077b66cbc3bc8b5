"""hutch.paths: the file helpers the launch path uses instead of pathlib."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hutch.paths import ancestors, replace_text


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
