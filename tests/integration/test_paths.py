"""Threat model 2 (filesystem): odd directory names cannot inject mount options;
the only host paths inside are the project and hutch's own files."""

from __future__ import annotations

import signal

import pytest

from .support import Hutch, project_containers, stop_process, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "name",
    ["my proj:a,b", "p,readonly,target=hostetc"],
    ids=["space-colon-comma", "option-injection"],
)
def test_odd_project_path(hutch: Hutch, name: str) -> None:
    project = hutch.root / name
    project.mkdir()
    result = hutch.run("-q", "exec", "--", "pwd", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{project}\n"

    proc = hutch.popen("-q", "exec", "--", "sleep", "120", cwd=project)
    try:
        found = wait_for(lambda: project_containers(project), 60, "the session container")
        assert isinstance(found, list) and len(found) == 1
        mounts = found[0]["Mounts"]
        assert isinstance(mounts, list)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            stop_process(proc)

    binds = {(m["Source"], m["Destination"], m["RW"]) for m in mounts}
    assert all(m["Type"] == "bind" for m in mounts), mounts
    assert len(binds) == len(mounts)
    data = hutch.data / "hutch"
    assert [b for b in binds if b[0] == str(project)] == [(str(project), str(project), True)]
    # Besides the project: the agent home and the generated identity files, all
    # hutch's own, and nothing else from the host.
    others = {b for b in binds if b[0] != str(project)}
    assert {(dst, rw) for _, dst, rw in others} == {
        ("/home/hutch", True),
        ("/etc/passwd", False),
        ("/etc/group", False),
    }
    for source, _, _ in others:
        assert source.startswith(f"{data}/"), source
    assert not any(dst in ("/hostetc", "/etc") and src == "/etc" for src, dst, _ in binds)
