"""What only Podman has: `hutch doctor`'s Podman checks (the engine chosen and
why, rootful or rootless, the storage driver) and the resource-limit gap of
rootless Podman on cgroup v1.

Podman's set-up (rootful as root; rootless as hutch-pod with subordinate IDs,
keep-id, overlay storage) is in conftest.py. The guarantees themselves are the
same tests on every engine: see the modules marked `engines`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .support import Engine, Hutch

pytestmark = [pytest.mark.integration, pytest.mark.engines("podman", "podman-rootless")]


def test_resource_limits_or_their_absence_said(engine: Engine, hutch: Hutch, project: Path) -> None:
    probe = ("cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max "
             "2>/dev/null || echo none; bash -c 'ulimit -u'")  # fmt: skip
    result = hutch.run("exec", "--pids", "321", "--", "sh", "-c", probe, cwd=project)
    assert result.returncode == 0, result.stderr
    pids_max, nproc = result.stdout.split()
    assert nproc == "321"
    cgroup_v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    if not engine.rootless or cgroup_v2:
        assert pids_max == "321"
        assert "limits:" not in result.stderr
        return
    # Rootless on cgroup v1: said in the summary every time, warned about once.
    assert "| limits: 321 processes only (rootless Podman on cgroup v1)" in result.stderr
    assert "warning: rootless Podman cannot set memory or CPU limits" in result.stderr
    again = hutch.run("exec", "--pids", "321", "--", "true", cwd=project)
    assert "limits: 321 processes only" in again.stderr
    assert "warning:" not in again.stderr


def test_doctor_names_the_engine_and_why(engine: Engine, hutch: Hutch, project: Path) -> None:
    result = hutch.run("doctor", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("[FAIL]")], result.stdout
    assert "[ok] engine: podman (podman)" in lines
    assert "       why: HUTCH_ENGINE=podman" in lines
    flavour = "rootless" if engine.rootless else "rootful"
    assert any(line.startswith("[ok] podman ") and f", {flavour} " in line for line in lines), lines
    assert "[ok] storage driver overlay" in lines
    assert "[ok] base image debian:bookworm-slim present" in lines


def test_doctor_detects_vfs_and_says_how_to_fix(engine: Engine, hutch: Hutch, project: Path) -> None:
    # A storage of its own, so that the flavour's real one stays as it is.
    store = hutch.root / "vfs-store"
    conf_text = (f'[storage]\ndriver = "vfs"\ngraphroot = "{store}/graph"\n'
                 f'runroot = "{store}/run"\n')  # fmt: skip
    env = hutch.env()
    if engine.rootless:
        conf = hutch.config / "containers" / "storage.conf"
    else:
        conf = hutch.root / "storage.conf"
        env["CONTAINERS_STORAGE_CONF"] = str(conf)
    conf.write_text(conf_text)
    result = hutch.run("doctor", cwd=project, env=env)
    lines = result.stdout.splitlines()
    at = lines.index("[warn] storage driver vfs: every launch copies the whole image (seconds, "
                     "not a fraction of one)")  # fmt: skip
    fix = lines[at + 1]
    assert f"write {conf} with the lines [storage] and driver = \"overlay\"" in fix, fix
    assert "podman system reset` (it deletes this user's Podman images" in fix, fix
    # The file alone does not switch it: the storage remembers vfs until a reset.
    conf.write_text(conf_text.replace('"vfs"', '"overlay"'))
    again = hutch.run("doctor", cwd=project, env=env).stdout.splitlines()
    at = again.index(lines[at])
    assert again[at + 1].startswith(f"       fix: {conf} already asks for overlay"), again
    assert "podman system reset" in again[at + 1]
