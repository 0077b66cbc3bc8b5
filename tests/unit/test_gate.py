"""gate.verify: a copy-on-write layer is recognised by its mark, not by an
inode number the overlay may make up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hutch import layers
from hutch.gate import Expect, verify


def _marked_dir(path: Path) -> bytes:
    path.mkdir()
    token = layers.mark(str(path))
    if token is None:
        pytest.skip("this file system keeps no user xattrs")
    return token


def test_a_layer_is_recognised_by_its_mark_whatever_its_inode(tmp_path: Path) -> None:
    token = _marked_dir(tmp_path / "layer")
    expect = Expect(str(tmp_path / "layer"), 1, None, False, "the .git layer", mark=token)
    assert verify(os.getpid(), [expect]) is None


def test_another_mark_or_none_is_refused(tmp_path: Path) -> None:
    _marked_dir(tmp_path / "layer")
    (tmp_path / "plain").mkdir()
    real = os.stat(tmp_path / "plain").st_ino  # the right inode does not make up for the mark
    other = Expect(str(tmp_path / "layer"), 1, None, False, "the .git layer", mark=b"0" * 32)
    unmarked = Expect(str(tmp_path / "plain"), real, None, False, "the .git layer", mark=b"0" * 32)
    for expect in (other, unmarked):
        said = verify(os.getpid(), [expect])
        assert said == f"the .git layer: {expect.target} is not what hutch planned to mount there"


def test_without_a_mark_the_inode_decides(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    st = os.stat(tmp_path / "d")
    assert verify(os.getpid(), [Expect(str(tmp_path / "d"), st.st_ino, st.st_dev, False, "x")]) is None
    assert verify(os.getpid(), [Expect(str(tmp_path / "d"), st.st_ino + 1, None, False, "x")]) is not None


def test_a_mark_is_not_found_through_a_link(tmp_path: Path) -> None:
    token = _marked_dir(tmp_path / "layer")
    (tmp_path / "link").symlink_to(tmp_path / "layer")
    expect = Expect(str(tmp_path / "link"), 1, None, False, "the .git layer", mark=token)
    assert verify(os.getpid(), [expect]) is not None
