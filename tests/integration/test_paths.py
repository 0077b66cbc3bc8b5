"""Threat model 2 (filesystem): odd directory names cannot inject mount options;
the only host paths inside are the project and hutch's own files."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support import Engine, Hutch, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.engines]


@pytest.mark.parametrize(
    "name",
    ["my proj:a,b", "p,readonly,target=hostetc", 'p,readonly=false,bind-propagation=shared,"q:x'],
    ids=["space-colon-comma", "option-injection", "quote"],
)
def test_odd_project_path(engine: Engine, hutch: Hutch, name: str) -> None:
    project = hutch.root / name
    project.mkdir()
    hutch.own(project)
    result = hutch.run("-q", "exec", "--", "sh", "-c", "pwd; touch made-here", cwd=project)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{project}\n"
    made = (project / "made-here").stat()
    assert (made.st_uid, made.st_gid) == (engine.uid, engine.gid)

    proc = hutch.popen("-q", "exec", "--", "sleep", "120", cwd=project)
    try:
        found = wait_for(lambda: engine.project_containers(project), 60, "the session container")
        assert isinstance(found, list) and len(found) == 1
        mounts = found[0]["Mounts"]
        assert isinstance(mounts, list)
    finally:
        proc.terminate()

    session = found[0]["Config"]["Labels"]["io.hutch.session"]
    binds = {(m["Source"], m["Destination"], m["RW"]) for m in mounts}
    assert all(m["Type"] == "bind" for m in mounts), mounts
    assert len(binds) == len(mounts)
    assert [b for b in binds if b[0] == str(project)] == [(str(project), str(project), True)]
    # Besides the project: the agent home, the generated identity files and
    # (in allowlist mode) the egress socket directory, all hutch's own.
    data = f"{hutch.data / 'hutch'}/"
    others = {(dst, rw): src for src, dst, rw in binds if src != str(project)}
    assert len(others) == len(binds) - 1
    assert set(others) == {
        ("/home/hutch", True),
        ("/etc/passwd", False),
        ("/etc/group", False),
        ("/run/hutch", True),
    }
    for key in (("/home/hutch", True), ("/etc/passwd", False), ("/etc/group", False)):
        assert others[key].startswith(data), others[key]
    assert Path(others[("/run/hutch", True)]).name == f"hutch-{engine.uid}-{session}"
