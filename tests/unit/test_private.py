"""hutch.private: hutch's own files are the user's alone; runtime dirs live
where only the user can create names."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from hutch import private
from hutch.errors import SetupFailed
from hutch.paths import Dirs, replace_text, touch_in, write_private
from hutch.private import SUN_PATH_MAX, bind_unix


def dirs(tmp_path: Path) -> Dirs:
    return Dirs(*(str(tmp_path / sub) for sub in ("c", "d", "s")))


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_new_state_and_data_dirs_are_private(tmp_path: Path) -> None:
    d = dirs(tmp_path)
    private.secure_dirs(d)
    assert mode(d.state) == mode(d.data) == 0o700


def test_an_older_install_gets_its_modes_fixed_once(tmp_path: Path) -> None:
    d = dirs(tmp_path)
    state, data = Path(d.state), Path(d.data)
    old = os.umask(0o022)
    try:
        for path in (state / "sessions" / "a.json", state / "audit" / "b.json", state / "versions.json",
                     data / "identity" / "passwd-1", data / "homes" / "claude" / ".bashrc",
                     data / "caches" / "k" / "npm" / "x"):  # fmt: skip
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")
        outside = tmp_path / "outside"
        outside.write_text("not hutch's")
        (state / "link").symlink_to(outside)
    finally:
        os.umask(old)
    assert mode(state / "audit" / "b.json") == 0o644 and mode(state) == 0o755  # the control
    private.secure_dirs(d)
    for path in (state, data, state / "sessions", state / "audit", data / "identity",
                 data / "homes" / "claude", data / "caches" / "k"):  # fmt: skip
        assert mode(path) == 0o700, path
    for path in (state / "sessions" / "a.json", state / "audit" / "b.json", state / "versions.json",
                 data / "identity" / "passwd-1"):  # fmt: skip
        assert mode(path) == 0o600, path
    # What is in an agent's home or a cache is the agent's; a link is not followed.
    assert mode(data / "homes" / "claude" / ".bashrc") == 0o644
    assert mode(data / "caches" / "k" / "npm") == 0o755
    assert mode(outside) == 0o644
    # Once: a file made readable later is the user's own doing.
    (state / "versions.json").chmod(0o644)
    private.secure_dirs(d)
    assert mode(state / "versions.json") == 0o644
    state.chmod(0o755)
    private.secure_dirs(d)
    assert mode(state) == 0o700  # the directories, every time


def test_hutchs_own_writes_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        replace_text(str(tmp_path / "a" / "pins.json"), "{}")
        write_private(str(tmp_path / "b" / "record.json"), "{}")
        touch_in(str(tmp_path / "c" / "marker"))
    finally:
        os.umask(old)
    for name in ("a/pins.json", "b/record.json", "c/marker"):
        assert mode(tmp_path / name) == 0o600, name
        assert mode((tmp_path / name).parent) == 0o700, name


def test_runtime_dirs_go_to_a_private_xdg_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = dirs(tmp_path)
    xdg = tmp_path / "xdg-run"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    path = private.make_runtime_dir(d, "abcd")
    assert path == str(xdg / f"hutch-{os.getuid()}-abcd") and mode(path) == 0o700
    assert private.is_runtime_dir(d, path)


@pytest.mark.parametrize("setting", ["", "relative/dir", "shared", "missing"])
def test_else_under_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    d = dirs(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # /tmp's mode: a name there could be anyone's
    values = {"shared": str(shared), "missing": str(tmp_path / "nope")}
    monkeypatch.setenv("XDG_RUNTIME_DIR", values.get(setting, setting))
    path = private.make_runtime_dir(d, "abcd")
    assert path == os.path.join(d.state, "run", f"hutch-{os.getuid()}-abcd")
    assert mode(path) == mode(os.path.dirname(path)) == 0o700
    assert os.listdir(shared) == []


def test_a_state_run_dir_that_is_not_private_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    d = dirs(tmp_path)
    run = Path(d.state) / "run"
    run.mkdir(parents=True)
    run.chmod(0o777)
    with pytest.raises(SetupFailed) as info:
        private.make_runtime_dir(d, "abcd")
    assert info.value.exit_code == 125 and str(run) in info.value.message


def test_only_runtime_dirs_where_hutch_makes_them_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    d = dirs(tmp_path)
    prefix = f"hutch-{os.getuid()}-"
    assert not private.is_runtime_dir(d, f"/tmp/{prefix}abcd")  # where an older hutch made them
    run = Path(d.state) / "run"
    run.mkdir(parents=True, mode=0o700)
    for name in ("live", "dead"):
        (run / (prefix + name)).mkdir()
    (run / (prefix + "link")).symlink_to(tmp_path)  # named like one, but a link
    (run / "hutch-99999-other").mkdir()
    assert private.stale_runtime_dirs(d, {"live"}) == [str(run / (prefix + "dead"))]


def test_a_socket_path_longer_than_an_address_holds_binds(tmp_path: Path) -> None:
    directory = tmp_path / ("d" * 120)
    directory.mkdir()
    path = directory / "egress.sock"
    assert len(os.fsencode(path)) > SUN_PATH_MAX
    with socket.socket(socket.AF_UNIX) as plain, pytest.raises(OSError):
        plain.bind(str(path))  # the control: too long for the address
    with socket.socket(socket.AF_UNIX) as sock:
        bind_unix(sock, str(path))
        sock.listen()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
