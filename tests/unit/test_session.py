from __future__ import annotations

import os
import socket
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from hutch import session
from hutch.session import remove_tree


def test_runtime_dir_removal_takes_everything_and_follows_no_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine")
    runtime = tmp_path / "hutch-1-abc"
    (runtime / "egress" / "deep").mkdir(parents=True)
    (runtime / "env").write_text("A=1\n")
    (runtime / "egress" / "deep" / "f").write_text("x")
    (runtime / "dirlink").symlink_to(outside)
    (runtime / "egress" / "filelink").symlink_to(outside / "keep")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(runtime / "egress" / "egress.sock"))
    os.chmod(runtime / "egress", 0o700)

    remove_tree(runtime)

    assert not runtime.exists() and not runtime.is_symlink()
    assert (outside / "keep").read_text() == "mine"


def test_runtime_dir_removal_of_a_missing_dir_is_quiet(tmp_path: Path) -> None:
    remove_tree(tmp_path / "never-made")


@given(st.text(max_size=12) | st.text(alphabet="a_@%+=:,./-'\" $", max_size=8))
def test_shell_quote_is_shlex_quote(text: str) -> None:
    import shlex

    assert session.shell_quote(text) == shlex.quote(text)
