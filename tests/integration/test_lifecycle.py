"""Threat model 7 (leftovers) and sessions: signals clean up, a killed hutch
is reaped by gc and by the next start, sessions in one project do not collide."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from .support import Hutch, project_containers, stop_process, wait_for

pytestmark = pytest.mark.integration


def start_sleeper(hutch: Hutch, project: Path, seconds: int = 300) -> subprocess.Popen[str]:
    return hutch.popen("-q", "exec", "--", "sleep", str(seconds), cwd=project)


def container_of(proc: subprocess.Popen[str], project: Path) -> dict[str, object]:
    """The running container started by this hutch process (its pid is a label)."""

    def find() -> dict[str, object] | None:
        assert proc.poll() is None, f"hutch exited early: {proc.communicate()}"
        for item in project_containers(project):
            if item["Config"]["Labels"].get("io.hutch.pid") == str(proc.pid):  # type: ignore[index]
                return item
        return None

    found = wait_for(find, 60, f"the container of hutch pid {proc.pid}")
    assert isinstance(found, dict)
    return found


def gone(project: Path) -> bool:
    return not project_containers(project, running_only=False)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_removes_container(hutch: Hutch, project: Path, signum: int) -> None:
    proc = start_sleeper(hutch, project)
    try:
        container_of(proc, project)
        started = time.monotonic()
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=15)
        assert time.monotonic() - started < 15
        assert "Traceback" not in stderr
        assert proc.returncode == 128 + signum, stderr
        wait_for(lambda: gone(project), 15, "the container to be removed")
    finally:
        stop_process(proc)


def _kill_hard(hutch: Hutch, project: Path) -> str:
    proc = start_sleeper(hutch, project)
    try:
        name = str(container_of(proc, project)["Name"]).lstrip("/")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=15)
    finally:
        stop_process(proc)
    time.sleep(1)
    # Nobody cleaned up: the sandbox outlives its hutch.
    assert [c["Name"] for c in project_containers(project)] == [f"/{name}"]
    return name


def test_killed_session_reaped_by_gc(hutch: Hutch, project: Path) -> None:
    name = _kill_hard(hutch, project)
    result = hutch.run("gc", cwd=project)
    assert result.returncode == 0, result.stderr
    assert name in result.stderr
    wait_for(lambda: gone(project), 15, "gc to remove the container")


def test_killed_session_reaped_by_next_start(hutch: Hutch, project: Path) -> None:
    _kill_hard(hutch, project)
    result = hutch.run("-q", "exec", "--", "true", cwd=project)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: gone(project), 15, "the next start to remove the container")


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
            container_of(p, project)["Config"]["Labels"]["io.hutch.session"]  # type: ignore[index]
            for p in procs
        }
        assert len(sessions) == 2
        assert _ps_sessions(hutch, project) == sessions
        for proc in procs:
            _, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 0, stderr
    finally:
        for proc in procs:
            stop_process(proc)
    wait_for(lambda: gone(project), 15, "both containers to be removed")


def test_stop_one_session(hutch: Hutch, project: Path) -> None:
    first, second = start_sleeper(hutch, project), start_sleeper(hutch, project)
    try:
        labels = container_of(first, project)["Config"]["Labels"]  # type: ignore[index]
        victim = labels["io.hutch.session"]
        survivor = container_of(second, project)["Config"]["Labels"]["io.hutch.session"]  # type: ignore[index]
        assert _ps_sessions(hutch, project) == {victim, survivor}

        result = hutch.run("stop", victim, cwd=project)
        assert result.returncode == 0, result.stderr
        _, stderr = first.communicate(timeout=30)
        assert first.returncode != 0, stderr
        assert "Traceback" not in stderr
        # The other session is untouched.
        assert second.poll() is None
        assert _ps_sessions(hutch, project) == {survivor}
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    pass
            stop_process(proc)
    wait_for(lambda: gone(project), 15, "both containers to be removed")
