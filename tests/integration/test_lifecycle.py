"""Threat model 7 (leftovers) and sessions: signals clean up, a killed hutch
is reaped by gc and by the next start, sessions in one project do not collide."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .support import Hutch, Running, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.engines]


def start_sleeper(hutch: Hutch, project: Path, seconds: int = 300) -> Running:
    script = f"touch .started-$$; exec sleep {seconds}"
    return hutch.popen("-q", "exec", "--", "sh", "-c", script, cwd=project)


def container_of(hutch: Hutch, proc: Running, project: Path) -> dict[str, object]:
    """The running container started by this hutch process (its pid is a label)."""

    def find() -> dict[str, object] | None:
        assert proc.poll() is None, f"hutch exited early: {proc.stderr}"
        for item in hutch.engine.project_containers(project):
            if item["Config"]["Labels"].get("io.hutch.pid") == str(proc.pid):  # type: ignore[index]
                return item
        return None

    found = wait_for(find, 60, f"the container of hutch pid {proc.pid}")
    assert isinstance(found, dict)
    # Past the start gate: the command itself runs (a sandbox still held at
    # the gate ends with its hutch).
    wait_for(lambda: any(project.glob(".started-*")), 60, "the sleeper to start")
    return found


def gone(hutch: Hutch, project: Path) -> bool:
    return not hutch.engine.project_containers(project, running_only=False)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_removes_container(hutch: Hutch, project: Path, signum: int) -> None:
    proc = start_sleeper(hutch, project)
    try:
        session = container_of(hutch, proc, project)["Config"]["Labels"]["io.hutch.session"]  # type: ignore[index]
        started = time.monotonic()
        proc.signal_group(signum)
        status = proc.wait(timeout=15)
        assert time.monotonic() - started < 15
        assert "Traceback" not in proc.stderr
        assert status == 128 + signum, proc.stderr
        wait_for(lambda: gone(hutch, project), 15, "the container to be removed")
        assert host_leftovers(hutch, session) == []
    finally:
        proc.stop()


def _kill_hard(hutch: Hutch, project: Path) -> tuple[str, str]:
    """SIGKILL a hutch mid-session; returns its container name and session id."""
    proc = start_sleeper(hutch, project)
    try:
        item = container_of(hutch, proc, project)
        name = str(item["Name"]).lstrip("/")
        session = item["Config"]["Labels"]["io.hutch.session"]  # type: ignore[index]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=15)
    finally:
        proc.stop()
    time.sleep(1)
    # Nobody cleaned up: the sandbox outlives its hutch.
    assert [str(c["Name"]).lstrip("/") for c in hutch.engine.project_containers(project)] == [name]
    return name, session


def host_leftovers(hutch: Hutch, session: str) -> list[Path]:
    """What hutch keeps on the host only while a session runs (its runtime dir:
    egress socket and env file; in the state directory, as the test environment
    sets no XDG_RUNTIME_DIR, except for rootless Podman, which needs one)."""
    return sorted(hutch.runtime_base.glob(f"hutch-{hutch.engine.uid}-{session}"))


@pytest.fixture
def kill_hard(hutch: Hutch, project: Path) -> Iterator[Callable[[], tuple[str, str]]]:
    """SIGKILLs a session's hutch; removes the host leftovers afterwards, so
    that a failing test does not leave them behind."""
    sessions: list[str] = []

    def kill() -> tuple[str, str]:
        name, session = _kill_hard(hutch, project)
        sessions.append(session)
        return name, session

    yield kill
    for session in sessions:
        for path in host_leftovers(hutch, session):
            shutil.rmtree(path, ignore_errors=True)


def test_killed_session_reaped_by_gc(
    hutch: Hutch, project: Path, kill_hard: Callable[[], tuple[str, str]]
) -> None:
    name, _ = kill_hard()
    result = hutch.run("gc", cwd=project)
    assert result.returncode == 0, result.stderr
    assert name in result.stderr
    wait_for(lambda: gone(hutch, project), 15, "gc to remove the container")


def test_killed_session_host_leftovers_reaped_by_gc(
    hutch: Hutch, project: Path, kill_hard: Callable[[], tuple[str, str]]
) -> None:
    _, session = kill_hard()
    result = hutch.run("gc", cwd=project)
    assert result.returncode == 0, result.stderr
    assert host_leftovers(hutch, session) == []


def test_killed_session_reaped_by_next_start(
    hutch: Hutch, project: Path, kill_hard: Callable[[], tuple[str, str]]
) -> None:
    kill_hard()
    result = hutch.run("-q", "exec", "--", "true", cwd=project)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: gone(hutch, project), 15, "the next start to remove the container")


def _ps_sessions(hutch: Hutch, project: Path) -> set[str]:
    result = hutch.run("ps", cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SESSION", "AGENT", "STATE", "PROJECT", "CONTAINER"]
    return {line.split()[0] for line in lines[1:] if f" {project} " in line}


def test_concurrent_sessions(hutch: Hutch, project: Path) -> None:
    procs = [start_sleeper(hutch, project, seconds=6) for _ in range(2)]
    try:
        sessions = {
            container_of(hutch, p, project)["Config"]["Labels"]["io.hutch.session"]  # type: ignore[index]
            for p in procs
        }
        assert len(sessions) == 2
        assert _ps_sessions(hutch, project) == sessions
        for proc in procs:
            assert proc.wait(timeout=60) == 0, proc.stderr
    finally:
        for proc in procs:
            proc.stop()
    wait_for(lambda: gone(hutch, project), 15, "both containers to be removed")


def test_stop_one_session(hutch: Hutch, project: Path) -> None:
    first, second = start_sleeper(hutch, project), start_sleeper(hutch, project)
    try:
        labels = container_of(hutch, first, project)["Config"]["Labels"]  # type: ignore[index]
        victim = labels["io.hutch.session"]
        survivor = container_of(hutch, second, project)["Config"]["Labels"]["io.hutch.session"]  # type: ignore[index]
        assert _ps_sessions(hutch, project) == {victim, survivor}

        result = hutch.run("stop", victim, cwd=project)
        assert result.returncode == 0, result.stderr
        assert first.wait(timeout=30) != 0, first.stderr
        assert "Traceback" not in first.stderr
        # The other session is untouched.
        assert second.poll() is None
        assert _ps_sessions(hutch, project) == {survivor}
    finally:
        for proc in (first, second):
            proc.terminate()
    wait_for(lambda: gone(hutch, project), 15, "both containers to be removed")
