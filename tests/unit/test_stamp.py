"""`hutch build` answers from its stamp only while nothing it depends on changed.

The engine is faked at its boundaries: a `docker` script on PATH (the CLI the
full path runs) and a Unix socket that answers like the Docker daemon's API.
Which path ran is visible from the stamp: only the full path writes one.
"""

from __future__ import annotations

import os
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hutch import stamp
from hutch.cli import main, split_argv

CONFIG = """\
engine = "docker"
agent = "tool"

[image]
ca_certificates = "none"

[agents.tool]
install = "npm"
package = "cowsay"
command = "cowsay"
version = "1.6.0"
"""


class FakeDaemon:
    """Answers GET /images/NAME/json with 200 for the names in `images`, else 404.

    close() stops the serving thread and waits for it: a thread left blocked
    in accept() could otherwise accept on the next test's socket once the
    descriptor number is reused, and answer with this daemon's images.
    """

    def __init__(self, path: Path) -> None:
        self.images: set[str] = set()
        self.requests: list[str] = []
        daemon = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline().decode().rstrip("\r\n")
                daemon.requests.append(line)
                name = line.split(" ")[1].removeprefix("/images/").removesuffix("/json")
                status = "200 OK" if name in daemon.images else "404 Not Found"
                self.wfile.write(f"HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\n{{}}".encode())

        self._server = socketserver.UnixStreamServer(str(path), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()  # returns once serve_forever has
        self._thread.join()
        self._server.server_close()


class Env:
    def __init__(self, root: Path, daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.daemon = daemon
        self.monkeypatch = monkeypatch
        self.config = root / "config" / "hutch" / "config.toml"
        self.project = root / "work" / "proj"
        self.cwd = self.project / "sub"
        self.docker_log = root / "docker.log"

    def build(self, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, bool]:
        """Run `hutch build` (or argv): (the tag printed, whether the full path ran)."""
        argv = argv or ("build",)
        path = stamp.stamp_path(split_argv(argv)[0], os.getcwd())
        before = _inode(path)
        assert main(list(argv)) == 0
        out = capsys.readouterr().out.strip().splitlines()
        after = _inode(path)
        assert after is not None, "a build on Docker leaves a stamp"
        return out[-1], before != after


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    daemon = FakeDaemon(tmp_path / "docker.sock")
    e = Env(tmp_path, daemon, monkeypatch)
    e.config.parent.mkdir(parents=True)
    e.config.write_text(CONFIG)
    e.cwd.mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    # `image inspect` finds every image; anything else is not expected here.
    fake.write_text(f'#!/bin/sh\necho "$*" >> {e.docker_log}\n'
                    'case "$1 $2" in "image inspect") echo sha256:feed; exit 0;; esac\nexit 1\n')  # fmt: skip
    fake.chmod(0o755)
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_STATE_HOME", "state"),
                     ("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "cache")):  # fmt: skip
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
    for var in ("HUTCH_ENGINE", "DOCKER_CONTEXT", "DOCKER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(e.cwd)
    try:
        yield e
    finally:
        daemon.close()


def test_second_build_is_answered_from_the_stamp(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    tag, full = env.build(capsys=capsys)
    assert full and tag.startswith("hutch-tool:")
    env.daemon.images.add(tag)
    env.docker_log.unlink(missing_ok=True)
    again, full = env.build(capsys=capsys)
    assert (again, full) == (tag, False)
    assert not env.docker_log.exists(), "the stamp path runs no engine command"
    assert env.daemon.requests[-1] == f"GET /images/{tag}/json HTTP/1.0"


def test_quiet_and_loud_builds_say_what_the_full_path_says(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    tag, _ = env.build(capsys=capsys)
    env.daemon.images.add(tag)
    assert main(["build"]) == 0
    assert main(["build"]) == 0  # from the stamp
    captured = capsys.readouterr()
    assert captured.out.split() == [tag, tag]
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and "is up to date" in lines[0]
    assert main(["-q", "build"]) == 0
    assert main(["-q", "build"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [tag, tag] and captured.err == ""


def _edit_user_config(env: Env) -> None:
    env.config.write_text(CONFIG.replace('ca_certificates = "none"',
                                         'ca_certificates = "none"\npackages = ["jq"]'))  # fmt: skip


def _config_in_ancestor(env: Env) -> None:
    (env.root / "work" / "hutch.toml").write_text("")


def _git_in_project(env: Env) -> None:
    (env.project / ".git").mkdir()


def _pins_written(env: Env) -> None:
    pins = env.root / "state" / "hutch" / "versions.json"
    pins.write_text("{}\n")


def _image_removed(env: Env) -> None:
    env.daemon.images.clear()


def _engine_from_environment(env: Env) -> None:
    env.monkeypatch.setenv("HUTCH_ENGINE", "docker")


@pytest.mark.parametrize(
    "change",
    [_edit_user_config, _config_in_ancestor, _git_in_project, _pins_written, _image_removed,
     _engine_from_environment],
)  # fmt: skip
def test_any_change_it_depends_on_takes_the_full_path(
    env: Env, capsys: pytest.CaptureFixture[str], change: object
) -> None:
    tag, _ = env.build(capsys=capsys)
    env.daemon.images.add(tag)
    assert env.build(capsys=capsys) == (tag, False)  # the control: unchanged, from the stamp
    assert callable(change)
    change(env)
    again, full = env.build(capsys=capsys)
    assert full, f"{change.__name__}: the stamp must not answer"
    if change is _edit_user_config:
        assert again != tag, "another recipe, another tag"


def test_agent_argument_keys_its_own_stamp(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    tag, _ = env.build(capsys=capsys)
    env.daemon.images.add(tag)
    assert env.build(capsys=capsys) == (tag, False)
    other, full = env.build("build", "tool", capsys=capsys)
    assert full and other == tag


def test_no_cache_never_takes_the_stamp(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    tag, _ = env.build(capsys=capsys)
    env.daemon.images.add(tag)
    env.docker_log.unlink(missing_ok=True)
    # The fake CLI fails builds: a --no-cache build must reach it and fail.
    assert main(["build", "--no-cache"]) == 5
    assert "build" in env.docker_log.read_text()


def test_corrupt_or_foreign_stamp_is_ignored(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    tag, _ = env.build(capsys=capsys)
    env.daemon.images.add(tag)
    path = stamp.stamp_path(["build"], os.getcwd())
    Path(path).write_text("hutch-stamp-1\0/nowhere\0evil:tag\0msg\0file")
    assert env.build(capsys=capsys) == (tag, True)


def test_dangling_git_link_that_comes_to_point_somewhere_takes_the_full_path(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    # The project-root search follows links: a dangling .git marks nothing,
    # and the same link marks a root once its target exists.
    target = env.root / "elsewhere-git"
    (env.cwd / ".git").symlink_to(target)
    tag, _ = env.build(capsys=capsys)
    env.daemon.images.add(tag)
    assert env.build(capsys=capsys) == (tag, False)
    target.mkdir()
    assert env.build(capsys=capsys)[1], "the link now marks a project root"
